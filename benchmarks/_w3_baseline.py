"""Child process: W3 with scikit-learn GridSearchCV (the baseline).

A 2 x 2 x 2 grid (learning rate x l2 x activation) of width-256, depth-2 Adam MLPs,
batch 256, 3-fold stratified CV, 2 jobs: 24 fits of EPOCHS full epochs each.

    python benchmarks/_w3_baseline.py DATA.npz EPOCHS    # prints one JSON line
    python benchmarks/_w3_baseline.py make DATA.npz ROWS # writes the W3 data set
"""

import json
import sys
import time
import warnings

T0 = time.perf_counter()

import numpy as np  # noqa: E402


def make_data(path: str, rows: int) -> None:
    """The W3 data: 50 features (30 informative), 4 classes; X float32, y int64."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=rows, n_features=50, n_informative=30,
                               n_classes=4, random_state=0)
    np.savez(path, X=X.astype(np.float32), y=y.astype(np.int64))


def main(path: str, epochs: int) -> None:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    with np.load(path) as data:
        X, y = data["X"], data["y"]
    batch = 256
    mlp = MLPClassifier(hidden_layer_sizes=(256, 256), solver="adam", batch_size=batch,
                        max_iter=epochs, n_iter_no_change=10**9, tol=0.0,
                        early_stopping=False, random_state=0)
    # sklearn's penalty is 0.5 * alpha * sum W^2 divided by the minibatch rows; the
    # tuner's l2 is added to the mean batch loss undivided, so alpha = l2 * batch_size.
    grid = {"mlpclassifier__learning_rate_init": [1e-3, 3e-3],
            "mlpclassifier__alpha": [l2 * batch for l2 in (1e-5, 1e-4)],
            "mlpclassifier__activation": ["relu", "tanh"]}
    # refit=False: the 24 CV fits only, no 25th fit of the best on all rows.
    search = GridSearchCV(make_pipeline(StandardScaler(), mlp), grid,
                          cv=StratifiedKFold(3, shuffle=True, random_state=0), n_jobs=2,
                          scoring="accuracy", refit=False)
    search.fit(X, y)
    fits = len(search.cv_results_["params"]) * search.n_splits_
    print(json.dumps({"wall_s": time.perf_counter() - T0,
                      "best_cv_accuracy": float(search.best_score_), "fits": fits}))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make_data(sys.argv[2], int(sys.argv[3]))
    else:
        main(sys.argv[1], int(sys.argv[2]))
