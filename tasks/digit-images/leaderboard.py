"""The leaderboard of digit-images: a documented population of 35 reference solutions.

Each reference reads the PNG images, trains a standard model on (a part of) `train.csv` and is
scored by accuracy on the private answers: trivial baselines (majority class, random guesses),
weak ones (a few pixel rows, tiny training subsets, shallow trees, nearest centroids) and decent
ones (k-nearest neighbours, logistic regression, SVMs, small MLPs, random forests), so the medal
thresholds separate competent from strong solutions.

    python tasks/digit-images/leaderboard.py   # rewrites leaderboard.csv (deterministic)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from tasks.prepare import ranked_board, save_board

TASK_DIR = Path(__file__).resolve().parent
ALL = None  # all 64 pixels / all training images


def _rows(*rows: int) -> list[int]:
    """Pixel indices (of the flattened 8x8 image) of the given image rows."""
    return [r * 8 + c for r in rows for c in range(8)]


def reference_models() -> list[tuple[str, object, list[int] | None, int | None]]:
    """(name, unfitted estimator, pixel subset or None, number of training images or None)."""
    logreg = lambda c: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))  # noqa: E731
    models: list[tuple[str, object, list[int] | None, int | None]] = [
        ("majority-class", DummyClassifier(strategy="most_frequent"), ALL, ALL),
    ]
    models += [(f"random-guess-{s}", DummyClassifier(strategy="uniform", random_state=s), ALL, ALL)
               for s in range(2)]
    models += [(f"stratified-guess-{s}", DummyClassifier(strategy="stratified", random_state=s), ALL, ALL)
               for s in range(2)]
    models += [("centroid-row-0", NearestCentroid(), _rows(0), ALL),
               ("centroid-row-3", NearestCentroid(), _rows(3), ALL),
               ("centroid-rows-2-5", NearestCentroid(), _rows(2, 5), ALL),
               ("centroid-all", NearestCentroid(), ALL, ALL),
               ("centroid-all-n30", NearestCentroid(), ALL, 30)]
    models += [(f"tree-depth-{d}", DecisionTreeClassifier(max_depth=d, random_state=0), ALL, ALL)
               for d in (1, 2, 3, 5, None)]
    models += [("gaussian-nb", GaussianNB(), ALL, ALL)]
    models += [(f"knn-{k}" + (f"-n{n}" if n else ""), KNeighborsClassifier(n_neighbors=k), ALL, n)
               for k, n in ((1, 20), (1, 100), (1, ALL), (3, ALL), (15, ALL), (75, ALL))]
    models += [("knn-1-rows-0-1", KNeighborsClassifier(n_neighbors=1), _rows(0, 1), ALL),
               ("knn-1-rows-2-3-4", KNeighborsClassifier(n_neighbors=1), _rows(2, 3, 4), ALL)]
    models += [("logreg-rows-6-7", logreg(1.0), _rows(6, 7), ALL),
               ("logreg-C0.001", logreg(0.001), ALL, ALL),
               ("logreg-C1-n60", logreg(1.0), ALL, 60),
               ("logreg-C0.1", logreg(0.1), ALL, ALL)]
    models += [("svm-linear", SVC(kernel="linear"), ALL, ALL),
               ("svm-rbf", make_pipeline(StandardScaler(), SVC(kernel="rbf", C=10)), ALL, ALL)]
    models += [(f"mlp-{h}", make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(h,),
                max_iter=600, random_state=0)), ALL, ALL) for h in (4, 64)]
    models += [(f"random-forest-{n}", RandomForestClassifier(n_estimators=n, random_state=0), ALL, ALL)
               for n in (3, 30, 200)]
    return models


def load_pixels(folder: Path, ids: pd.Series) -> np.ndarray:
    """(n, 64) float array of the images `folder/<id>.png`, pixel values 0..255."""
    return np.stack([np.asarray(Image.open(folder / f"{i}.png"), dtype=float).ravel() for i in ids])


def build_leaderboard(task_dir: Path = TASK_DIR) -> pd.DataFrame:
    """Train and score every reference; best first."""
    public = task_dir / "prepared" / "public"
    train = pd.read_csv(public / "train.csv")
    test = pd.read_csv(public / "test.csv")
    answers = pd.read_csv(task_dir / "prepared" / "private" / "answers.csv").set_index("id")
    x_train, y_train = load_pixels(public / "train", train["id"]), train["label"].to_numpy()
    x_test = load_pixels(public / "test", test["id"])
    truth = answers.loc[test["id"], "label"].to_numpy()
    rows = []
    for name, model, pixels, n_images in reference_models():
        cols = pixels if pixels is not None else list(range(64))
        n = n_images or len(x_train)  # the training rows are in random order: a random subset
        with warnings.catch_warnings():  # constant pixels, MLP iteration limit: expected
            warnings.simplefilter("ignore")
            model.fit(x_train[:n][:, cols], y_train[:n])  # type: ignore[attr-defined]
        pred = model.predict(x_test[:, cols])  # type: ignore[attr-defined]
        rows.append({"team": name, "score": round(float(np.mean(pred == truth)), 6)})
    return ranked_board(rows, lower_is_better=False)


if __name__ == "__main__":
    save_board(build_leaderboard(), TASK_DIR)
