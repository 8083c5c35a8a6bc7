"""The sweep's figures, drawn headless (Agg) and saved as PNG.

- ``optimization_history.png`` and ``param_importances.png`` (fANOVA importances from
  Optuna), skipped (``None`` plus a reason) when they would be empty or meaningless.
- ``best_trial_curves.png``: one trial's learning curves, each fold a thin line and the
  fold mean a thick one.

Every figure is a bare :class:`matplotlib.figure.Figure` (no pyplot, no backend state,
nothing shown or leaked). matplotlib is imported on first use (about a second): the
engine preloads it in the background while the first batch trains.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

# Imported by the engine's background preload while the first batch trains.
PRELOAD_MODULES = ("matplotlib.figure", "matplotlib.backends.backend_agg", "optuna.importance",
                   "sklearn.ensemble")

log = logging.getLogger(__name__)

MIN_COMPLETE_HISTORY = 2
MIN_COMPLETE_IMPORTANCES = 3


def _figure(**kwargs: Any) -> "Figure":
    from matplotlib.figure import Figure

    return Figure(**kwargs)


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


def save_optimization_history(study: "optuna.Study", path: Path) -> str | None:
    """Draw and save the optimization history (each completed trial's value and the best
    so far); return None, or why it was skipped. Drawn on a bare Figure: Optuna's version
    goes through pyplot, whose first use costs about a second."""
    done = _complete(study)
    if len(done) < MIN_COMPLETE_HISTORY:
        return f"{len(done)} completed trial(s), need {MIN_COMPLETE_HISTORY}"
    numbers = [t.number for t in done]
    values = np.array([t.value for t in done], dtype=float)
    maximize = study.direction.name == "MAXIMIZE"
    best = np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values)
    fig = _figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    ax.scatter(numbers, values, s=14, color="#4c72b0", label="objective value")
    ax.step(numbers, best, where="post", color="#c44e52", label="best value")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective value")
    ax.set_title("Optimization history")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return None


def save_param_importances(study: "optuna.Study", path: Path) -> str | None:
    """Draw and save optuna's parameter importances; return None, or why it was skipped."""
    n = len(_complete(study))
    if n < MIN_COMPLETE_IMPORTANCES:
        return f"{n} completed trial(s), need {MIN_COMPLETE_IMPORTANCES}"
    names = varying_params(study)
    if len(names) < 2:
        return f"importances need 2 varying params, found {names or 'none'}"
    import optuna

    # Optuna's own importance plot takes ~1 s to draw; the importances themselves (fANOVA,
    # Optuna's default evaluator) take milliseconds, so draw the bars here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        importances = optuna.importance.get_param_importances(study, params=names)
    labels = list(importances)[::-1]
    fig = _figure(figsize=(6.4, 0.45 * len(labels) + 1.4))
    ax = fig.subplots()
    ax.barh(labels, [importances[k] for k in labels], color="#4c72b0")
    ax.set_xlabel("importance for the objective (fANOVA)")
    ax.set_title("Hyperparameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return None


def _mean_curve(a: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(a, dtype=float).mean(axis=0)


def learning_curves_figure(curves: dict[str, np.ndarray], metric: str, title: str = ""
                           ) -> "Figure":
    """Train and val loss on the left, ``val_<metric>`` on the right; per fold a thin line,
    the fold mean a thick one. Curves are ``[F, E]`` (a 1-D curve is one fold); non-finite
    points are gaps, so a diverged fold simply stops."""
    panels = [
        ("loss", [("train_loss", "C0"), ("val_loss", "C1")]),
        (metric, [(f"val_{metric}", "C2")]),
    ]
    panels = [(lab, [(k, c) for k, c in keys if k in curves]) for lab, keys in panels]
    panels = [p for p in panels if p[1]]
    fig = _figure(figsize=(5.5 * max(len(panels), 1), 4.0))
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


def save_size_curve(curve, path: Path) -> str | None:
    """The learning curve against training-set size: training and validation score
    (fold mean, with the spread of the folds) by training rows. None, or why skipped."""
    if len(curve.fractions) < 2:
        return "fewer than two training-set sizes"
    fig = _figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for scores, label in ((curve.train, "training"), (curve.val, "validation")):
        mean, std = scores.mean(axis=1), scores.std(axis=1)
        ax.plot(curve.rows, mean, marker="o", label=label)
        ax.fill_between(curve.rows, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("training rows per fold")
    ax.set_ylabel(curve.metric)
    ax.set_title("learning curve: score against training-set size")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return None
