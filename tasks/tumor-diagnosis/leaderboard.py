"""The leaderboard of tumor-diagnosis: a documented population of 33 reference solutions.

Each reference is a standard model trained on `train.csv` and scored by accuracy on the private
answers, from trivial (majority class, random guesses, one-feature stumps) to strong (scaled
logistic regression, random forests, gradient boosting), so medal thresholds sit where a real
competition's would: most of the field is competent and the top is crowded.

    python tasks/tumor-diagnosis/leaderboard.py   # rewrites leaderboard.csv (deterministic)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from tasks.prepare import ranked_board, save_board

TASK_DIR = Path(__file__).resolve().parent


def reference_models() -> list[tuple[str, object]]:
    """(name, unfitted estimator) for every reference solution."""
    models: list[tuple[str, object]] = [("majority-class", DummyClassifier(strategy="most_frequent"))]
    models += [(f"random-guess-{s}", DummyClassifier(strategy="uniform", random_state=s)) for s in range(3)]
    models += [(f"stratified-guess-{s}", DummyClassifier(strategy="stratified", random_state=s))
               for s in range(2)]
    models += [(f"stump-{f}", ("stump", f)) for f in
               ("mean_smoothness", "mean_symmetry", "mean_texture", "mean_radius", "worst_concave_points")]
    models += [(f"knn-raw-{k}", KNeighborsClassifier(n_neighbors=k)) for k in (1, 3, 15, 51)]
    models += [(f"knn-scaled-{k}", make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=k)))
               for k in (1, 5, 15)]
    models += [(f"logreg-C{c:g}", make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000)))
               for c in (0.001, 0.01, 0.1, 1, 10)]
    models += [(f"tree-depth-{d}", DecisionTreeClassifier(max_depth=d, random_state=0))
               for d in (1, 2, 3, 5, None)]
    models += [("gaussian-nb", GaussianNB())]
    models += [(f"random-forest-{n}", RandomForestClassifier(n_estimators=n, random_state=0))
               for n in (5, 50, 200)]
    models += [(f"gboost-{n}", GradientBoostingClassifier(n_estimators=n, random_state=0)) for n in (20, 100)]
    return models


def _predict(model: object, x_train: pd.DataFrame, y_train: pd.Series, x_test: pd.DataFrame) -> np.ndarray:
    if isinstance(model, tuple):  # a one-feature threshold at the midpoint of the class means
        feature = model[1]
        means = x_train[feature].groupby(y_train).mean()
        cut = means.mean()
        high = means.idxmax()
        low = means.idxmin()
        return np.where(x_test[feature] > cut, high, low)
    model.fit(x_train, y_train)  # type: ignore[attr-defined]
    return model.predict(x_test)  # type: ignore[attr-defined]


def build_leaderboard(task_dir: Path = TASK_DIR) -> pd.DataFrame:
    """Train and score every reference; best first."""
    public = task_dir / "prepared" / "public"
    train = pd.read_csv(public / "train.csv")
    test = pd.read_csv(public / "test.csv")
    answers = pd.read_csv(task_dir / "prepared" / "private" / "answers.csv").set_index("id")
    x_train, y_train = train.drop(columns=["id", "diagnosis"]), train["diagnosis"]
    x_test = test.drop(columns=["id"])
    truth = answers.loc[test["id"], "diagnosis"].to_numpy()
    rows = []
    for name, model in reference_models():
        pred = _predict(model, x_train, y_train, x_test)
        rows.append({"team": name, "score": round(float(np.mean(pred == truth)), 6)})
    return ranked_board(rows, lower_is_better=False)


if __name__ == "__main__":
    save_board(build_leaderboard(), TASK_DIR)
