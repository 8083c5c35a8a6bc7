"""tuner.data: every source, encodings, task inference and every rejection."""

from __future__ import annotations

import numpy as np
import pytest

from tuner.inputs.data import Dataset, check_folds, from_arrays, load_data
from tuner.errors import DataError, SpecError
from tuner.inputs.spec import parse_spec


@pytest.mark.parametrize("name, task, shape, n_outputs", [
    ("iris", "multiclass", (150, 4), 3),
    ("wine", "multiclass", (178, 13), 3),
    ("breast_cancer", "binary", (569, 30), 1),
    ("digits", "multiclass", (1797, 64), 10),
    ("diabetes", "regression", (442, 10), 1),
])
def test_sklearn_sources(name, task, shape, n_outputs):
    ds = load_data({"source": f"sklearn:{name}"})
    assert isinstance(ds, Dataset)
    assert (ds.task, ds.X.shape, ds.n_outputs) == (task, shape, n_outputs)
    assert ds.X.dtype == np.float32 and len(ds.feature_names) == shape[1]
    if task == "regression":
        assert ds.y.dtype == np.float32 and ds.classes is None
    else:
        assert ds.y.dtype == np.int32 and len(ds.classes) == max(n_outputs, 2)
        assert set(np.unique(ds.y)) == set(range(len(ds.classes)))
    assert not ds.X.flags.writeable and not ds.y.flags.writeable


def test_sklearn_class_names():
    ds = load_data({"source": "sklearn:iris"})
    assert list(ds.classes) == ["setosa", "versicolor", "virginica"]


def write_csv(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_string_labels_sorted(tmp_path):
    write_csv(tmp_path, "a,b,label\n1,2,dog\n3,4,cat\n5,6,emu\n7,8,cat\n")
    ds = load_data({"source": "csv:d.csv", "target": "label"}, base_dir=tmp_path)
    assert ds.task == "multiclass" and ds.n_outputs == 3
    assert list(ds.classes) == ["cat", "dog", "emu"]
    assert ds.y.tolist() == [1, 0, 2, 0]
    assert ds.feature_names == ("a", "b")
    np.testing.assert_array_equal(ds.X, [[1, 2], [3, 4], [5, 6], [7, 8]])


def test_csv_via_spec_resolves_against_spec_folder(tmp_path):
    write_csv(tmp_path, "x,y\n1,0.5\n2,1.5\n3,2.0\n")
    spec = parse_spec({"name": "t", "data": {"source": "csv:d.csv", "target": "y"}},
                      base_dir=tmp_path)
    ds = load_data(spec.data)
    assert ds.task == "regression" and ds.y.dtype == np.float32
    np.testing.assert_allclose(ds.y, [0.5, 1.5, 2.0])


def test_csv_one_hot_categorical(tmp_path):
    write_csv(tmp_path, "city,age,size,y\nParis,30,S,0\nOslo,40,M,1\nParis,50,L,1\nRome,20,S,0\n")
    ds = load_data({"source": "csv:d.csv", "target": "y", "categorical": ["city", "size"]},
                   base_dir=tmp_path)
    # numeric columns first, then one-hot columns (scikit-learn's names), levels sorted
    assert ds.feature_names == ("age", "city_Oslo", "city_Paris", "city_Rome",
                                "size_L", "size_M", "size_S")
    np.testing.assert_array_equal(ds.X, [
        [30, 0, 1, 0, 0, 0, 1],
        [40, 1, 0, 0, 0, 1, 0],
        [50, 0, 1, 0, 1, 0, 0],
        [20, 0, 0, 1, 0, 0, 1],
    ])
    assert ds.task == "binary" and ds.n_outputs == 1


def test_csv_one_hot_is_deterministic_in_row_order(tmp_path):
    write_csv(tmp_path, "c,y\nb,0\na,1\nc,0\n", "one.csv")
    write_csv(tmp_path, "c,y\nc,0\nb,0\na,1\n", "two.csv")
    one = load_data({"source": "csv:one.csv", "target": "y", "categorical": ["c"]},
                    base_dir=tmp_path)
    two = load_data({"source": "csv:two.csv", "target": "y", "categorical": ["c"]},
                    base_dir=tmp_path)
    assert one.feature_names == two.feature_names == ("c_a", "c_b", "c_c")


def test_npz_source(tmp_path):
    X = np.arange(12, dtype=np.float64).reshape(6, 2)
    y = np.array([0, 1, 0, 1, 1, 0])
    np.savez(tmp_path / "d.npz", X=X, y=y, feature_names=np.array(["p", "q"]))
    ds = load_data({"source": "npz:d.npz"}, base_dir=tmp_path)
    assert ds.task == "binary" and ds.feature_names == ("p", "q")
    np.testing.assert_array_equal(ds.X, X.astype(np.float32))
    np.testing.assert_array_equal(ds.y, y)


def test_npz_multilabel(tmp_path):
    y = np.array([[0, 1], [1, 0], [1, 1], [0, 0]])
    np.savez(tmp_path / "d.npz", X=np.ones((4, 3)), y=y)
    ds = load_data({"source": "npz:d.npz"}, base_dir=tmp_path)
    assert ds.task == "multilabel" and ds.n_outputs == 2 and ds.y.shape == (4, 2)
    assert ds.feature_names == ("x0", "x1", "x2")


# target, given task -> inferred task, n_outputs
INFERENCE = [
    ("float", np.array([0.1, 0.2, 0.3, 0.4]), None, "regression", 1),
    ("float integral", np.array([0.0, 1.0, 0.0, 1.0]), None, "regression", 1),
    ("int 2 classes", np.array([3, 7, 3, 7]), None, "binary", 1),
    ("int 3 classes", np.array([0, 1, 2, 0]), None, "multiclass", 3),
    ("bool", np.array([True, False, True, False]), None, "binary", 1),
    ("strings", np.array(["a", "b", "c", "a"]), None, "multiclass", 3),
    ("object strings", np.array(["yes", "no", "no", "yes"], dtype=object), None, "binary", 1),
    ("2-D 0/1 int", np.array([[0, 1], [1, 0], [1, 1], [0, 0]]), None, "multilabel", 2),
    ("2-D 0/1 float", np.array([[0.0, 1], [1, 0], [1, 1], [0, 0]]), None, "multilabel", 2),
    ("2-D float", np.array([[0.5, 1], [1, 2], [3, 1], [0, 0]]), None, "regression", 2),
    ("2-D one column", np.array([[1], [0], [1], [0]]), None, "binary", 1),
    ("given regression on ints", np.array([1, 5, 9, 2]), "regression", "regression", 1),
    ("given binary on floats", np.array([0.0, 1.0, 1.0, 0.0]), "binary", "binary", 1),
    ("given multiclass on 2 classes", np.array([0, 1, 1, 0]), "multiclass", "multiclass", 2),
    ("given regression 2-D 0/1", np.array([[0, 1], [1, 0], [1, 1], [0, 0]]), "regression",
     "regression", 2),
]


@pytest.mark.parametrize("y, task, expected, n_outputs", [c[1:] for c in INFERENCE],
                         ids=[c[0] for c in INFERENCE])
def test_task_inference(y, task, expected, n_outputs):
    ds = from_arrays(np.arange(8.0).reshape(4, 2), y, task=task)
    assert (ds.task, ds.n_outputs) == (expected, n_outputs)
    if expected in ("binary", "multiclass"):
        assert ds.y.dtype == np.int32 and ds.y.ndim == 1
    else:
        assert ds.y.dtype == np.float32


X4 = np.arange(8.0).reshape(4, 2)

# (case id, callable raising DataError, regex)
REJECTIONS = [
    ("inf feature", lambda: from_arrays(np.array([[1.0, np.nan], [2, np.inf], [3, 1], [4, 1]]),
                                        [0, 1, 0, 1], feature_names=["a", "age"]),
     r"^data: feature 'age' has 1 infinite values$"),
    ("nan target", lambda: from_arrays(X4, [0.1, np.nan, 0.2, 0.3]), r"^target has 1 NaN/inf values$"),
    ("none in string target", lambda: from_arrays(X4, np.array(["a", None, "b", "a"], dtype=object)),
     r"^target has 1 missing values$"),
    ("single class", lambda: from_arrays(X4, [1, 1, 1, 1]), r"^the target has a single class 1"),
    ("length mismatch", lambda: from_arrays(X4, [0, 1, 0]),
     r"^X and y lengths differ: X has 4 rows, y has 3$"),
    ("empty", lambda: from_arrays(np.zeros((0, 2)), np.zeros(0)), r"^the data has no rows$"),
    ("no features", lambda: from_arrays(np.zeros((3, 0)), [0, 1, 0]), r"^the data has no feature columns$"),
    ("1-D X", lambda: from_arrays(np.zeros(3), [0, 1, 0]), r"^X must be 2-D \[n, d\], got shape \(3,\)$"),
    ("binary with 3 classes", lambda: from_arrays(X4, [0, 1, 2, 0], task="binary"),
     r"^data\.task: binary needs 2 classes, the target has 3: \[0, 1, 2\]$"),
    ("classification of non-integers", lambda: from_arrays(X4, [0.5, 1, 2, 0], task="multiclass"),
     r"^data\.task: multiclass needs class labels, the target has non-integer values"),
    ("regression on strings", lambda: from_arrays(X4, ["a", "b", "a", "b"], task="regression"),
     r"^data\.task: regression needs a numeric target"),
    ("multilabel 1-D", lambda: from_arrays(X4, [0, 1, 0, 1], task="multilabel"),
     r"^data\.task: multilabel needs a 2-D target"),
    ("multilabel not 0/1", lambda: from_arrays(X4, [[0, 2], [1, 0], [1, 1], [0, 0]], task="multilabel"),
     r"^data\.task: multilabel needs a target of 0/1 values$"),
    ("multilabel constant column", lambda: from_arrays(X4, [[0, 1], [1, 1], [1, 1], [0, 1]]),
     r"^label column 1 has a single value"),
    ("2-D int not 0/1", lambda: from_arrays(X4, [[0, 2], [1, 0], [1, 1], [0, 0]]),
     r"^a 2-D target must be 0/1 labels .*set data\.task$"),
    ("binary 2-D", lambda: from_arrays(X4, [[0, 1], [1, 0], [1, 1], [0, 0]], task="binary"),
     r"^data\.task: binary needs a 1-D target"),
    ("arrays source", lambda: load_data({"source": "arrays"}), r"^data\.source: 'arrays' means in-memory"),
]


@pytest.mark.parametrize("make, pattern", [c[1:] for c in REJECTIONS], ids=[c[0] for c in REJECTIONS])
def test_rejections(make, pattern):
    with pytest.raises(DataError, match=pattern) as info:
        make()
    assert "\n" not in str(info.value)


CSV_REJECTIONS = [
    ("missing target column", "a,b\n1,2\n3,4\n", {"target": "lable"},
     r"^data\.target: column 'lable' not in .*d\.csv"),
    ("missing categorical column", "a,y\n1,0\n2,1\n", {"target": "y", "categorical": ["b"]},
     r"^data\.categorical: column 'b' not in"),
    ("inf feature", "age,y\n1,0\ninf,1\n3,0\n", {"target": "y"},
     r"^data: column 'age' has 1 infinite values$"),
    ("nan target", "a,y\n1,0\n2,\n3,1\n", {"target": "y"},
     r"^data\.target: column 'y' has 1 missing values; drop those rows first$"),
    ("all missing", "a,b,y\n1,,0\n2,,1\n", {"target": "y"},
     r"^data: column 'b' has no values"),
    ("missing: error", "a,y\n1,0\n,1\n3,0\n", {"target": "y", "missing": "error"},
     r"^data: column 'a' has 1 missing values \(data\.missing: error"),
    ("missing features column", "a,y\n1,0\n2,1\n", {"target": "y", "features": ["b"]},
     r"^data\.features: column 'b' not in"),
    ("empty file", "", {"target": "y"}, r"^data\.source: cannot read csv file"),
    ("header only", "a,y\n", {"target": "y"}, r"^data\.source: csv file .* has no rows$"),
]


@pytest.mark.parametrize("text, extra, pattern", [c[1:] for c in CSV_REJECTIONS],
                         ids=[c[0] for c in CSV_REJECTIONS])
def test_csv_rejections(tmp_path, text, extra, pattern):
    write_csv(tmp_path, text)
    with pytest.raises(DataError, match=pattern) as info:
        load_data({"source": "csv:d.csv", **extra}, base_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match=r"^data\.source: csv file not found: .*nope\.csv$"):
        load_data({"source": "csv:nope.csv", "target": "y"}, base_dir=tmp_path)
    with pytest.raises(DataError, match=r"^data\.source: npz file not found"):
        load_data({"source": "npz:nope.npz"}, base_dir=tmp_path)


def test_npz_without_y(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((3, 2)), target=np.zeros(3))
    with pytest.raises(DataError, match=r"has no array 'y'; it has \['X', 'target'\]$"):
        load_data({"source": "npz:d.npz"}, base_dir=tmp_path)


def test_bad_data_mapping_is_spec_error():
    with pytest.raises(SpecError, match=r"^data\.target: a csv source needs target"):
        load_data({"source": "csv:x.csv"})


def test_check_folds():
    ds = from_arrays(np.arange(14.0).reshape(7, 2), ["a", "a", "a", "a", "b", "b", "b"])
    check_folds(ds, 3, stratified=True)
    with pytest.raises(DataError, match=r"^cv\.folds: class 'b' has 3 samples, fewer than the 4 folds$"):
        check_folds(ds, 4, stratified=True)
    check_folds(ds, 4, stratified=False)
    with pytest.raises(DataError, match=r"^cv\.folds: 8 folds need at least 8 samples, the data has 7$"):
        check_folds(ds, 8, stratified=False)


def test_fingerprint():
    a = from_arrays(X4, [0, 1, 0, 1])
    assert a.fingerprint() == from_arrays(X4.copy(), [0, 1, 0, 1]).fingerprint()
    assert a.fingerprint() != from_arrays(X4, [1, 0, 0, 1]).fingerprint()
    assert a.fingerprint() != from_arrays(X4 + 1, [0, 1, 0, 1]).fingerprint()
    assert a.fingerprint() != from_arrays(X4, [0, 1, 0, 1], task="multiclass").fingerprint()
