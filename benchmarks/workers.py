"""Scale-out on W2 (search_spaces/digits_w2.yaml, TPE): trials per minute of

  1. one `tuner run` on the embedded default stores (sqlite, no server),
  2. one `tuner run` on PostgreSQL + an `mlflow server` (PostgreSQL backend store),
  3. two processes on PostgreSQL + the server: `tuner run` and one `tuner worker`,

in one run, with the ratios: the overhead of PostgreSQL + tracking server against the
sqlite default (2 vs 1), and what a second worker adds (3 vs 2). Whole processes, wall
clock from the first start to the last exit, no refit (a worker does not refit), and a
warm compilation cache (an untimed first run fills it). Each setup runs a study of its own
with the same seed, so setups 1 and 2 train the same trials; the second worker draws
other proposals (its own seed), so setup 3 may compile programs the others did not need.

Needs PostgreSQL (default postgresql://postgres@127.0.0.1:5432, trust auth; --pg to
change); creates two databases `tuner_bench_<hex>_*` and drops them at the end. The
workers share the machine's cores: on a machine with few cores, a second worker mostly
competes with the first for them (the figure says how much it still gains).

    python benchmarks/workers.py [--trials 48] [--batch 16] [--pg postgresql://USER@HOST:PORT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, table  # noqa: E402

SPEC = os.path.join(ROOT, "search_spaces", "digits_w2.yaml")
TUNER = [shutil.which("tuner") or "tuner"]


# --------------------------------------------------------------------------- servers
def _connect(pg: str, db: str = "postgres"):
    import psycopg

    return psycopg.connect(f"{pg}/{db}", autocommit=True, connect_timeout=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start_mlflow_server(pg: str, db: str, folder: str, workers: int
                        ) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(os.path.join(folder, "mlflow-server.log"), "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", "postgresql+psycopg://" + pg.split("://", 1)[1] + f"/{db}",
         "--serve-artifacts", "--artifacts-destination",
         "file://" + os.path.join(folder, "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)
    deadline = time.monotonic() + 180
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("mlflow server did not come up; see "
                             + os.path.join(folder, "mlflow-server.log"))
        time.sleep(0.5)
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --------------------------------------------------------------------------- sweeps
def _start(args: list[str], cwd: str, env: dict, name: str) -> subprocess.Popen:
    """Start ``tuner ARGS``: output to ``<name>.log``, figures to ``<name>.json``."""
    with open(os.path.join(cwd, f"{name}.log"), "wb") as log:
        return subprocess.Popen(
            [*TUNER, *args], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **env, "TUNER_STATS_JSON": os.path.join(cwd, f"{name}.json")})


def _finish(proc: subprocess.Popen, cwd: str, name: str) -> dict:
    proc.wait()
    if proc.returncode != 0:
        with open(os.path.join(cwd, f"{name}.log"), errors="replace") as fh:
            sys.stderr.write(fh.read()[-5000:])
        raise SystemExit(f"{name} failed with exit code {proc.returncode}")
    with open(os.path.join(cwd, f"{name}.json")) as fh:
        return json.load(fh)


def _study_exists(storage: str, name: str) -> bool:
    import optuna

    from tuner.search.study import normalise_url

    try:
        return name in optuna.get_all_study_names(normalise_url(storage))
    except Exception:  # noqa: BLE001 - tables not there yet
        return False


def _complete(storage: str, name: str) -> int:
    import optuna

    from tuner.search.study import normalise_url

    study = optuna.load_study(study_name=name, storage=normalise_url(storage))
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def trained_per_process(tracking: str, study: str) -> list[int]:
    """Trials each process trained (FINISHED trial runs per sweep run, by start time)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name(study)
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    parents = sorted((r for r in runs if "optuna.trial_number" not in r.data.tags),
                     key=lambda r: r.info.start_time)
    return [sum(r.info.status == "FINISHED"
                and r.data.tags.get("mlflow.parentRunId") == p.info.run_id for r in runs)
            for p in parents]


def sweep(cwd: str, env: dict, study: str, trials: int, batch: int | None,
          storage: str | None = None, tracking: str | None = None, workers: int = 1
          ) -> tuple[float, list[dict]]:
    """`tuner run` (+ workers - 1 `tuner worker`); (wall seconds, each process's stats)."""
    where = (["--storage", storage, "--tracking-uri", tracking] if storage else [])
    where += ["--batch", str(batch)] if batch else []
    start = time.perf_counter()
    procs = [(_start(["run", SPEC, "--study", study, "--trials", str(trials), "--no-refit",
                      *where], cwd, env, f"{study}-0"), f"{study}-0")]
    if workers > 1:
        # A worker joins a study that exists: start it as soon as `tuner run` made it.
        while not _study_exists(storage, study) and procs[0][0].poll() is None:
            time.sleep(0.2)
        for i in range(1, workers):
            name = f"{study}-{i}"
            procs.append((_start(["worker", "--study", study, *where, "--worker-id", str(i)],
                                 cwd, env, name), name))
    stats = [_finish(p, cwd, name) for p, name in procs]
    return time.perf_counter() - start, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--batch", type=int, default=None,
                        help="trials per batch (default: the spec's 16); two workers need "
                             "at least two batches to share")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432",
                        help="PostgreSQL server (no database): two are created and dropped")
    parser.add_argument("--server-workers", type=int, default=2,
                        help="request workers of the mlflow server")
    args = parser.parse_args()
    pg = args.pg.rstrip("/")
    prefix = f"tuner_bench_{uuid.uuid4().hex[:8]}"
    dbs = [f"{prefix}_optuna", f"{prefix}_mlflow"]
    with _connect(pg) as conn:
        for db in dbs:
            conn.execute(f'CREATE DATABASE "{db}"')
    server = None
    try:
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as cwd:
            env = {"TUNER_JAX_CACHE": cache}
            storage = f"{pg}/{dbs[0]}"
            server, tracking = start_mlflow_server(pg, dbs[1], cwd, args.server_workers)
            print(f"W2, {args.trials} trials, batch {args.batch or 'of the spec'}; mlflow "
                  f"server on {tracking}; {os.cpu_count()} CPU cores", flush=True)
            n, b = args.trials, args.batch
            sweep(cwd, env, "w2-warmup", n, b)  # fills the compilation cache
            runs = [
                ("1 process, sqlite (default)", 1, *sweep(cwd, env, "w2-sqlite", n, b)),
                ("1 process, PostgreSQL + mlflow server", 1,
                 *sweep(cwd, env, "w2-pg-1", n, b, storage, tracking)),
                ("2 processes (run + worker), PostgreSQL + server", 2,
                 *sweep(cwd, env, "w2-pg-2", n, b, storage, tracking, workers=2)),
            ]
            for study in ("w2-pg-1", "w2-pg-2"):
                done = _complete(storage, study)
                assert done == args.trials, f"{study}: {done} trials complete"
            split = trained_per_process(tracking, "w2-pg-2")
    finally:
        if server is not None:
            stop(server)
        with _connect(pg) as conn:
            for db in dbs:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    base_s = runs[0][2]
    rows = []
    for label, n, secs, stats in runs:
        best = max((s["best_value"] for s in stats if s["best_value"] is not None),
                   default=float("nan"))
        rows.append((label, f"{secs:.1f}", f"{args.trials / secs * 60:.1f}",
                     f"{base_s / secs:.2f}x", f"{best:.4f}",
                     ", ".join(f"train {s['train_s']:.1f}s compile {s['compile_s']:.1f}s "
                               f"({s['programs']} programs, {s['cache_hits']} cached) "
                               f"tracking {s['tracking_s']:.1f}s" for s in stats)))
    print(table(rows, (f"W2 ({args.trials} trials)", "seconds", "trials/min",
                       "vs sqlite", "best CV acc", "per process")))
    sqlite_s, pg1_s, pg2_s = (r[2] for r in runs)
    print(f"\nPostgreSQL + tracking server vs sqlite default (1 process): "
          f"{pg1_s / sqlite_s:.2f}x the time ({(pg1_s / sqlite_s - 1):+.0%})")
    print(f"2 workers vs 1 worker (PostgreSQL + server): {pg1_s / pg2_s:.2f}x the trials "
          f"per minute")
    print(f"2 workers vs the single sqlite process: {sqlite_s / pg2_s:.2f}x the trials "
          f"per minute")
    print(f"trials trained by the 2 processes: {' + '.join(map(str, split))}")


if __name__ == "__main__":
    main()
