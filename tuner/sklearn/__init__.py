"""scikit-learn's conventions over the engine.

- ``JaxMLPClassifier``, ``JaxMLPRegressor``: one JAX MLP as an estimator
  (``estimators``);
- ``MLPSearchCV``: a search that fits like ``GridSearchCV`` and runs its trials x folds
  through the sweep engine (``search``; ``cv_results_``: ``results``; ``scoring=``:
  ``scoring``).
"""

from tuner.sklearn.estimators import JaxMLPClassifier, JaxMLPRegressor
from tuner.sklearn.search import MLPSearchCV

__all__ = ["JaxMLPClassifier", "JaxMLPRegressor", "MLPSearchCV"]
