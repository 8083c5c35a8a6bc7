"""Property: whatever a spec file holds, ``tuner validate`` says ok (exit 0) or names one
problem (exit 2, one line on stderr) and creates nothing; never a traceback or exit 1.

Valid specs from search_spaces/ are mutated (keys deleted or added, values replaced by
junk of other types, huge, negative, NaN or infinite numbers, words that are not the
vocabulary, empty lists, swapped bounds, wrong nesting), written as YAML and validated
in this process (``e2e.invoke``: fast, no interpreter start per example).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import e2e

REPO = Path(__file__).resolve().parents[2]
BASES = [yaml.safe_load((REPO / "search_spaces" / name).read_text())
         for name in ("digits_tpe.yaml", "digits_grid.yaml")]

NUMBERS = st.one_of(
    st.integers(-5, 5), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 0.5, 1e-320, 1e308, -1e308, 2**31, 2**32, 2**63, 10**12,
                     10**400, -(10**400), math.nan, math.inf, -math.inf]),
)
WORDS = st.one_of(
    st.text(max_size=8),
    # Near the vocabulary, and what a shell or rich would read specially.
    st.sampled_from(["", " ", "none", "grid", "tpe", "hyperband", "relu", "adam", "xavier",
                     "accuracy", "r2", "multiclass", "regression", "sklearn:", "sklearn:iris",
                     "sklearn:diabetes", "csv:", "csv:data.csv", "npz:x.npz", "arrays",
                     "[/x]", "[bold]", "1e-3", "0x10", ".inf", "~", "a\nb"]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, WORDS)
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(WORDS, st.sampled_from(["low", "high", "log", "step",
                                                          "type", "kind", "source"])),
                        inner, max_size=3)),
    max_leaves=6,
)
KEYS = st.one_of(WORDS, st.sampled_from(
    ["name", "data", "cv", "search", "metric", "fixed", "space", "task", "target",
     "categorical", "folds", "seed", "trials", "batch", "method", "pruner", "early_stopping",
     "epochs", "width", "depth", "batch_size", "learning_rate", "dropout", "optimizer",
     "low", "high", "log", "step", "type", "patience", "min_delta", "kind"]))


def _paths(node, prefix=()):
    """Every path (tuple of keys / indices) to a node below the root."""
    items = (node.items() if isinstance(node, dict)
             else enumerate(node) if isinstance(node, list) else ())
    for key, child in items:
        yield prefix + (key,)
        yield from _paths(child, prefix + (key,))


def _parent(spec, path):
    node = spec
    for key in path[:-1]:
        node = node[key]
    return node


def _mutate(spec: dict, data) -> None:
    """One mutation of ``spec`` in place, chosen by hypothesis."""
    paths = list(_paths(spec))
    path = data.draw(st.sampled_from(paths), label="path")
    parent, key = _parent(spec, path), path[-1]
    value = parent[key]
    op = data.draw(st.sampled_from(
        ["delete", "junk", "number", "word", "empty", "wrap", "add_key", "swap"]), label="op")
    if op == "delete":
        del parent[key]
    elif op == "junk":
        parent[key] = data.draw(JUNK, label="junk")
    elif op == "number":
        parent[key] = data.draw(NUMBERS, label="number")
    elif op == "word":
        parent[key] = data.draw(WORDS, label="word")
    elif op == "empty":
        parent[key] = data.draw(st.sampled_from([[], {}, "", None]), label="empty")
    elif op == "wrap":  # the right value, nested the wrong way
        parent[key] = data.draw(st.sampled_from([[value], {"low": value}, {"value": value},
                                                 [[value]]]), label="wrap")
    elif op == "add_key":
        target = value if isinstance(value, dict) else parent
        if isinstance(target, dict):
            target[data.draw(KEYS, label="key")] = data.draw(JUNK, label="value")
    elif op == "swap":  # low/high swapped, or a value moved under another key
        if isinstance(value, dict) and {"low", "high"} <= set(value):
            value["low"], value["high"] = value["high"], value["low"]
        elif isinstance(parent, dict) and len(parent) > 1:
            other = data.draw(st.sampled_from(sorted(k for k in parent if k != key)),
                              label="other")
            parent[key], parent[other] = parent[other], parent[key]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory (checked after every example) and a spec folder."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (tmp_path / "specs").mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("TUNER_DEBUG", raising=False)  # a bug must show as exit 1 here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(base=st.sampled_from(BASES), n=st.integers(1, 3), data=st.data())
def test_validate_mutated_spec_is_ok_or_one_line(workdir, capsys, base, n, data):
    spec = copy.deepcopy(base)
    for _ in range(n):
        if list(_paths(spec)):
            _mutate(spec, data)
    path = workdir / "specs" / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
    capsys.readouterr()
    code = e2e.invoke(["validate", path])
    captured = capsys.readouterr()
    err = e2e.stderr_lines(captured.err)
    assert code in (0, 2), (code, captured.err)
    if code == 2:
        assert len(err) == 1 and err[0].startswith("error: "), err
        assert "internal error" not in err[0]
    else:
        assert captured.out.startswith("ok: "), captured.out
    assert list((workdir / "cwd").iterdir()) == []
