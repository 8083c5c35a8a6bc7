"""The ``tuner`` command line: run, validate, show, worker, ui.

Exit codes: 0 done, 2 bad input, 1 internal error (or every trial failed), 130/143/129
stopped by SIGINT/SIGTERM/SIGHUP (state kept, nothing RUNNING, resumable).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn, Progress, TextColumn, TimeElapsedColumn,
)

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


BAR_WIDTH = 10


def _progress_bar():
    # One line at 80 columns: name, bar, then a status text cut to what is left (done/
    # total, best, phase, pruned/failed, ETA), then the elapsed time.
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(bar_width=BAR_WIDTH),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
        console=console, transient=False,
    )


def _status(p, name: str, width: int) -> str:
    """``13/48  best 0.9667  compiling program 1 of 2  eta 2:13  2 pruned``, in a
    shorter form (``compiling 1/2``) when the line has not the room, cut as a last resort
    (the least telling parts last)."""
    best = "-" if p.best is None else f"{p.best:.4g}"
    counts = ", ".join(f"{n} {what}" for n, what in ((p.pruned, "pruned"),
                                                       (p.failed, "failed")) if n)
    room = width - len(name) - BAR_WIDTH - len("0:00:00") - 3
    short = re.sub(r" program (\d+) of (\d+)$", r" \1/\2", p.phase)
    for phase, sep in ((p.phase, "  "), (short, " ")):
        parts = [f"{p.done}/{p.total}", f"best {best}", phase, _eta(p), counts]
        text = sep.join(part for part in parts if part)
        if len(text) <= room:
            return text
    return text[:max(room - 1, 0)] + "…"


def _eta(p) -> str:
    """Time left, from the trials this invocation finished: none while programs compile
    or load, or before the first trial of this invocation finished."""
    new = p.done - p.started_done
    if new <= 0 or p.done >= p.total or p.phase.startswith(("compiling", "loading")):
        return ""
    left = p.elapsed_s / new * (p.total - p.done)
    return f"eta {int(left) // 60}:{int(left) % 60:02d}"


def _say(line: str) -> None:
    console.print(line, highlight=False, markup=False, soft_wrap=True)


def _run_sweep(sweep, trials, refit: Optional[bool], register: Optional[str] = None):
    process.resume_gc()  # the libraries are imported: the sweep's own objects need it
    for notice in sweep.dataset.notices:
        _say(notice)

    with _progress_bar() as bar:
        task = bar.add_task(sweep.study_name, total=None, status="starting")
        last = None

        def on_progress(p):
            nonlocal last
            last = p
            bar.update(task, completed=p.done, total=p.total,
                       status=_status(p, sweep.study_name, bar.console.width))

        def notify(line: str) -> None:
            bar.console.print(line, highlight=False, markup=False, soft_wrap=True)

        with process.StopSignals(announce=_announce_stop) as signals:
            outcome = sweep.run(trials, progress=on_progress, stop=signals.stop,
                                notify=notify, resummarize=refit is True)
            outcome.interrupted = outcome.interrupted or signals.stop.is_set()
            # The summary closes the parent run; a second signal still stops it at once.
            result = sweep.finish(outcome, refit=refit is not False, register=register)
            if last is not None:
                done = dataclasses.replace(last, phase="done")
                bar.update(task, status=_status(done, sweep.study_name, bar.console.width))
    _print_summary(result.study, result.metric, fixed=dict(sweep.spec.fixed))
    if result.size_curve is not None:
        out.print(f"learning curve: {result.size_curve.reading()}", highlight=False,
                  markup=False)
    if not result.up_to_date:
        training, tracking = result.stats.training, result.stats.tracking
        out.print(f"time: training {training.train_seconds:.1f}s, compiling "
                  f"{training.compile_seconds:.1f}s ({training.programs_compiled} programs, "
                  f"{training.cache_hits} from cache), tracking {tracking.seconds:.1f}s",
                  highlight=False)
    _write_stats(result)
    _print_pointers(_pointers(sweep.study_name, sweep.storage_url, result.parent_run_id,
                              result.model_uri, result.tracking_uri, result.experiment_id))
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


def _print_summary(study, metric: str, top: int = 10, fixed: dict | None = None,
                   all_columns: bool = False) -> None:
    """The best trial (every parameter, whole), the top trials as a table that fits the
    terminal (or every column with ``all_columns``), and the trial counts by reason."""
    from tuner.summary import report

    for line in report.best_lines(study, metric, fixed):
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    width = None if all_columns else out.width
    table, left_out = report.top_table(study, metric, width, top)
    if table.row_count:
        out.print()
        if all_columns:  # as wide as it needs: never cropped nor wrapped
            from rich.measure import Measurement

            need = Measurement.get(out, out.options.update_width(10_000), table).maximum
            wide = Console(file=out.file, width=max(need, out.width),
                           force_terminal=out.is_terminal, no_color=out.no_color)
            wide.print(table, crop=False)
        else:
            out.print(table)
        for i, line in enumerate(report.left_out_lines(left_out, study.study_name)):
            # the list may wrap between names; the command line never does
            out.print(line, highlight=False, markup=False, soft_wrap=i > 0)
    for line in report.count_lines(study):
        out.print(line, highlight=False, markup=False, soft_wrap=True)


def _pointers(study_name: str, storage_url: str | None, parent_run_id, model_uri,
              tracking_uri: str | None, experiment_id):
    from tuner.summary.report import Pointers

    command = link = None
    if tracking_uri:
        if tracking_uri.startswith("http"):
            link = (f"{stores.redact_url(tracking_uri).rstrip('/')}/#/experiments/"
                    f"{experiment_id}/runs?workflowType=machine_learning")
        else:
            command = stores.ui_command(tracking_uri)
            link = stores.runs_url("127.0.0.1", 5000, experiment_id)
    return Pointers(study_name, stores.redact_url(storage_url) if storage_url else None,
                    parent_run_id, model_uri, experiment_id,
                    stores.redact_url(tracking_uri) if tracking_uri else None, command, link)


def _print_pointers(pointers) -> None:
    """Each on one line, never wrapped, so that a command or link is copied whole."""
    out.print()
    for line in pointers.lines():
        out.print(line, highlight=False, markup=False, soft_wrap=True)


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
    refit: Optional[bool] = typer.Option(
        None, "--refit/--no-refit",
        help="refit the best configuration on all data (default: when trials ran; "
             "--refit also summarises and refits a sweep already at its budget)"),
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
    for notice in dataset.notices:  # the inferred task, columns left out, ...
        _say(notice)
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
    storage: Optional[str] = typer.Option(
        None, help="Optuna storage URL (default: mlruns/optuna.db in this folder)"),
    tracking_uri: Optional[str] = typer.Option(
        None, help="MLflow tracking URI (default: mlflow.db beside a sqlite storage)"),
    top: int = typer.Option(10, min=1, help="how many trials to list"),
    all_columns: bool = typer.Option(
        False, "--all", help="every hyperparameter column, however wide the table"),
) -> None:
    """The best trials of a stored study, and where its results are."""
    from tuner.search.study import load_study, open_storage, stored_spec

    url = storage or stores.default_storage_url(stores.results_root())
    _require_existing_sqlite(url, given=storage is not None)
    quiet_libraries()
    loaded = load_study(open_storage(url), study)
    spec = stored_spec(loaded)
    metric = spec.metric or "value"
    _print_summary(loaded, metric, top, fixed=dict(spec.fixed), all_columns=all_columns)
    _print_pointers(_stored_pointers(study, url, tracking_uri))


def _stored_pointers(study: str, storage_url: str, tracking_uri: Optional[str]):
    """A stored study's pointers: its last parent run and model, read from MLflow (the
    experiment of the study's name) when a tracking store is found."""
    tracking_uri = tracking_uri or _tracking_beside(storage_url)
    run_id = model_uri = experiment_id = None
    if tracking_uri is not None:
        from mlflow import MlflowClient

        from tuner.summary.finalize import TAG_MODEL_URI

        client = MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_experiment_by_name(study)
        if exp is not None:
            experiment_id = exp.experiment_id
            name = study.replace("'", "\\'")
            runs = client.search_runs([exp.experiment_id], f"tags.study = '{name}'",
                                      order_by=["attributes.start_time DESC"],
                                      max_results=20)
            finished = [r for r in runs if r.info.status == "FINISHED"] or runs
            if finished:
                run_id = finished[0].info.run_id
                model_uri = finished[0].data.tags.get(TAG_MODEL_URI)
        else:
            tracking_uri = None
    return _pointers(study, storage_url, run_id, model_uri, tracking_uri, experiment_id)


def _tracking_beside(storage_url: str) -> Optional[str]:
    """``sqlite:///DIR/mlflow.db`` when the storage is ``sqlite:///DIR/optuna.db`` and
    that file exists (the embedded layout); else None."""
    path = stores.sqlite_path(storage_url)
    if path is None:
        return None
    beside = Path(path).with_name("mlflow.db")
    return stores.default_tracking_uri(beside.parent) if beside.exists() else None


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


def _require_existing_sqlite(url: str, given: bool = False) -> None:
    """Reading a study must not create an empty database as a side effect."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not os.path.exists(path):
            hint = "" if given else (
                "; run this in the folder you ran the sweep in, or point at its "
                "database with --storage sqlite:////PATH/TO/mlruns/optuna.db (or a "
                "PostgreSQL URL)")
            raise InputError(f"no study database at {path}{hint}")


logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)


if __name__ == "__main__":
    console_main()
