"""The leaderboard of diabetes-progression: a documented population of 33 reference solutions.

Each reference is a standard regressor trained on `train.csv` and scored by RMSE on the private
answers, from trivial (constant predictions, one-feature fits) through linear models and
neighbours to ensembles, so the medal thresholds separate competent from strong solutions.

    python tasks/diabetes-progression/leaderboard.py   # rewrites leaderboard.csv (deterministic)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import Lasso, LinearRegression, Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeRegressor

from tasks.prepare import ranked_board, save_board

TASK_DIR = Path(__file__).resolve().parent
TARGET = "progression"


def reference_models() -> list[tuple[str, object, list[str] | None]]:
    """(name, unfitted estimator, feature subset or None for all) for every reference."""
    scaled = lambda m: make_pipeline(StandardScaler(), m)  # noqa: E731
    models: list[tuple[str, object, list[str] | None]] = [
        ("constant-mean", DummyRegressor(strategy="mean"), None),
        ("constant-median", DummyRegressor(strategy="median"), None),
        ("constant-zero", DummyRegressor(strategy="constant", constant=0.0), None),
    ]
    models += [(f"linear-{f}", LinearRegression(), [f]) for f in ("age", "sex", "bp", "bmi", "ltg")]
    models += [("linear-bmi-ltg", LinearRegression(), ["bmi", "ltg"])]
    models += [("linear-all", LinearRegression(), None)]
    models += [(f"ridge-a{a:g}", scaled(Ridge(alpha=a)), None) for a in (0.1, 10, 100, 1000)]
    models += [(f"lasso-a{a:g}", scaled(Lasso(alpha=a, max_iter=10000)), None) for a in (1, 10, 30)]
    models += [(f"knn-raw-{k}", KNeighborsRegressor(n_neighbors=k), None) for k in (1, 5, 25)]
    models += [(f"knn-scaled-{k}", scaled(KNeighborsRegressor(n_neighbors=k)), None) for k in (1, 5, 15, 40)]
    models += [(f"tree-depth-{d}", DecisionTreeRegressor(max_depth=d, random_state=0), None)
               for d in (1, 2, 4, None)]
    models += [(f"random-forest-{n}",
                RandomForestRegressor(n_estimators=n, min_samples_leaf=5, random_state=0), None)
               for n in (10, 200)]
    models += [(f"gboost-{n}", GradientBoostingRegressor(n_estimators=n, max_depth=2, random_state=0), None)
               for n in (30, 100, 400)]
    return models


def build_leaderboard(task_dir: Path = TASK_DIR) -> pd.DataFrame:
    """Train and score every reference; best (lowest RMSE) first."""
    public = task_dir / "prepared" / "public"
    train = pd.read_csv(public / "train.csv")
    test = pd.read_csv(public / "test.csv")
    answers = pd.read_csv(task_dir / "prepared" / "private" / "answers.csv").set_index("id")
    truth = answers.loc[test["id"], TARGET].to_numpy()
    features = [c for c in train.columns if c not in ("id", TARGET)]
    rows = []
    for name, model, subset in reference_models():
        cols = subset or features
        model.fit(train[cols], train[TARGET])  # type: ignore[attr-defined]
        pred = model.predict(test[cols])  # type: ignore[attr-defined]
        rows.append({"team": name, "score": round(float(np.sqrt(np.mean((pred - truth) ** 2))), 6)})
    return ranked_board(rows, lower_is_better=True)


if __name__ == "__main__":
    save_board(build_leaderboard(), TASK_DIR)
