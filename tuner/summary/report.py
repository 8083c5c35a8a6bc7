"""What a finished (or stored) sweep says on a terminal: the best trial as a list of
parameter = value, a table of the top trials that fits the console's width (columns
that do not fit are left out, and the table says so), trial counts by reason, and
where the results are (study, parent run, model URI, MLflow UI).

Pure presentation: the inputs are an Optuna study and plain values; the output is
lines of text and a rich ``Table``. The CLI prints them (``tuner run``, ``tuner show``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from tuner.search.lifecycle import lost_numbers
from tuner.search.study import ATTR_FAIL_REASON

# How many failed trials are listed with their reason (the rest are counted).
FAILED_LISTED = 5
# The table's parameter columns, most telling first (the ones whose values differ among
# the listed trials come before the constant ones); others follow by name.
PRIORITY = ("learning_rate", "optimizer", "width", "depth", "batch_size", "activation",
            "dropout", "l2", "weight_decay", "l1", "momentum", "norm", "schedule", "init",
            "epochs")


@dataclasses.dataclass(frozen=True)
class Pointers:
    """Where a sweep's results are: each one printed on a line of its own."""

    study: str
    storage: str | None = None          # redacted URL of the Optuna storage
    parent_run_id: str | None = None
    model_uri: str | None = None        # runs:/<id>/model or models:/<name>/<version>
    experiment_id: str | None = None
    tracking_uri: str | None = None     # redacted
    ui_command: str | None = None       # shell command that opens the MLflow UI
    ui_link: str | None = None          # the runs table in the training view

    def lines(self) -> list[str]:
        out = [f"study:      {self.study}" + (f"  ({self.storage})" if self.storage else "")]
        if self.parent_run_id:
            out.append(f"parent run: {self.parent_run_id}")
        if self.model_uri:
            out.append(f"model:      {self.model_uri}")
        if self.ui_command:
            out.append(f"MLflow UI:  {self.ui_command}")
        if self.ui_link:
            out.append(f"then open:  {self.ui_link}")
        return out


def fmt_value(v) -> str:
    """A hyperparameter's value: 4 significant digits for floats, whole otherwise."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def fmt_metric(v: float | None) -> str:
    """A metric value: 4 decimals in the usual range, 4 significant digits outside it."""
    if v is None:
        return "-"
    if v != 0 and not 1e-3 <= abs(v) < 1e5:
        return f"{v:.4g}"
    return f"{v:.4f}"


def completed(study: optuna.Study) -> list[FrozenTrial]:
    """COMPLETE trials, best first."""
    done = list(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    done.sort(key=lambda t: t.value, reverse=study.direction.name == "MAXIMIZE")
    return done


def best_lines(study: optuna.Study, metric: str, fixed: dict | None = None) -> list[str]:
    """``best trial N: metric = v`` then one ``name = value`` line per hyperparameter
    (searched first, then the fixed ones, marked)."""
    done = completed(study)
    if not done:
        return ["no trial completed, so there is no best trial"]
    best = done[0]
    lines = [f"best trial {best.number}: {metric} = {fmt_metric(best.value)}"]
    names = list(best.params) + [k for k in (fixed or {}) if k not in best.params]
    width = max((len(n) for n in names), default=0)
    for name in sorted(best.params):
        lines.append(f"  {name:<{width}} = {fmt_value(best.params[name])}")
    for name in sorted(k for k in (fixed or {}) if k not in best.params):
        lines.append(f"  {name:<{width}} = {fmt_value(fixed[name])}  (fixed)")
    return lines


def top_table(study: optuna.Study, metric: str, width: int | None, top: int = 10,
              console: Console | None = None) -> tuple[Table, list[str]]:
    """The ``top`` best trials as a table no wider than ``width`` (None: every column),
    and the names of the parameter columns left out to fit.

    The trial number and the metric are always kept; then the parameters whose values
    differ among the listed trials (most telling first), then the constant ones, while
    they fit. Cells are never cut."""
    done = completed(study)[:top]
    names = sorted({k for t in done for k in t.params})
    names.sort(key=lambda n: (PRIORITY.index(n) if n in PRIORITY else len(PRIORITY), n))
    varying = [n for n in names if len({repr(t.params.get(n)) for t in done}) > 1]
    order = varying + [n for n in names if n not in varying]
    console = console or Console(width=10_000)
    kept: list[str] = []
    left_out: list[str] = []
    for name in order:
        if width is None or _width(_table(study, metric, done, kept + [name]),
                                   console) <= width:
            kept.append(name)
        else:
            left_out.append(name)
    kept = [n for n in names if n in kept]  # shown in priority order
    return _table(study, metric, done, kept), left_out


def _table(study: optuna.Study, metric: str, done: Sequence[FrozenTrial],
           names: Sequence[str]) -> Table:
    table = Table(title=f"best trials of {study.study_name} ({metric})",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("trial", justify="right", no_wrap=True)
    table.add_column(metric, justify="right", no_wrap=True)
    for name in names:
        table.add_column(name, no_wrap=True)
    for t in done:
        table.add_row(str(t.number), fmt_metric(t.value),
                      *[fmt_value(t.params.get(n)) for n in names])
    return table


def _width(table: Table, console: Console) -> int:
    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def left_out_lines(left_out: Sequence[str], study_name: str) -> list[str]:
    """What the table left out and how to see it (the command on a line of its own)."""
    if not left_out:
        return []
    cols = "column" if len(left_out) == 1 else "columns"
    return [f"{len(left_out)} {cols} left out to fit: {', '.join(left_out)}",
            f"  every column: tuner show {study_name} --all  (or a wider terminal, or the "
            "MLflow UI)"]


# --------------------------------------------------------------------------- counts
def _reason_kind(reason: str) -> str:
    """The kind of a fail reason: ``diverged``, ``error``, ... (text before ':')."""
    head = reason.split(":", 1)[0].strip()
    return head if head and len(head) <= 40 else "other"


def _pruned_at(t: FrozenTrial) -> str:
    steps = t.intermediate_values
    return f"at epoch {max(steps) + 1}" if steps else "before its first epoch"


def count_lines(study: optuna.Study) -> list[str]:
    """``trials: 3 complete, 1 fail, 2 pruned`` and, where there are any, the failed and
    pruned ones by reason, and the first failed trials with their reasons."""
    trials = study.get_trials(deepcopy=False)
    lost = lost_numbers(trials)
    states = Counter(t.state.name for t in trials if t.number not in lost)
    parts = [f"{v} {k.lower()}" for k, v in sorted(states.items())]
    if lost:
        parts.append(f"{len(lost)} lost to a stop and retried (not counted)")
    lines = ["trials: " + ", ".join(parts)]
    failed = [t for t in trials
              if t.state == TrialState.FAIL and t.number not in lost]
    if failed:
        kinds = Counter(_reason_kind(t.user_attrs.get(ATTR_FAIL_REASON, "")) or "no reason"
                        for t in failed)
        lines.append("failed: " + ", ".join(f"{n} {k}" for k, n in kinds.most_common()))
        for t in failed[:FAILED_LISTED]:
            reason = t.user_attrs.get(ATTR_FAIL_REASON) or "no reason recorded"
            lines.append(f"  trial {t.number}: {reason}")
        if len(failed) > FAILED_LISTED:
            lines.append(f"  and {len(failed) - FAILED_LISTED} more (the fail_reason tag "
                         "of each trial's MLflow run)")
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    if pruned:
        at = Counter(_pruned_at(t) for t in pruned)
        lines.append("pruned: " + ", ".join(f"{n} {k}" for k, n in at.most_common()))
    return lines
