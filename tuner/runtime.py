"""Process set-up shared by the CLI and the API: quiet libraries, compilation cache."""

from __future__ import annotations

import importlib
import logging
import os
import threading
import warnings
from collections.abc import Callable, Sequence

from models import ProgramCache, ProgramStore
from models.compile_cache import enable_persistent_cache, use_cpu_cores_as_devices

CACHE_ENV = "TUNER_JAX_CACHE"
log = logging.getLogger(__name__)
_preloaded: set[object] = set()  # module names and functions already handed out
_preload_lock = threading.Lock()


def quiet_libraries() -> None:
    """MLflow, alembic and Optuna talk a lot at INFO; the CLI shows its own progress."""
    import mlflow  # noqa: F401 - it configures its loggers on import; override after

    for name in ("mlflow", "alembic", "optuna", "urllib3", "git"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Logging a python_model always warns about CloudPickle; the model is our own class.
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    logging.getLogger("mlflow.models.model").setLevel(logging.ERROR)
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # With an http tracking URI, MLflow prints "View run ... at: <tracking URI>/..." for
    # every run it ends: one line per trial, and the URI's credentials in clear text.
    # The CLI prints its own (redacted) link instead.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    warnings.filterwarnings("ignore", category=optuna_experimental_warning())
    warnings.filterwarnings("ignore", message=".*Pydantic.*")
    # We record heartbeats ourselves for the batched ask/tell loop (engine._Heartbeat).
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")
    # Logging the model with its input example: MLflow infers a schema from the example
    # and hints that integer columns cannot hold missing values, but the model's
    # signature is given (tuner.summary.model: a table's columns are optional and
    # imputed); and its example serializer compares columns to a range, which pandas 3
    # deprecates. Neither is the user's to act on. Only these two messages, only there.
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer",
                            category=UserWarning, module=r"mlflow\.")
    warnings.filterwarnings("ignore", message="Operation with range is deprecated",
                            module=r"mlflow\.models\.utils")


def optuna_experimental_warning() -> type[Warning]:
    from optuna.exceptions import ExperimentalWarning
    return ExperimentalWarning


def setup_devices() -> None:
    """One JAX device per CPU core ($TUNER_CPU_DEVICES overrides; 1 turns it off)."""
    wanted = os.environ.get("TUNER_CPU_DEVICES")
    use_cpu_cores_as_devices(int(wanted) if wanted else None)


def setup_compilation_cache() -> str | None:
    """JAX's persistent cache at $TUNER_JAX_CACHE (default ~/.cache/tuner/jax); "off"
    disables it."""
    setup_devices()
    path = os.environ.get(CACHE_ENV)
    if path == "off":
        return None
    return enable_persistent_cache(path)


def program_cache() -> ProgramCache:
    """A sweep's program cache: devices and the persistent compilation cache set up, and
    exported programs kept under ``<cache>/programs`` (none when the cache is off)."""
    path = setup_compilation_cache()
    return ProgramCache(ProgramStore(os.path.join(path, "programs")) if path else None)


def preload_in_background(modules: Sequence[str],
                          then: Sequence[Callable[[], object]] = ()) -> threading.Thread | None:
    """Import ``modules``, then call each of ``then``, in a daemon thread; returns it (None
    if nothing is left to do: each module and callable runs once per process).

    For work needed only at the end of a sweep (plots, importances, the model's logging):
    started while the main thread waits on XLA, which releases the GIL, it costs no wall
    time. Python's per-module import locks make a main-thread import of the same module
    wait for the background one instead of running twice. A failure is only logged: the
    real use later does the work (and reports the problem) itself.
    """
    with _preload_lock:
        names = [m for m in modules if m not in _preloaded]
        calls = [fn for fn in then if fn not in _preloaded]
        _preloaded.update(names, calls)
    if not names and not calls:
        return None

    def work() -> None:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001
                log.debug("preloading %s failed", name, exc_info=True)
        for fn in calls:
            try:
                fn()
            except Exception:  # noqa: BLE001
                log.debug("preparing %s failed", fn.__qualname__, exc_info=True)

    thread = threading.Thread(target=work, daemon=True, name="preload")
    thread.start()
    return thread
