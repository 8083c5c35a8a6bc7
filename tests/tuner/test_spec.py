"""tuner.spec: validation messages, round trips, grids and path resolution."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from models import hparams as hp
from tuner.errors import InputError, SpecError, TunerError
from tuner.inputs.spec import (
    HPARAMS,
    Range,
    SweepSpec,
    load_spec,
    parse_data_spec,
    parse_spec,
    parse_yaml,
)

from tuner.search.space import grid_points, grid_size

REPO = Path(__file__).resolve().parents[2]

BASE = {"name": "t", "data": {"source": "sklearn:iris"}}


def spec_with(**parts) -> dict:
    d = copy.deepcopy(BASE)
    for key, value in parts.items():
        if isinstance(value, dict) and isinstance(d.get(key), dict):
            d[key] = {**d[key], **value}
        else:
            d[key] = value
    return d


def test_error_hierarchy():
    assert issubclass(SpecError, InputError) and issubclass(InputError, TunerError)
    assert str(SpecError("a\n  b")) == "a b"


# (case id, spec mapping, regex the one-line message must match)
BAD_SPECS = [
    ("unknown top-level key", {**BASE, "nmae": "x"}, r"^nmae: unknown key; did you mean 'name'\?"),
    ("unknown search key", spec_with(search={"methd": "grid"}),
     r"^search\.methd: unknown key; did you mean 'method'\?"),
    ("missing name", {"data": BASE["data"]}, r"^name: required$"),
    ("missing data", {"name": "t"}, r"^data: required$"),
    ("bad name", spec_with(name="my sweep!"), r"^name: .*got 'my sweep!'"),
    ("unknown hparam", spec_with(space={"learnin_rate": [0.1]}),
     r"^space\.learnin_rate: unknown hyperparameter; did you mean 'learning_rate'\?$"),
    ("unknown fixed hparam", spec_with(fixed={"widht": 3}),
     r"^fixed\.widht: unknown hyperparameter; did you mean 'width'\?$"),
    ("low > high", spec_with(space={"learning_rate": {"low": 0.1, "high": 0.01}}),
     r"^space\.learning_rate: `low <= high` must hold, got low=0\.1, high=0\.01$"),
    ("log low 0", spec_with(space={"l2": {"low": 0.0, "high": 0.1, "log": True}}),
     r"^space\.l2: a log range needs low > 0, got low=0\.0$"),
    ("log low negative", spec_with(space={"leaky_slope": {"low": -1.0, "high": 0.1, "log": True}}),
     r"^space\.leaky_slope: a log range needs low > 0, got low=-1\.0$"),
    ("nan bound", spec_with(space={"l2": {"low": math.nan, "high": 0.1}}),
     r"^space\.l2\.low: must be finite, got nan$"),
    ("inf bound", spec_with(space={"l2": {"low": 0.0, "high": math.inf}}),
     r"^space\.l2\.high: must be finite, got inf$"),
    ("empty list", spec_with(space={"width": []}), r"^space\.width: empty list"),
    ("unknown choice", spec_with(space={"optimizer": ["adam", "adamm"]}),
     r"^space\.optimizer\[1\]: unknown optimizer 'adamm'; did you mean 'adam'\?$"),
    ("unknown fixed choice", spec_with(fixed={"activation": "rellu"}),
     r"^fixed\.activation: unknown activation 'rellu'; did you mean 'relu'\?$"),
    ("grid over continuous", spec_with(search={"method": "grid"},
                                       space={"dropout": {"low": 0.0, "high": 0.5}}),
     r"^space\.dropout: a grid needs a list or a range with step$"),
    ("metric unfit", spec_with(metric="r2"),
     r"^metric: 'r2' does not fit task 'multiclass'; use one of \['accuracy'"),
    ("metric unfit regression", spec_with(data={"source": "sklearn:diabetes"}, metric="accuracy"),
     r"^metric: 'accuracy' does not fit task 'regression'"),
    ("metric typo", spec_with(metric="acurracy"),
     r"^metric: unknown metric 'acurracy'; did you mean 'accuracy'\?$"),
    ("trials 0", spec_with(search={"trials": 0}), r"^search\.trials: trials must be in \[1, 1000000\], got 0$"),
    ("batch 0", spec_with(search={"batch": 0}), r"^search\.batch: batch must be in \[1, 4096\], got 0$"),
    ("trials string", spec_with(search={"trials": "5"}),
     r"^search\.trials: input should be a valid integer, got '5'$"),
    ("folds 1", spec_with(cv={"folds": 1}), r"^cv\.folds: needs at least 2 folds, got 1$"),
    ("method typo", spec_with(search={"method": "grdi"}),
     r"^search\.method: unknown method 'grdi'; did you mean 'grid'\?$"),
    ("pruner typo", spec_with(search={"pruner": "medain"}),
     r"^search\.pruner: unknown pruner 'medain'; did you mean 'median'\?$"),
    ("cv not a mapping", spec_with(cv=5), r"^cv: .*got 5$"),
    ("fixed and space", spec_with(fixed={"dropout": 0.1}, space={"dropout": [0.2, 0.3]}),
     r"^space\.dropout: also set under fixed"),
    ("dropout domain", spec_with(space={"dropout": [0.1, 1.0]}),
     r"^space\.dropout\[1\]: dropout must be in \[0, 1\), got 1\.0$"),
    ("learning_rate domain", spec_with(fixed={"learning_rate": 0}),
     r"^fixed\.learning_rate: learning_rate must be > 0, got 0$"),
    ("momentum domain", spec_with(space={"momentum": {"low": 0.5, "high": 1.0}}),
     r"^space\.momentum\.high: momentum must be in \[0, 1\), got 1\.0$"),
    ("l2 negative", spec_with(fixed={"l2": -1e-3}), r"^fixed\.l2: l2 must be >= 0, got -0\.001$"),
    ("eps zero", spec_with(fixed={"eps": 0.0}), r"^fixed\.eps: eps must be > 0, got 0\.0$"),
    ("depth negative", spec_with(fixed={"depth": -1}), r"^fixed\.depth: depth must be in \[0, 64\], got -1$"),
    ("width zero", spec_with(space={"width": [0, 8]}),
     r"^space\.width\[0\]: width must be in \[1, 65536\], got 0$"),
    ("width fractional", spec_with(fixed={"width": 6.5}), r"^fixed\.width: width is an integer, got 6\.5$"),
    ("number as string", spec_with(fixed={"l2": "1e-3"}),
     r"^fixed\.l2: expected a number, got '1e-3'$"),
    ("bool as number", spec_with(fixed={"epochs": True}), r"^fixed\.epochs: expected a number, got True$"),
    ("choice not a string", spec_with(fixed={"norm": 3}), r"^fixed\.norm: expected one of .*got 3$"),
    ("int range fractional", spec_with(space={"depth": {"low": 1.5, "high": 3}}),
     r"^space\.depth\.low: an int range needs integers, got 1\.5$"),
    ("int hparam float type", spec_with(space={"depth": {"low": 1, "high": 3, "type": "float"}}),
     r"^space\.depth\.type: depth is an integer; type must be int, got 'float'$"),
    ("range for categorical", spec_with(space={"activation": {"low": 0, "high": 1}}),
     r"^space\.activation: activation is categorical; give a list of choices"),
    ("scalar in space", spec_with(space={"dropout": 0.1}),
     r"^space\.dropout: expected a list of values or a range .*got 0\.1; put a single value under fixed$"),
    ("list in fixed", spec_with(fixed={"width": [1, 2]}),
     r"^fixed\.width: expected a single value, got \[1, 2\]; put lists and ranges under space$"),
    ("duplicate list value", spec_with(space={"width": [64, 64]}),
     r"^space\.width\[1\]: duplicate value 64$"),
    ("step with log", spec_with(space={"l2": {"low": 1e-5, "high": 1e-2, "log": True, "step": 1e-5}}),
     r"^space\.l2: `step` and `log` cannot be combined, got step=1e-05$"),
    ("step not dividing", spec_with(space={"dropout": {"low": 0.0, "high": 0.5, "step": 0.2}}),
     r"^space\.dropout: \(high - low\) must be a multiple of step, got low=0\.0, high=0\.5, step=0\.2$"),
    ("step zero", spec_with(space={"dropout": {"low": 0.0, "high": 0.5, "step": 0}}),
     r"^space\.dropout\.step: must be > 0, got 0$"),
    ("unknown range key", spec_with(space={"dropout": {"low": 0.0, "hihg": 0.5}}),
     r"^space\.dropout\.hihg: unknown key; did you mean 'high'\?$"),
    ("range missing high", spec_with(space={"dropout": {"low": 0.0}}),
     r"^space\.dropout\.high: required$"),
    ("bad range type", spec_with(space={"dropout": {"low": 0.0, "high": 0.5, "type": "double"}}),
     r"^space\.dropout\.type: .*got 'double'$"),
    ("bad source", spec_with(data={"source": "feather:x.ft"}),
     r"^data\.source: expected sklearn:<.*got 'feather:x\.ft'$"),
    ("sklearn typo", spec_with(data={"source": "sklearn:irsi"}),
     r"^data\.source: unknown sklearn data set 'irsi'; did you mean 'iris'\?$"),
    ("csv without target", spec_with(data={"source": "csv:x.csv"}),
     r"^data\.target: a csv source needs target: COLUMN$"),
    ("target for sklearn", spec_with(data={"source": "sklearn:iris", "target": "y"}),
     r"^data\.target: only a csv or parquet source takes a target column"),
    ("task typo", spec_with(data={"source": "npz:x.npz", "task": "multiclas"}),
     r"^data\.task: unknown task 'multiclas'; did you mean 'multiclass'\?$"),
    ("task contradicts sklearn", spec_with(data={"source": "sklearn:iris", "task": "binary"}),
     r"^data\.task: sklearn:iris is a multiclass data set, got task 'binary'$"),
    ("not a mapping", ["name", "t"], r"^spec: expected a mapping"),
    # Sizes that cannot run (docs/decisions.md, "Limits").
    ("epochs past int32", spec_with(fixed={"epochs": 1_000_000_000_000}),
     r"^fixed\.epochs: epochs must be in \[1, 100000\], got 1000000000000$"),
    ("width past the limit", spec_with(space={"width": [64, 65_537]}),
     r"^space\.width\[1\]: width must be in \[1, 65536\], got 65537$"),
    ("depth range past the limit", spec_with(space={"depth": {"low": 1, "high": 65}}),
     r"^space\.depth\.high: depth must be in \[0, 64\], got 65$"),
    ("batch_size past the limit", spec_with(fixed={"batch_size": 2**24 + 1}),
     r"^fixed\.batch_size: batch_size must be in \[1, 16777216\], got 16777217$"),
    ("trials past the limit", spec_with(search={"trials": 1_000_001}),
     r"^search\.trials: trials must be in \[1, 1000000\], got 1000001$"),
    ("batch past the limit", spec_with(search={"batch": 4097}),
     r"^search\.batch: batch must be in \[1, 4096\], got 4097$"),
    ("negative seed", spec_with(search={"seed": -1}),
     r"^search\.seed: seed must be in \[0, 4294967295\], got -1$"),
    ("cv seed past uint32", spec_with(cv={"seed": 2**32}),
     r"^cv\.seed: seed must be in \[0, 4294967295\], got 4294967296$"),
    ("grid too large", spec_with(search={"method": "grid"}, space={
        "learning_rate": {"low": 0.001, "high": 1.0, "step": 0.001},
        "width": {"low": 1, "high": 2000}}),
     r"^space: a grid of 2000000 points is more than the 1000000 trials a sweep can run"),
    ("grid astronomically large", spec_with(search={"method": "grid"}, space={
        "dropout": {"low": 0.0, "high": 0.5, "step": 1e-300}}),
     r"^space: a grid of about 10\^299 points is more than"),
    ("int past float64", spec_with(fixed={"l2": 10**400}),
     r"^fixed\.l2: must be finite, got an integer of about 401 digits$"),
    ("range bound past float64", spec_with(space={"l2": {"low": 0, "high": -(10**400)}}),
     r"^space\.l2\.high: must be finite, got a negative integer of about 401 digits$"),
    ("range with too many steps", spec_with(space={
        "l2": {"low": -1e308, "high": 1e308, "step": 1e-300}}),
     r"^space\.l2: the range holds too many steps"),
    ("min_delta past float64", spec_with(search={"early_stopping": {"patience": 2,
                                                                     "min_delta": 10**400}}),
     r"^search\.early_stopping\.min_delta: must be a finite number >= 0, got an integer"),
]


@pytest.mark.parametrize("mapping, pattern", [c[1:] for c in BAD_SPECS],
                         ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_one_line_message(mapping, pattern):
    with pytest.raises(SpecError, match=pattern) as info:
        parse_spec(mapping)
    assert "\n" not in str(info.value)


GOOD_SPEC = {
    "name": "digits-mlp",
    "data": {"source": "sklearn:digits", "task": "multiclass"},
    "cv": {"folds": 3, "seed": 1},
    "search": {"method": "tpe", "trials": 60, "batch": 16, "seed": 0, "pruner": "median"},
    "metric": "log_loss",
    "fixed": {"epochs": 30, "clip_norm": math.inf, "init": "he"},
    "space": {
        "learning_rate": {"low": 1.0e-4, "high": 1.0e-1, "log": True},
        "batch_size": [32, 64, 128],
        "l2": {"low": 1.0e-6, "high": 1.0e-2, "log": True},
        "dropout": {"low": 0, "high": 0.5},
        "depth": {"low": 1, "high": 3},
        "width": {"low": 32, "high": 256, "log": True},
        "optimizer": ["sgd", "momentum", "adam", "rmsprop"],
        "activation": ["relu", "tanh", "leaky_relu"],
        "decay_epochs": {"low": 2, "high": 10, "type": "int"},
    },
}


def test_good_spec_types():
    s = parse_spec(GOOD_SPEC)
    assert isinstance(s, SweepSpec)
    assert s.metric == "log_loss" and s.greater_is_better is False
    assert s.space["depth"] == Range(low=1, high=3, type="int")
    assert isinstance(s.space["depth"].low, int)
    assert s.space["dropout"] == Range(low=0.0, high=0.5, type="float")
    assert isinstance(s.space["dropout"].low, float)
    assert s.space["width"].type == "int" and s.space["width"].log
    assert s.space["decay_epochs"].type == "int"
    assert s.space["batch_size"] == (32, 64, 128)
    assert s.fixed == {"epochs": 30, "clip_norm": math.inf, "init": "he"}
    with pytest.raises(Exception):
        s.name = "other"  # frozen


def test_defaults_and_metric_default():
    s = parse_spec(BASE)
    assert (s.cv.folds, s.cv.stratified, s.cv.shuffle, s.cv.seed) == (5, True, True, 0)
    assert (s.search.method, s.search.trials, s.search.batch, s.search.seed,
            s.search.pruner.kind, s.search.early_stopping) == ("tpe", None, 16, 0, "none", None)
    assert s.metric == "accuracy" and s.greater_is_better
    assert parse_spec(spec_with(data={"source": "sklearn:diabetes"})).metric == "r2"
    assert parse_spec(spec_with(data={"source": "sklearn:breast_cancer"})).task == "binary"


def test_metric_checked_once_task_known():
    s = parse_spec({"name": "t", "data": {"source": "npz:x.npz"}, "metric": "rmse"})
    assert s.metric == "rmse" and s.task is None
    assert s.check_metric("regression") == "rmse"
    with pytest.raises(SpecError, match=r"^metric: 'rmse' does not fit task 'binary'"):
        s.check_metric("binary")
    u = parse_spec({"name": "t", "data": {"source": "npz:x.npz"}})
    assert u.metric is None
    with pytest.raises(SpecError, match=r"^metric: unknown until the task is known"):
        u.greater_is_better
    assert u.check_metric("multilabel") == "accuracy"
    r = u.with_task("regression")
    assert (r.metric, r.data.task, r.greater_is_better) == ("r2", "regression", True)
    with pytest.raises(SpecError, match=r"^data\.task: the spec says 'regression', the data is"):
        r.check_metric("binary")


@pytest.mark.parametrize("mapping", [GOOD_SPEC, BASE, {
    "name": "g", "data": {"source": "csv:sub/d.csv", "target": "y", "categorical": ["c"]},
    "search": {"method": "grid"},
    "space": {"dropout": {"low": 0.0, "high": 0.5, "step": 0.1}, "width": [8, 16]}}])
def test_round_trip(mapping, tmp_path):
    s = parse_spec(mapping, base_dir=tmp_path)
    text = s.to_yaml()
    back = parse_spec(yaml.safe_load(text))
    assert back.fingerprint() == s.fingerprint()
    assert back == s
    assert parse_yaml(text) == s


def test_fingerprint_ignores_trials_and_batch_only():
    s = parse_spec(GOOD_SPEC)
    same = copy.deepcopy(GOOD_SPEC)
    same["search"].update(trials=100, batch=4)
    assert parse_spec(same).fingerprint() == s.fingerprint()
    assert parse_spec(same).diff(s) == []
    other = copy.deepcopy(GOOD_SPEC)
    other["space"]["width"]["high"] = 512
    assert parse_spec(other).fingerprint() != s.fingerprint()
    assert parse_spec(other).diff(s) == ["space.width.high"]
    # 0 and 0.0 for a float hyperparameter are the same spec
    a = parse_spec(spec_with(fixed={"l2": 0}))
    b = parse_spec(spec_with(fixed={"l2": 0.0}))
    assert a.fingerprint() == b.fingerprint()


def test_grid_points():
    s = parse_spec(spec_with(search={"method": "grid"}, space={
        "learning_rate": [1e-3, 1e-2],
        "width": {"low": 32, "high": 128, "step": 32},
        "depth": {"low": 0, "high": 2},
        "dropout": {"low": 0.0, "high": 0.3, "step": 0.1},
        "activation": ["relu", "tanh"],
    }))
    g = grid_points(s)
    assert g == {
        "learning_rate": [1e-3, 1e-2],
        "width": [32, 64, 96, 128],
        "depth": [0, 1, 2],
        "dropout": [0.0, 0.1, 0.2, 0.3],
        "activation": ["relu", "tanh"],
    }
    assert all(type(v) is int for v in g["width"] + g["depth"])
    assert grid_size(s) == 2 * 4 * 3 * 4 * 2


def test_grid_points_rejects_continuous_range():
    s = parse_spec(spec_with(space={"dropout": {"low": 0.0, "high": 0.5}}))  # tpe: fine
    with pytest.raises(SpecError, match=r"^space\.dropout: a grid needs a list or a range with step$"):
        grid_points(s)


def test_every_models_hparam_is_known():
    structural = {"depth", "width", "batch_size", "epochs", "activation", "norm",
                  "optimizer", "init", "schedule"}
    assert set(HPARAMS) == structural | set(hp.NUMERIC_DEFAULTS)
    # every default value of models.hparams is itself a valid fixed value
    for name, value in hp.NUMERIC_DEFAULTS.items():
        parse_spec(spec_with(fixed={name: value}))
    for name, choices in [("activation", hp.ACTIVATIONS), ("norm", hp.NORMS),
                          ("optimizer", hp.OPTIMIZERS), ("schedule", hp.SCHEDULES),
                          ("init", hp.INITS + tuple(hp.INIT_ALIASES))]:
        assert parse_spec(spec_with(space={name: list(choices)})).space[name] == tuple(choices)


def test_relative_paths_resolve_against_spec_folder(tmp_path, monkeypatch):
    sub = tmp_path / "specs"
    sub.mkdir()
    (sub / "s.yaml").write_text(
        "name: t\ndata: {source: 'csv:data/train.csv', target: y}\n"
        "space:\n  learning_rate: {low: 1e-4, high: 1e-1, log: true}\n")
    monkeypatch.chdir(tmp_path)
    s = load_spec("specs/s.yaml")
    assert s.data.source == f"csv:{sub / 'data' / 'train.csv'}"
    assert os.path.isabs(s.data.path)
    # 1e-4 without a dot is a float, not the string YAML 1.1 would make of it
    assert s.space["learning_rate"].low == 1e-4
    abs_src = f"npz:{tmp_path / 'a.npz'}"
    assert parse_spec(spec_with(data={"source": abs_src}), base_dir=sub).data.source == abs_src
    assert parse_spec(spec_with(data={"source": "npz:a.npz"})).data.source == abs_src  # cwd


@pytest.mark.parametrize("text, pattern", [
    ("name: t\ndata: {source: sklearn:iris\n", r"invalid YAML at line \d+, column \d+"),
    ("name: t\ndata: {source: sklearn:iris}\nspace:\n  width: [1]\n  width: [2]\n",
     r"invalid YAML at line 5, column 3: duplicate key 'width'"),
    ("", r"^spec: expected a mapping"),
    ("- a\n- b\n", r"^spec: expected a mapping"),
])
def test_load_spec_yaml_problems(tmp_path, text, pattern):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(SpecError, match=pattern) as info:
        load_spec(p)
    assert "\n" not in str(info.value)


def test_load_spec_missing_file(tmp_path):
    with pytest.raises(SpecError, match=r"spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_parse_data_spec_prefixes_errors():
    with pytest.raises(SpecError, match=r"^data\.source: required$"):
        parse_data_spec({})
    with pytest.raises(SpecError, match=r"^data\.categorical: only a csv or parquet source"):
        parse_data_spec({"source": "sklearn:iris", "categorical": ["a"]})


def test_digits_grid_file():
    s = load_spec(REPO / "search_spaces" / "digits_grid.yaml")
    assert s.data.source == "sklearn:digits" and s.task == "multiclass"
    assert (s.cv.folds, s.cv.stratified, s.cv.shuffle, s.cv.seed) == (5, True, True, 0)
    assert (s.search.method, s.search.batch) == ("grid", 18)
    assert s.metric == "accuracy"
    assert s.fixed == {"depth": 1, "activation": "relu", "optimizer": "adam",
                       "batch_size": 64, "epochs": 30}
    assert grid_points(s) == {"learning_rate": [1e-3, 3e-3, 1e-2],
                              "l2": [1e-5, 1e-4, 1e-3], "width": [64, 128]}
    assert grid_size(s) == 18


def test_limits_come_from_the_models_table():
    # The spec holds no limits of its own for hyperparameters: models.hparams has them.
    assert parse_spec(spec_with(fixed={"epochs": hp.MAX_EPOCHS, "width": hp.MAX_WIDTH,
                                       "depth": hp.MAX_DEPTH,
                                       "batch_size": hp.MAX_BATCH_SIZE})).fixed["epochs"] \
        == hp.MAX_EPOCHS
    for name in ("epochs", "width", "depth", "batch_size"):
        assert hp.HPARAMS[name].domain.hi == getattr(hp, f"MAX_{name.upper()}")
    s = parse_spec(spec_with(search={"trials": 1_000_000, "batch": 4096, "seed": 2**32 - 1},
                             cv={"seed": 2**32 - 1}))
    assert (s.search.trials, s.search.batch, s.search.seed) == (1_000_000, 4096, 2**32 - 1)


@pytest.mark.parametrize("text, pattern", [
    ("name: t\ndata: {source: sklearn:iris}\nfixed: {epochs: 1" + "0" * 5000 + "}\n",
     r"invalid YAML: Exceeds the limit"),
    ("name: 2024-02-30\n", r"invalid YAML: day is out of range for month"),
    ("{[a]: 1}\n", r"invalid YAML at line 1, column 2: found unhashable key"),
    ("[" * 3000 + "]" * 3000 + "\n", r"invalid YAML: maximum recursion depth exceeded"),
], ids=["int-of-5001-digits", "no-such-date", "unhashable-key", "deep-nesting"])
def test_yaml_the_loader_cannot_build_is_bad_input(tmp_path, text, pattern):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(SpecError, match=pattern) as info:
        load_spec(p)
    assert "\n" not in str(info.value)


def test_empty_fixed_and_space_sections():
    s = parse_yaml("name: t\ndata: {source: sklearn:iris}\nfixed:\nspace:\n")
    assert s.fixed == {} and s.space == {}



@settings(max_examples=60, deadline=None)
@given(low=st.floats(1e-8, 1e3), span=st.floats(0, 1e3), log=st.booleans(),
       width=st.lists(st.integers(1, 4096), min_size=1, max_size=6, unique=True))
def test_round_trip_property(low, span, log, width):
    s = parse_spec(spec_with(space={"learning_rate": {"low": low, "high": low + span, "log": log},
                                    "width": width}))
    back = parse_yaml(s.to_yaml())
    assert back == s and back.fingerprint() == s.fingerprint()
