"""Child process: the same W2 configurations trained with scikit-learn (same-work check).

Reads a JSON list of configs (learning_rate, l2, width, depth, activation in
relu|tanh|sigmoid, optimizer in adam|momentum, batch_size; optional epochs (30) and
momentum (0.9)) and scores each with 5-fold CV on digits, 2 jobs.

    python benchmarks/_w2_replay.py CONFIGS.json    # prints one JSON line
"""

import json
import sys
import time
import warnings

T0 = time.perf_counter()

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import StratifiedKFold, cross_val_score  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

warnings.filterwarnings("ignore", category=ConvergenceWarning)
X, y = load_digits(return_X_y=True)
CV = StratifiedKFold(5, shuffle=True, random_state=0)


def score(c: dict) -> float:
    batch = int(c["batch_size"])
    mlp = MLPClassifier(
        hidden_layer_sizes=(int(c["width"]),) * int(c["depth"]),
        activation={"sigmoid": "logistic"}.get(c["activation"], c["activation"]),
        solver="adam" if c["optimizer"] == "adam" else "sgd",
        momentum=float(c.get("momentum", 0.9)), nesterovs_momentum=False,
        learning_rate_init=float(c["learning_rate"]),
        # sklearn's penalty is 0.5 * alpha * sum W^2 divided by the minibatch rows; the
        # tuner's l2 is added to the mean batch loss undivided: alpha = l2 * batch_size.
        alpha=float(c["l2"]) * batch, batch_size=batch,
        max_iter=int(c.get("epochs", 30)), n_iter_no_change=10**9, tol=0.0,
        random_state=0)
    return cross_val_score(make_pipeline(StandardScaler(), mlp), X, y, cv=CV,
                           n_jobs=2).mean()


with open(sys.argv[1]) as f:
    configs = json.load(f)
scores = [score(c) for c in configs]
print(json.dumps({"wall_s": time.perf_counter() - T0, "best_cv_accuracy": max(scores),
                  "configs": len(configs)}))
