"""Scale-out tests: real PostgreSQL, a real ``mlflow server`` and ``tuner`` processes.

PostgreSQL is the local server on 127.0.0.1:5432 (user ``postgres``, trust auth; ``.ci/run``
starts it); ``TUNER_TEST_PG`` overrides the server URL (without a database). A test
session creates fresh databases named ``tuner_test_<hex>_*`` and drops them (WITH FORCE)
at its end: one for the Optuna studies, one for the tracking server's backend store, and
any that a test asks ``fresh_db`` for. Tests use distinct study names, so they share the
Optuna database and the tracking server. Without PostgreSQL the tests that need it skip,
saying why.

``tuner`` runs as subprocesses with short heartbeats (TUNER_HEARTBEAT_S=1,
TUNER_GRACE_S=4) and one JAX compilation cache for the session, so that a program is
compiled once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from dist_helpers import Tuner, spec_file, stop

PG_SERVER = os.environ.get("TUNER_TEST_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
HEARTBEAT_S, GRACE_S = 1, 4


# --------------------------------------------------------------------------- PostgreSQL
def _connect(dbname: str = "postgres"):
    import psycopg

    return psycopg.connect(f"{PG_SERVER}/{dbname}", autocommit=True, connect_timeout=5)


def _pg_unusable() -> str | None:
    """Why PostgreSQL cannot be used, or None."""
    try:
        with _connect() as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return (f"PostgreSQL at {PG_SERVER} is unreachable ({first}); start it with "
                "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
                "(.ci/run does)")
    return None


class Databases:
    """Fresh databases (and roles) for the session, all dropped at its end."""

    def __init__(self) -> None:
        self.prefix = f"tuner_test_{uuid.uuid4().hex[:10]}"
        self.names: list[str] = []
        self.roles: list[str] = []

    def create(self, suffix: str, owner: str | None = None) -> str:
        name = f"{self.prefix}_{suffix}"
        with _connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' OWNER "{owner}"' if owner else ""))
        self.names.append(name)
        return name

    def create_role(self, suffix: str, password: str) -> str:
        role = f"{self.prefix}_{suffix}"
        with _connect() as conn:
            conn.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
        self.roles.append(role)
        return role

    def url(self, name: str, userinfo: str | None = None) -> str:
        if userinfo is None:
            return f"{PG_SERVER}/{name}"
        scheme, rest = PG_SERVER.split("://", 1)
        return f"{scheme}://{userinfo}@{rest.rsplit('@', 1)[-1]}/{name}"

    def drop_all(self) -> None:
        with _connect() as conn:
            for name in reversed(self.names):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            for role in self.roles:
                conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture(scope="session")
def _databases():
    """The session's databases, or None without PostgreSQL (the tests that need it skip)."""
    if _pg_unusable() is not None:
        yield None
        return
    dbs = Databases()
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def pg(_databases) -> Databases:
    if _databases is None:
        pytest.skip(_pg_unusable() or "PostgreSQL is unusable")
    return _databases


@pytest.fixture(scope="session")
def storage_url(pg: Databases) -> str:
    """The session's Optuna database as a ``postgresql://`` URL (the tool maps it to
    psycopg 3)."""
    return pg.url(pg.create("optuna"))


@pytest.fixture()
def fresh_db(pg: Databases):
    """``fresh_db("race")`` -> the URL of a brand-new, empty database."""
    return lambda suffix, owner=None: pg.url(pg.create(suffix, owner))


# --------------------------------------------------------------------------- MLflow
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


class _Server:
    def __init__(self, dbs: Databases, root) -> None:
        self.root = root
        self.url = f"http://127.0.0.1:{_free_port()}"
        backend = ("postgresql+psycopg://" + PG_SERVER.split("://", 1)[1]
                   + "/" + dbs.create("mlflow"))
        cmd = [sys.executable, "-m", "mlflow", "server",
               "--backend-store-uri", backend,
               "--serve-artifacts", "--artifacts-destination", (root / "artifacts").as_uri(),
               "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1], "--workers", "1"]
        with open(root / "server.log", "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root,
                                         start_new_session=True)

    def wait_healthy(self, timeout: float = 150) -> str:
        deadline = time.monotonic() + timeout
        while not _healthy(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                stop(self.proc, timeout=5)
                text = (self.root / "server.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"mlflow server did not come up on {self.url}:\n{text}")
            time.sleep(0.5)
        return self.url


@pytest.fixture(scope="session", autouse=True)
def _mlflow_server_started(_databases, tmp_path_factory):
    """Starts the tracking server with the session's first test (it takes a while to come
    up; the tests that do not need it run meanwhile). Stopped at the end of the session."""
    if _databases is None:
        yield None
        return
    server = _Server(_databases, tmp_path_factory.mktemp("mlflow-server"))
    yield server
    stop(server.proc, timeout=5)


@pytest.fixture(scope="session")
def mlflow_server(pg, _mlflow_server_started) -> str:
    """``mlflow server`` on loopback: PostgreSQL backend store, proxied artifacts in a
    temporary folder, one worker. Its URL, once it answers ``/health``."""
    return _mlflow_server_started.wait_healthy()


# --------------------------------------------------------------------------- tuner processes
@pytest.fixture(scope="session")
def tuner_env(tmp_path_factory) -> dict[str, str]:
    """Environment of a ``tuner`` subprocess: fast heartbeats, the session's JAX cache,
    one CPU device unless a test asks for more."""
    env = dict(os.environ)
    for key in ("XLA_FLAGS", "MLFLOW_TRACKING_URI", "TUNER_DEBUG",
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"):
        env.pop(key, None)
    env.update(TUNER_HEARTBEAT_S=str(HEARTBEAT_S), TUNER_GRACE_S=str(GRACE_S),
               TUNER_MAX_RETRY="3", TUNER_JAX_CACHE=str(tmp_path_factory.mktemp("jax-cache")),
               PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
    return env


@pytest.fixture()
def tuner(tmp_path, tuner_env):
    """Runs ``tuner`` in the test's folder; whatever is still running at the end is ended."""
    t = Tuner(tmp_path, tuner_env)
    yield t
    t.close()


@pytest.fixture()
def write_spec(tmp_path):
    """``write_spec(name, search={...}, space={...})`` -> path of a tiny spec YAML."""
    return lambda name, **over: spec_file(tmp_path, name, **over)
