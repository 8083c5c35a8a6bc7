"""Where results go: the default Optuna and MLflow stores, URL redaction, UI links.

The embedded default needs no server: everything lives in ``<cwd>/mlruns``, always as an
ABSOLUTE path (a relative sqlite URI silently opens a new empty store elsewhere)::

    mlruns/optuna.db      Optuna RDB storage      sqlite:////abs/mlruns/optuna.db
    mlruns/mlflow.db      MLflow tracking store   sqlite:////abs/mlruns/mlflow.db
    mlruns/artifacts/     MLflow artifacts        file:///abs/mlruns/artifacts

Nothing here creates a folder or a file, except :func:`sqlite_init_lock`'s lock file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

REDACTED = "***"
_SQLITE_PREFIX = "sqlite:///"


def results_root(cwd: str | os.PathLike[str] | None = None) -> Path:
    """``<cwd>/mlruns`` as an absolute path (not created here)."""
    base = Path.cwd() if cwd is None else Path(cwd)
    return (base.expanduser() / "mlruns").resolve()


def _abs(root: str | os.PathLike[str]) -> Path:
    return Path(root).expanduser().resolve()


def default_storage_url(root: str | os.PathLike[str]) -> str:
    """The Optuna storage URL: ``sqlite:////abs/root/optuna.db``."""
    return _SQLITE_PREFIX + str(_abs(root) / "optuna.db")


def default_tracking_uri(root: str | os.PathLike[str]) -> str:
    """The MLflow tracking URI: ``sqlite:////abs/root/mlflow.db``."""
    return _SQLITE_PREFIX + str(_abs(root) / "mlflow.db")


def default_artifact_location(root: str | os.PathLike[str]) -> str:
    """The MLflow artifact location: ``file:///abs/root/artifacts``."""
    return (_abs(root) / "artifacts").as_uri()


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL (any driver, e.g. ``sqlite+pysqlite``);
    None for other URLs and for in-memory databases."""
    m = re.match(r"^sqlite(?:\+\w+)?:///(?P<path>[^?]*)", url)
    if not m or m.group("path") in ("", ":memory:"):
        return None
    return Path(m.group("path"))


@contextlib.contextmanager
def sqlite_init_lock(url: str) -> Iterator[None]:
    """Serialize, across processes, the first opening of a sqlite store.

    Two processes that open a fresh MLflow sqlite database at once both run its schema
    migrations and both fail ("table experiments already exists", "duplicate column").
    Hold this lock (``<db>.lock`` next to the database, POSIX ``flock``) while the store is
    created. A no-op for non-sqlite URLs and where ``fcntl`` does not exist.
    """
    path = sqlite_path(url)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None  # type: ignore[assignment]
    if path is None or fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>.*)$", re.S)
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|token|access_token|secret|api_key)=)[^&#;]*", re.I
)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``; a URL without one comes back unchanged.

    ``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``; also
    ``http://user:pw@host``, ``?password=...`` query parameters, and passwords that contain
    unescaped ``@`` or ``/``. When in doubt it redacts more, never less.
    """
    url = str(url)
    m = _SCHEME.match(url)
    if m is None:
        return url
    scheme, rest = m.group("scheme"), m.group("rest")
    end = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if i != -1:
            end = min(end, i)
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            authority = f"{user}:{REDACTED}@{host}"
        rest = authority + tail
    elif ":" in authority and "@" in tail:
        # user:pa/ss@host: an unescaped '/' in the password ended the authority early.
        user, after = authority.split(":", 1)
        if not after.isdigit():  # host:port/path@x is a port, not a password
            rest = f"{user}:{REDACTED}@" + tail.split("@", 1)[1]
    return _SECRET_QUERY.sub(lambda q: q.group("key") + REDACTED, scheme + rest)


def ui_command(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000) -> str:
    """The shell command that opens the MLflow UI on ``tracking_uri``.

    ``mlflow ui --backend-store-uri sqlite:////abs/mlruns/mlflow.db --host 127.0.0.1 --port 5000``
    (``tuner ui`` does the same for the default store). The URI is shell-quoted where needed
    and its password, if any, redacted: this line is meant to be printed.
    """
    return (
        f"mlflow ui --backend-store-uri {shlex.quote(redact_url(tracking_uri))} "
        f"--host {shlex.quote(str(host))} --port {int(port)}"
    )


def runs_url(host: str, port: int, experiment_id: str) -> str:
    """The link that opens an experiment's runs table in the UI's training view
    (MLflow 3 otherwise opens its GenAI view)."""
    h = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return (f"http://{h}:{int(port)}/#/experiments/{experiment_id}"
            "/runs?workflowType=machine_learning")
