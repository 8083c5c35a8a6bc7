"""Storage a worker refuses, with one clear line and exit 2: an unreachable database, a
wrong role or database, a sqlite file (single-process), a study that does not exist.
None of these needs the tracking server."""

from __future__ import annotations

import pytest
from dist_helpers import one_error_line, unique


# --------------------------------------------------------------------------- storage URLs
@pytest.mark.parametrize("url, words", [
    # nothing listens on port 1
    ("postgresql://postgres:hunter2@127.0.0.1:1/nope", ("connect", "refused")),
    # no such role (trust auth accepts any password for a role that exists)
    ("postgresql://tuner_no_such_role:hunter2@127.0.0.1:5432/postgres", ("role",)),
    # no such database
    ("postgresql://postgres:hunter2@127.0.0.1:5432/tuner_no_such_db", ("database",)),
])
def test_worker_bad_storage_one_line_exit_2(pg, tuner, url, words):
    line = one_error_line(tuner.run("worker", "--study", "s", "--storage", url), "hunter2")
    assert "postgres:***@" in line or "role:***@" in line  # the URL, redacted
    assert any(w in line.lower() for w in words), line


def test_run_bad_storage_one_line_exit_2(pg, tuner, write_spec, tmp_path):
    spec = write_spec(unique("bad-storage"))
    url = "postgresql://tuner_no_such_role:hunter2@127.0.0.1:5432/postgres"
    line = one_error_line(tuner.run("run", spec, "--storage", url, "--tracking-uri",
                                     (tmp_path / "unused").as_uri()), "hunter2")
    assert "role" in line.lower()


def test_worker_refuses_sqlite_and_names_postgresql(tuner, tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    line = one_error_line(tuner.run("worker", "--study", "s", "--storage", url))
    assert "sqlite" in line.lower() and "PostgreSQL" in line
    assert not (tmp_path / "optuna.db").exists()  # nothing created


def test_worker_unknown_study(tuner, storage_url):
    line = one_error_line(tuner.run("worker", "--study", unique("missing"),
                                     "--storage", storage_url))
    assert "not found" in line
