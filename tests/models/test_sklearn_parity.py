"""Our training against scikit-learn's MLPClassifier on one configuration and the same
folds: with the default init (glorot_uniform, scikit-learn's: weights and biases from
U(+-sqrt(6 / (fan_in + fan_out)))) and l2 = alpha / batch_size (scikit-learn divides its
penalty by the minibatch rows), the CV accuracy is the same within a small tolerance,
for tanh and relu. Means over seeds are compared (ours: 16 lanes of one program; theirs:
10 random states); the tolerance is about three standard errors of the difference.
Measured while choosing the default (docs/decisions.md): tanh 0.8136 vs 0.8174, relu
0.8266 vs 0.8262; xavier_uniform (zero biases) gave 0.7991 for tanh.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from models import ProgramCache, TrialConfig, lane_hparams, signature_for, stack_folds

X, Y = make_classification(n_samples=900, n_features=12, n_informative=8, n_classes=3,
                           random_state=4)
CV = StratifiedKFold(3, shuffle=True, random_state=0)
WIDTH, DEPTH, BATCH, EPOCHS, LR, ALPHA = 32, 2, 32, 25, 3e-3, 1e-3
SEEDS = range(10)


def fold_stack():
    parts = []
    for tr, va in CV.split(X, Y):
        scaler = StandardScaler().fit(X[tr])
        parts.append((scaler.transform(X[tr]), Y[tr], scaler.transform(X[va]), Y[va]))
    return stack_folds(parts)


def ours(activation: str) -> float:
    configs = [TrialConfig.from_dict(
        {"width": WIDTH, "depth": DEPTH, "activation": activation, "optimizer": "adam",
         "learning_rate": LR, "batch_size": BATCH, "epochs": EPOCHS, "l2": ALPHA / BATCH},
        trial=lane) for lane in range(16)]
    folds = fold_stack()
    sig = signature_for(configs, "multiclass", X.shape[1], 3, folds.n_train)
    result = ProgramCache().fit(sig, lane_hparams(configs, sig), folds, seed=0)
    return float(result.val_metrics["accuracy"][:, :, -1].mean())


def sklearn(activation: str) -> float:
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for seed in SEEDS:
            mlp = MLPClassifier((WIDTH,) * DEPTH, activation=activation, solver="adam",
                                learning_rate_init=LR, alpha=ALPHA, batch_size=BATCH,
                                max_iter=EPOCHS, n_iter_no_change=10**9, tol=0.0,
                                random_state=seed)
            scores.append(cross_val_score(make_pipeline(StandardScaler(), mlp), X, Y,
                                          cv=CV).mean())
    return float(np.mean(scores))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_cv_accuracy_matches_scikit_learn(activation):
    theirs, mine = sklearn(activation), ours(activation)
    assert abs(mine - theirs) < 0.012, (activation, mine, theirs)
