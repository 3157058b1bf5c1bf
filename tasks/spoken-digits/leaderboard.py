"""The leaderboard of spoken-digits: a documented population of 36 reference solutions.

Each reference computes hand-made features from the WAV files with numpy/scipy and trains a
standard classifier on `train.csv` (or on its first N rows, to vary strength); it is scored by
accuracy on the private answers. Strength ranges from trivial (majority class, random guesses)
through one-number heuristics (duration, loudness, zero-crossing rate) and whole-clip spectral
statistics to MFCC-like features (log mel filterbank + DCT) pooled over the clip or over ten time
segments of the spoken word, with kNN, logistic regression, trees, random forests and SVMs.

    python tasks/spoken-digits/leaderboard.py   # rewrites leaderboard.csv (deterministic)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.fft import dct
from scipy.io import wavfile
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from tasks.prepare import ranked_board, save_board

TASK_DIR = Path(__file__).resolve().parent
TARGET = "label"
RATE, WIN, HOP, N_MELS, N_MFCC, SEGMENTS = 16000, 400, 160, 40, 13, 10


def _mel_filters() -> np.ndarray:
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = 700 * (10 ** (np.linspace(mel(50), mel(RATE / 2), N_MELS + 2) / 2595) - 1)
    freqs = np.fft.rfftfreq(WIN, 1 / RATE)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))


def clip_features(path: Path, filters: np.ndarray) -> dict[str, np.ndarray]:
    """Named feature groups of one recording."""
    _, x = wavfile.read(path)
    x = x.astype(np.float64) / 32768.0
    x = np.pad(x, (0, max(0, WIN - len(x))))
    frames = np.lib.stride_tricks.sliding_window_view(x, WIN)[::HOP] * np.hanning(WIN)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12
    energy = np.log(power.sum(axis=1))
    voiced = np.flatnonzero(energy > energy.max() - 4.0)  # frames within ~17 dB of the loudest
    span = slice(voiced[0], voiced[-1] + 1)
    freqs = np.fft.rfftfreq(WIN, 1 / RATE)
    weights = power / power.sum(axis=1, keepdims=True)
    centroid = weights @ freqs
    bandwidth = np.sqrt((weights * (freqs - centroid[:, None]) ** 2).sum(axis=1))
    rolloff = freqs[np.argmax(np.cumsum(weights, axis=1) > 0.85, axis=1)]
    zcr = np.mean(np.abs(np.diff(np.sign(frames), axis=1)) > 0, axis=1)
    mfcc = dct(np.log(power @ filters.T), type=2, norm="ortho", axis=1)[:, :N_MFCC]
    word = mfcc[span]
    segments = np.array_split(np.arange(len(word)), SEGMENTS)
    seg = np.concatenate([word[s].mean(axis=0) if len(s) else word.mean(axis=0) for s in segments])
    spectral = np.concatenate([[f[span].mean(), f[span].std()] for f in (centroid, bandwidth, rolloff, zcr)])
    return {
        "duration": np.array([len(x) / RATE]),
        "word-length": np.array([(span.stop - span.start) * HOP / RATE]),
        "loudness": np.array([energy.max(), energy.mean()]),
        "zcr": np.array([zcr[span].mean()]),
        "spectral": spectral,
        "mfcc-stats": np.concatenate([word.mean(axis=0), word.std(axis=0)]),
        "mfcc-segments": seg,
    }


def load_features(task_dir: Path, split: str, ids: pd.Series) -> dict[str, np.ndarray]:
    """Feature group name -> (n_clips, n_features) matrix, rows in the order of `ids`."""
    filters = _mel_filters()
    rows = [clip_features(task_dir / "prepared" / "public" / split / f"{i}.wav", filters) for i in ids]
    return {name: np.vstack([r[name] for r in rows]) for name in rows[0]}


def reference_models() -> list[tuple[str, object, tuple[str, ...], int | None]]:
    """(name, unfitted estimator, feature groups, training rows used or None for all)."""
    scaled = lambda m: make_pipeline(StandardScaler(), m)  # noqa: E731
    logreg = lambda c: scaled(LogisticRegression(C=c, max_iter=3000))  # noqa: E731
    knn = lambda k: scaled(KNeighborsClassifier(n_neighbors=k))  # noqa: E731
    forest = lambda: RandomForestClassifier(n_estimators=300, random_state=0)  # noqa: E731
    models: list[tuple[str, object, tuple[str, ...], int | None]] = [
        ("majority-class", DummyClassifier(strategy="most_frequent"), ("duration",), None)
    ]
    models += [(f"random-guess-{s}", DummyClassifier(strategy="uniform", random_state=s), ("duration",), None)
               for s in range(3)]
    models += [(f"stratified-guess-{s}", DummyClassifier(strategy="stratified", random_state=s),
                ("duration",), None) for s in range(2)]
    models += [("tree-duration", DecisionTreeClassifier(max_depth=4, random_state=0), ("duration",), None)]
    models += [("knn-word-length", KNeighborsClassifier(n_neighbors=25), ("word-length",), None)]
    models += [("logreg-loudness-zcr", logreg(1), ("loudness", "zcr", "word-length"), None)]
    models += [(f"tree-spectral-depth{d}", DecisionTreeClassifier(max_depth=d, random_state=0),
                ("spectral",), None) for d in (3, 8)]
    models += [("knn-spectral-15", knn(15), ("spectral", "word-length"), None)]
    models += [("logreg-spectral", logreg(1), ("spectral", "word-length"), None)]
    models += [("forest-spectral", RandomForestClassifier(n_estimators=200, random_state=0),
                ("spectral", "word-length"), None)]
    stats = ("mfcc-stats",)
    models += [(f"knn-mfcc-stats-{k}", knn(k), stats, None) for k in (1, 15)]
    models += [(f"logreg-mfcc-stats-C{c:g}", logreg(c), stats, None) for c in (0.001, 0.1, 10)]
    models += [("tree-mfcc-stats", DecisionTreeClassifier(random_state=0), stats, None)]
    models += [("forest-mfcc-stats", RandomForestClassifier(n_estimators=300, random_state=0), stats, None)]
    models += [(f"forest-mfcc-stats-first{k}", forest(), stats, k) for k in (50, 200)]
    seg = ("mfcc-segments",)
    models += [(f"knn-mfcc-segments-{k}", knn(k), seg, None) for k in (1, 5)]
    models += [(f"logreg-mfcc-segments-C{c:g}", logreg(c), seg, None) for c in (0.01, 1)]
    models += [(f"logreg-mfcc-segments-first{k}", logreg(1), seg, k) for k in (30, 100, 300)]
    models += [("forest-mfcc-segments", RandomForestClassifier(n_estimators=300, random_state=0), seg, None)]
    models += [(f"svm-mfcc-segments-C{c:g}", scaled(SVC(C=c)), seg, None) for c in (1, 10)]
    models += [("svm-mfcc-segments-stats", scaled(SVC(C=10)), seg + stats, None)]
    models += [(f"svm-mfcc-segments-stats-first{k}", scaled(SVC(C=10)), seg + stats, k) for k in (100, 400)]
    return models


def build_leaderboard(task_dir: Path = TASK_DIR) -> pd.DataFrame:
    """Train and score every reference; best (highest accuracy) first."""
    public = task_dir / "prepared" / "public"
    train = pd.read_csv(public / "train.csv")
    test = pd.read_csv(public / "test.csv")
    answers = pd.read_csv(task_dir / "prepared" / "private" / "answers.csv").set_index("id")
    truth = answers.loc[test["id"], TARGET].to_numpy()
    f_train = load_features(task_dir, "train", train["id"])
    f_test = load_features(task_dir, "test", test["id"])
    rows = []
    for name, model, groups, n_rows in reference_models():
        n = len(train) if n_rows is None else n_rows
        x_train = np.hstack([f_train[g] for g in groups])[:n]
        x_test = np.hstack([f_test[g] for g in groups])
        model.fit(x_train, train[TARGET].iloc[:n])  # type: ignore[attr-defined]
        pred = model.predict(x_test)  # type: ignore[attr-defined]
        rows.append({"team": name, "score": round(float(np.mean(pred == truth)), 6)})
    return ranked_board(rows, lower_is_better=False)


if __name__ == "__main__":
    save_board(build_leaderboard(), TASK_DIR)
