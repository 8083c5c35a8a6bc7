"""Child process: W2 with Optuna TPE + scikit-learn (the baseline of w2_tpe.py)."""

import json
import sys
import time
import warnings

T0 = time.perf_counter()

import optuna  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import StratifiedKFold, cross_val_score  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

warnings.filterwarnings("ignore", category=ConvergenceWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)
X, y = load_digits(return_X_y=True)
CV = StratifiedKFold(5, shuffle=True, random_state=0)


def objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
    l2 = trial.suggest_float("l2", 1e-6, 1e-2, log=True)
    width = trial.suggest_categorical("width", [32, 64, 128, 256])
    depth = trial.suggest_categorical("depth", [1, 2, 3])
    act = trial.suggest_categorical("activation", ["relu", "tanh", "sigmoid"])
    opt = trial.suggest_categorical("optimizer", ["adam", "momentum"])
    batch = trial.suggest_categorical("batch_size", [32, 64, 128])
    mlp = MLPClassifier(
        hidden_layer_sizes=(width,) * depth,
        activation={"sigmoid": "logistic"}.get(act, act),
        solver="adam" if opt == "adam" else "sgd", momentum=0.9, nesterovs_momentum=False,
        learning_rate_init=lr, alpha=l2, batch_size=batch, max_iter=30,
        n_iter_no_change=1000, tol=0.0, random_state=0)
    return cross_val_score(make_pipeline(StandardScaler(), mlp), X, y, cv=CV, n_jobs=2).mean()


trials = int(sys.argv[1]) if len(sys.argv) > 1 else 48
study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
study.optimize(objective, n_trials=trials)
print(json.dumps({"wall_s": time.perf_counter() - T0, "best_cv_accuracy": study.best_value}))
