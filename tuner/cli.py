"""The ``tuner`` command line: run, validate, show, worker, ui.

Exit codes: 0 done, 2 bad input, 1 internal error (or every trial failed), 130/143/129
stopped by SIGINT/SIGTERM/SIGHUP (state kept, nothing RUNNING, resumable).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tuner import process, stores
from tuner.errors import InputError
from tuner.runtime import quiet_libraries

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hyperparameter sweeps for JAX MLPs, tracked in MLflow.")
console = Console(stderr=True)
out = Console()

EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 1, 130


def main() -> None:
    """Run the command line in this process: map errors to the documented exit codes
    (raises SystemExit)."""
    try:
        app()
    except KeyboardInterrupt as exc:
        console.print("interrupted")
        sys.exit(getattr(exc, "exit_code", EXIT_INTERRUPTED))


def console_main() -> None:
    """The ``tuner`` command, a process of its own: ``main`` without the garbage
    collector's passes over the libraries as they import, and without the interpreter's
    teardown at exit (tuner/process.py): about 2 s of a warm W1 sweep."""
    process.pause_gc()
    try:
        main()
    except SystemExit as exc:
        process.exit_now(process.exit_code(exc))
    process.exit_now(0)


def _fail(message: str, code: int) -> typer.Exit:
    """Print the error (a table's several problems: one line each) and exit ``code``."""
    # escape: a message repeats user input, and "[/x]" in it would be a markup error.
    for line in str(message).splitlines() or [""]:
        console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _guard(fn):
    """Run a command body; bad input -> one line + exit 2, a bug -> one line + exit 1."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except InputError as exc:
            raise _fail(str(exc), EXIT_BAD_INPUT) from None
        except KeyboardInterrupt as exc:
            console.print("interrupted: finished trials are kept; run the same command "
                          "to resume")
            raise typer.Exit(getattr(exc, "exit_code", EXIT_INTERRUPTED)) from None
        except Exception as exc:  # noqa: BLE001
            if os.environ.get("TUNER_DEBUG"):
                raise
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise _fail(f"internal error: {type(exc).__name__}: {first} "
                        "(set TUNER_DEBUG=1 for the traceback)", EXIT_INTERNAL) from None

    return wrapper


# --------------------------------------------------------------------------- helpers
def _load_inputs(space: Path, method, trials, batch, seed):
    from tuner.inputs.resolve import resolve_inputs

    return resolve_inputs(space, method=method, trials=trials, batch=batch, seed=seed)


def _progress_bar():
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("best {task.fields[best]}"), TextColumn("{task.fields[pruned]}"),
        TimeElapsedColumn(), TextColumn("eta"),
        TimeRemainingColumn(), console=console, transient=False,
    )


def _run_sweep(sweep, trials, refit: bool, register: Optional[str] = None):
    process.resume_gc()  # the libraries are imported: the sweep's own objects need it
    for notice in sweep.dataset.notices:
        console.print(notice, highlight=False, soft_wrap=True)

    with _progress_bar() as bar:
        task = bar.add_task(sweep.study_name, total=None, best="-", pruned="")

        def on_progress(p):
            best = "-" if p.best is None else f"{p.best:.4f}"
            pruned = f"pruned {p.pruned}" if p.pruned else ""
            bar.update(task, completed=p.done, total=p.total, best=best, pruned=pruned)

        with process.StopSignals(announce=_announce_stop) as signals:
            outcome = sweep.run(trials, progress=on_progress, stop=signals.stop,
                                notify=lambda line: bar.console.print(line, highlight=False,
                                                                      soft_wrap=True))
            outcome.interrupted = outcome.interrupted or signals.stop.is_set()
            # The summary closes the parent run; a second signal still stops it at once.
            result = sweep.finish(outcome, refit=refit, register=register)
    _print_best(result.study, result.metric)
    if result.size_curve is not None:
        out.print(f"learning curve: {result.size_curve.reading()}", highlight=False)
    training, tracking = result.stats.training, result.stats.tracking
    out.print(f"time: training {training.train_seconds:.1f}s, compiling "
              f"{training.compile_seconds:.1f}s ({training.programs_compiled} programs, "
              f"{training.cache_hits} from cache), tracking {tracking.seconds:.1f}s")
    _write_stats(result)
    _print_ui_hint(result)
    if outcome.interrupted:
        raise process.Interrupted(signals.signum or signal.SIGINT)
    _fail_if_nothing_ran(result)
    return result


def _announce_stop(signum: int) -> None:
    name = signal.Signals(signum).name
    console.print(f"{name}: stopping after the work in flight (a second signal stops now)",
                  highlight=False)


def _fail_if_nothing_ran(result) -> None:
    """Every trial failed, and not because its training diverged (a real result): that
    is the tool's failure, exit 1 with the first reason, not a quiet exit 0."""
    from optuna.trial import TrialState

    trials = [t for t in result.study.trials if "lost" not in t.user_attrs]
    if not trials or any(t.state != TrialState.FAIL for t in trials):
        return
    reasons = [t.user_attrs.get("fail_reason", "") for t in trials]
    if any(r.startswith("diverged") for r in reasons):
        return
    raise _fail(f"every trial failed: {reasons[0] or 'no reason recorded'}", EXIT_INTERNAL)


def _write_stats(result) -> None:
    """Machine-readable figures for the benchmarks (TUNER_STATS_JSON=path)."""
    path = os.environ.get("TUNER_STATS_JSON")
    if not path:
        return
    import json

    from tuner.summary.finalize import best_trial_or_none

    training = result.stats.training
    best = best_trial_or_none(result.study)
    with open(path, "w") as fh:
        json.dump({
            "train_s": training.train_seconds, "compile_s": training.compile_seconds,
            "programs": training.programs_compiled, "cache_hits": training.cache_hits,
            "padded_gflop": training.padded_flops / 1e9,
            "useful_gflop": training.useful_flops / 1e9,
            "tracking_s": result.stats.tracking.seconds,
            "best_value": None if best is None else best.value,
            "trials": len(result.study.trials),
            "trial_epochs": training.trial_epochs,
            "trial_epochs_unpruned": result.stats.epochs_unpruned,
            "segments": training.segments,
            "pruned": sum(t.state.name == "PRUNED" for t in result.study.trials),
        }, fh)


def _print_best(study, metric: str, top: int = 10) -> None:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    reverse = study.direction.name == "MAXIMIZE"
    done.sort(key=lambda t: t.value, reverse=reverse)
    table = Table(title=f"best trials of {study.study_name} ({metric})")
    table.add_column("trial", justify="right")
    table.add_column(metric, justify="right")
    names = sorted({k for t in done for k in t.params})
    for name in names:
        table.add_column(name)
    for t in done[:top]:
        table.add_row(str(t.number), f"{t.value:.4f}",
                      *[_fmt(t.params.get(n)) for n in names])
    out.print(table)
    states = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    out.print("trials: " + ", ".join(f"{v} {k.lower()}" for k, v in sorted(states.items())))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _print_ui_hint(result) -> None:
    uri = result.tracking_uri
    if uri.startswith("http"):
        out.print(f"MLflow: {stores.redact_url(uri)}/#/experiments/{result.experiment_id}"
                  "/runs?workflowType=machine_learning")
        return
    out.print(f"open the MLflow UI:  {stores.ui_command(uri)}")
    out.print("then browse:        "
              + stores.runs_url("127.0.0.1", 5000, result.experiment_id))


# --------------------------------------------------------------------------- commands
@app.command()
@_guard
def run(
    space: Path = typer.Argument(..., help="search-space YAML file"),
    trials: Optional[int] = typer.Option(None, min=1, help="total trials of the sweep"),
    method: Optional[str] = typer.Option(None, help="grid | random | tpe"),
    batch: Optional[int] = typer.Option(None, min=1, help="trials trained together"),
    seed: Optional[int] = typer.Option(None, help="sampler and training seed"),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI"),
    study: Optional[str] = typer.Option(None, help="study name (default: the spec's name)"),
    refit: bool = typer.Option(True, help="refit the best configuration on all data"),
    register: Optional[str] = typer.Option(
        None, help="register the refit model under this name in MLflow's Model Registry"),
) -> None:
    """Run, or continue, the sweep described by SPACE."""
    spec, dataset = _load_inputs(space, method, trials, batch, seed)
    from tuner.execution.session import open_sweep

    sweep = open_sweep(spec, dataset, storage=storage, tracking_uri=tracking_uri,
                       study_name=study, batch=batch)
    _run_sweep(sweep, trials, refit, register)


@app.command()
@_guard
def validate(space: Path = typer.Argument(..., help="search-space YAML file")) -> None:
    """Check a spec and its data without running anything."""
    from tuner.search.space import grid_size

    spec, dataset = _load_inputs(space, None, None, None, None)
    size = ""
    if spec.search.method == "grid":
        size = f", grid of {grid_size(spec)} points"
    out.print(f"ok: {spec.name}: {dataset.task}, {dataset.n_samples} rows x "
              f"{dataset.n_features} features, metric {spec.metric}, "
              f"{spec.search.method}{size}")


@app.command()
@_guard
def show(
    study: str = typer.Argument(..., help="study name"),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL"),
    top: int = typer.Option(10, min=1, help="how many trials to list"),
) -> None:
    """The best trials of a stored study."""
    from tuner.search.study import load_study, open_storage, stored_spec

    url = storage or stores.default_storage_url(stores.results_root())
    _require_existing_sqlite(url)
    quiet_libraries()
    loaded = load_study(open_storage(url), study)
    metric = stored_spec(loaded).metric or "value"
    _print_best(loaded, metric, top)


@app.command()
@_guard
def worker(
    study: str = typer.Option(..., help="study name"),
    storage: str = typer.Option(..., help="Optuna storage URL (PostgreSQL)"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI"),
    batch: Optional[int] = typer.Option(None, min=1, help="trials trained together"),
    worker_id: Optional[int] = typer.Option(None, help="seeds this worker's sampler"),
) -> None:
    """Join a shared study and work on it until its budget is done."""
    from tuner.inputs.spec.sections import LIMITS
    from tuner.search.study import is_sqlite

    if batch is not None and batch not in LIMITS["batch"]:  # `run` checks it in the spec
        raise _fail(f"--batch: batch must be {LIMITS['batch']}, got {batch}", EXIT_BAD_INPUT)
    if is_sqlite(storage):
        raise _fail("a sqlite storage serves one process, so workers cannot share it "
                    "safely; use PostgreSQL (--storage postgresql://USER@HOST/DB)",
                    EXIT_BAD_INPUT)
    from tuner.execution.session import join_sweep

    sweep = join_sweep(study, storage, tracking_uri=tracking_uri, batch=batch,
                       worker=worker_id)
    _run_sweep(sweep, None, refit=False)


@app.command()
def ui(
    host: str = typer.Option("127.0.0.1", help="interface to bind (loopback by default)"),
    port: int = typer.Option(5000, help="port"),
) -> None:
    """Start the MLflow UI on the default store (mlruns/ in this folder).

    Ctrl-C, SIGTERM or SIGHUP stops the server and every process it started (exit 130,
    143, 129; tuner/serve.py)."""
    from tuner.serve import serve

    root = stores.results_root()
    uri = stores.default_tracking_uri(root)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--default-artifact-root", stores.default_artifact_location(root),
           "--host", host, "--port", str(port)]
    out.print("MLflow UI: " + stores.runs_url(host, port, "0").rsplit("/#/", 1)[0])
    raise typer.Exit(serve(cmd))


def _require_existing_sqlite(url: str) -> None:
    """Reading a study must not create an empty database as a side effect."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not os.path.exists(path):
            raise InputError(f"no study database at {path}")


logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
