"""The sweep's figures, drawn headless (Agg) and saved as PNG.

- ``optimization_history.png`` and ``param_importances.png``: optuna's matplotlib plots,
  skipped (``None`` plus a reason) when they would be empty or meaningless.
- ``best_trial_curves.png``: one trial's learning curves, each fold a thin line and the
  fold mean a thick one.

Our own figures use :class:`matplotlib.figure.Figure` directly (no pyplot, no backend
state). Optuna's plots go through pyplot, so the Agg backend is selected here when pyplot
is not yet imported; an already imported pyplot (a notebook, say) keeps its backend, and
each figure is closed after saving so none is shown or leaked.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np

if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

MIN_COMPLETE_HISTORY = 2
MIN_COMPLETE_IMPORTANCES = 3


def _complete(study: "optuna.Study") -> list["optuna.trial.FrozenTrial"]:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def varying_params(study: "optuna.Study") -> list[str]:
    """Params present in every completed trial and taking more than one value there:
    the ones optuna's importance evaluators can rank."""
    trials = _complete(study)
    if not trials:
        return []
    common = set.intersection(*(set(t.params) for t in trials))
    out = []
    for name in sorted(common):
        values = {repr(t.params[name]) for t in trials}
        if len(values) > 1:
            out.append(name)
    return out


def _save_pyplot(ax: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = ax.figure if hasattr(ax, "figure") else np.ravel(ax)[0].figure
    try:
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)


def save_optimization_history(study: "optuna.Study", path: Path) -> str | None:
    """Draw and save optuna's optimization history; return None, or why it was skipped."""
    n = len(_complete(study))
    if n < MIN_COMPLETE_HISTORY:
        return f"{n} completed trial(s), need {MIN_COMPLETE_HISTORY}"
    from optuna.visualization.matplotlib import plot_optimization_history

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning, legend chatter
        _save_pyplot(plot_optimization_history(study), path)
    return None


def save_param_importances(study: "optuna.Study", path: Path) -> str | None:
    """Draw and save optuna's parameter importances; return None, or why it was skipped."""
    n = len(_complete(study))
    if n < MIN_COMPLETE_IMPORTANCES:
        return f"{n} completed trial(s), need {MIN_COMPLETE_IMPORTANCES}"
    names = varying_params(study)
    if len(names) < 2:
        return f"importances need 2 varying params, found {names or 'none'}"
    from optuna.visualization.matplotlib import plot_param_importances

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _save_pyplot(plot_param_importances(study), path)
    return None


def _mean_curve(a: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(a, dtype=float).mean(axis=0)


def learning_curves_figure(curves: dict[str, np.ndarray], metric: str, title: str = "") -> Figure:
    """Train and val loss on the left, ``val_<metric>`` on the right; per fold a thin line,
    the fold mean a thick one. Curves are ``[F, E]`` (a 1-D curve is one fold); non-finite
    points are gaps, so a diverged fold simply stops."""
    panels = [
        ("loss", [("train_loss", "C0"), ("val_loss", "C1")]),
        (metric, [(f"val_{metric}", "C2")]),
    ]
    panels = [(lab, [(k, c) for k, c in keys if k in curves]) for lab, keys in panels]
    panels = [p for p in panels if p[1]]
    fig = Figure(figsize=(5.5 * max(len(panels), 1), 4.0))
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for ax, (ylabel, keys) in zip(axes, panels):
        for key, color in keys:
            arr = np.atleast_2d(np.asarray(curves[key], dtype=float))
            arr = np.where(np.isfinite(arr), arr, np.nan)
            epochs = np.arange(arr.shape[1])
            for k, fold in enumerate(arr):
                ax.plot(epochs, fold, color=color, lw=0.8, alpha=0.45,
                        label=f"{key} (folds)" if k == 0 else None)
            ax.plot(epochs, _mean_curve(arr), color=color, lw=2.4, label=f"{key} (mean)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_learning_curves(curves: dict[str, np.ndarray], metric: str, path: Path,
                         title: str = "") -> str | None:
    """Save :func:`learning_curves_figure`; return None, or why it was skipped."""
    known = {"train_loss", "val_loss", f"val_{metric}"}
    if not known & set(curves):
        return f"the trial has no curves among {sorted(known)}"
    learning_curves_figure(curves, metric, title).savefig(path, format="png", dpi=100)
    return None
