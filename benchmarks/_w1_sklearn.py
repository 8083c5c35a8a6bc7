"""Child process: the scikit-learn GridSearchCV baseline of W1 (prints one JSON line)."""

import json
import time
import warnings

T0 = time.perf_counter()

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

warnings.filterwarnings("ignore", category=ConvergenceWarning)
X, y = load_digits(return_X_y=True)
search = GridSearchCV(
    make_pipeline(StandardScaler(), MLPClassifier(
        solver="adam", batch_size=64, max_iter=30, n_iter_no_change=1000, tol=0.0,
        random_state=0)),
    {"mlpclassifier__learning_rate_init": [1e-3, 3e-3, 1e-2],
     "mlpclassifier__alpha": [1e-5, 1e-4, 1e-3],
     "mlpclassifier__hidden_layer_sizes": [(64,), (128,)]},
    cv=StratifiedKFold(5, shuffle=True, random_state=0), n_jobs=2,
).fit(X, y)
print(json.dumps({"wall_s": time.perf_counter() - T0, "best_cv_accuracy": search.best_score_}))
