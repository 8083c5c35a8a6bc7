"""Child process: W4 as an Optuna user writes it today (TPE + Hyperband + scikit-learn).

64 TPE trials, 2 at a time, each training one MLPClassifier per fold of a 3-fold CV in
lockstep with ``partial_fit`` (one epoch per call, at most 30), reporting the fold-mean
validation accuracy after every epoch to a HyperbandPruner.

    python benchmarks/_w4_baseline.py [TRIALS (64)] [nopruner]

``nopruner`` swaps in NopPruner (every trial trains all 30 epochs), as a reference.
Prints one JSON line: wall_s, best_cv_accuracy, trial_epochs (epochs trained, summed
over trials), pruned, complete, trials.
"""

import json
import sys
import threading
import time
import warnings

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import optuna  # noqa: E402
from optuna.pruners import HyperbandPruner, NopPruner  # noqa: E402
from optuna.samplers import TPESampler  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

warnings.filterwarnings("ignore", category=ConvergenceWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)

MAX_EPOCHS = 30
X, y = make_classification(n_samples=8_000, n_features=30, n_informative=15, n_classes=4,
                           random_state=1)
CLASSES = np.unique(y)
FOLDS = []
for tr, va in StratifiedKFold(3, shuffle=True, random_state=0).split(X, y):
    scaler = StandardScaler().fit(X[tr])
    FOLDS.append((scaler.transform(X[tr]), y[tr], scaler.transform(X[va]), y[va]))

_lock = threading.Lock()
_trial_epochs = 0


def _count_epoch() -> None:
    global _trial_epochs
    with _lock:
        _trial_epochs += 1


def objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
    l2 = trial.suggest_float("l2", 1e-6, 1e-2, log=True)
    width = trial.suggest_categorical("width", [32, 64, 128])
    depth = trial.suggest_int("depth", 1, 3)
    act = trial.suggest_categorical("activation", ["relu", "tanh"])
    opt = trial.suggest_categorical("optimizer", ["adam", "momentum"])
    batch = trial.suggest_categorical("batch_size", [64, 128])
    models = [
        MLPClassifier(
            hidden_layer_sizes=(width,) * depth, activation=act,
            solver="adam" if opt == "adam" else "sgd", momentum=0.9,
            nesterovs_momentum=False, learning_rate_init=lr,
            # sklearn adds 0.5 * alpha * sum W^2 to the *summed* minibatch loss and divides
            # the total by the rows in the minibatch, i.e. the penalty on the mean loss is
            # 0.5 * (alpha / batch_size) * sum W^2. The tuner's l2 is added to the mean
            # batch loss as 0.5 * l2 * sum W^2 without that division, so l2 == alpha /
            # batch_size, i.e. alpha = l2 * batch_size for the same objective.
            alpha=l2 * batch, batch_size=batch, shuffle=True,
            n_iter_no_change=10**9, tol=0.0,
            # A RandomState *instance*, not the int 0: _fit() calls
            # check_random_state(self.random_state) on every partial_fit call, so an int
            # re-seeds each epoch and every epoch after the first visits the minibatches
            # in the same order. The instance gives the same initial weights and first
            # epoch as random_state=0 and a fresh permutation each later epoch.
            random_state=np.random.RandomState(0))
        for _ in FOLDS]
    mean_acc = float("nan")
    for epoch in range(MAX_EPOCHS):
        accs = []
        for model, (x_tr, y_tr, x_va, y_va) in zip(models, FOLDS):
            model.partial_fit(x_tr, y_tr, classes=CLASSES)  # one shuffled pass
            accs.append(model.score(x_va, y_va))
        _count_epoch()
        mean_acc = float(np.mean(accs))
        trial.report(mean_acc, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return mean_acc


trials = int(sys.argv[1]) if len(sys.argv) > 1 else 64
pruner = (NopPruner() if len(sys.argv) > 2 and sys.argv[2] == "nopruner"
          else HyperbandPruner(min_resource=2, max_resource=MAX_EPOCHS, reduction_factor=3))
study = optuna.create_study(direction="maximize", sampler=TPESampler(seed=0), pruner=pruner)
study.optimize(objective, n_trials=trials, n_jobs=2)
states = [t.state for t in study.trials]
print(json.dumps({
    "wall_s": time.perf_counter() - T0,
    "best_cv_accuracy": study.best_value,
    "trial_epochs": _trial_epochs,
    "pruned": states.count(optuna.trial.TrialState.PRUNED),
    "complete": states.count(optuna.trial.TrialState.COMPLETE),
    "trials": len(study.trials),
}))
