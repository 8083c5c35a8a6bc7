"""tuner.stores: absolute default stores, password redaction, the UI command and link."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tuner.stores import (
    default_artifact_location,
    default_storage_url,
    default_tracking_uri,
    redact_url,
    results_root,
    runs_url,
    sqlite_init_lock,
    sqlite_path,
    ui_command,
)


def test_results_root_is_absolute_and_not_created(tmp_path, monkeypatch):
    assert results_root(tmp_path) == (tmp_path / "mlruns").resolve()
    monkeypatch.chdir(tmp_path)
    root = results_root()
    assert root.is_absolute() and root == (tmp_path / "mlruns").resolve()
    assert not root.exists()
    assert results_root("sub/..") == root  # relative cwd is resolved too


def test_default_urls_are_absolute_sqlite(tmp_path):
    root = results_root(tmp_path)
    assert default_storage_url(root) == f"sqlite:///{root}/optuna.db"
    assert default_tracking_uri(root) == f"sqlite:///{root}/mlflow.db"
    assert default_storage_url(root).startswith("sqlite:////")  # 3 + the leading '/'
    assert default_artifact_location(root) == (root / "artifacts").as_uri()
    assert default_artifact_location(root).startswith("file:///")
    assert sqlite_path(default_tracking_uri(root)) == root / "mlflow.db"


def test_relative_root_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri("mlruns") == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"


@pytest.mark.parametrize(
    "url, expected",
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        ("postgresql+psycopg://user:secret@db.example.com:5432/optuna",
         "postgresql+psycopg://user:***@db.example.com:5432/optuna"),
        ("mysql+pymysql://root:pa@ss@host/db", "mysql+pymysql://root:***@host/db"),
        ("postgresql://u:pa/ss@host/db", "postgresql://u:***@host/db"),
        ("postgresql://u:p%40ss@host/db?sslmode=require", "postgresql://u:***@host/db?sslmode=require"),
        ("https://alice:tok3n@mlflow.example.com/", "https://alice:***@mlflow.example.com/"),
        ("http://bob:pw@10.0.0.1:5000", "http://bob:***@10.0.0.1:5000"),
        ("postgresql://:secret@host/db", "postgresql://:***@host/db"),
        ("postgresql://host/db?user=u&password=secret&sslmode=require",
         "postgresql://host/db?user=u&password=***&sslmode=require"),
        # nothing to hide: unchanged
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("postgresql://host:5432/db", "postgresql://host:5432/db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://host:5000/path@x", "http://host:5000/path@x"),
        ("sqlite:////abs/mlruns/optuna.db", "sqlite:////abs/mlruns/optuna.db"),
        ("file:///tmp/a@b/artifacts", "file:///tmp/a@b/artifacts"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("databricks", "databricks"),
        ("", ""),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected
    if "secret" in url:
        assert "secret" not in redact_url(url)


def test_ui_command_and_runs_url(tmp_path):
    uri = default_tracking_uri(results_root(tmp_path))
    assert ui_command(uri) == f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
    assert ui_command(uri, host="0.0.0.0", port=8080).endswith("--host 0.0.0.0 --port 8080")
    spaced = "sqlite:////tmp/my runs/mlflow.db"
    assert f"--backend-store-uri '{spaced}' " in ui_command(spaced)
    assert "secret" not in ui_command("postgresql://u:secret@h/db")
    assert (runs_url("127.0.0.1", 5000, "3")
            == "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning")
    assert runs_url("::1", 5000, "3").startswith("http://[::1]:5000/")


def test_sqlite_path():
    assert sqlite_path("sqlite:////a/b.db") == Path("/a/b.db")
    assert sqlite_path("sqlite+pysqlite:////a/b.db?timeout=3") == Path("/a/b.db")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("postgresql://h/db") is None


def test_sqlite_init_lock_is_exclusive(tmp_path):
    uri = default_tracking_uri(tmp_path / "mlruns")
    inside, overlap = [], []

    def work():
        with sqlite_init_lock(uri):
            if inside:
                overlap.append(True)
            inside.append(True)
            time.sleep(0.05)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlap
    assert (tmp_path / "mlruns" / "mlflow.db.lock").exists()
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # the lock creates no database
    with sqlite_init_lock("postgresql://h/db"):  # no-op elsewhere
        pass
