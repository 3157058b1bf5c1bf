"""The leaderboard of fortune-topics: a documented population of 34 reference solutions.

Each reference is trained on `train.csv` (or on its first N rows, to vary strength) and scored by
macro F1 on the private answers: trivial baselines (majority class, random guesses), hand-written
keyword rules (attribution lines, question/answer and knock-knock cues, length), and standard text
classifiers (naive Bayes, logistic regression, linear SVM) on word or character n-gram features
with different vocabulary sizes and training-set sizes.

    python tasks/fortune-topics/leaderboard.py   # rewrites leaderboard.csv (deterministic)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.naive_bayes import ComplementNB, MultinomialNB
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC

from tasks.prepare import ranked_board, save_board

TASK_DIR = Path(__file__).resolve().parent
TARGET = "category"

Rule = Callable[[str], str]


def _attribution(text: str) -> str:
    return "literature" if re.search(r"^\s*--", text, flags=re.MULTILINE) else "fortunes"


def _riddle_cues(text: str) -> str:
    return "riddles" if re.search(r"\bQ:|\bA:|knock|\?\s*$", text, flags=re.IGNORECASE) else "fortunes"


def _attribution_and_riddle(text: str) -> str:
    riddle = _riddle_cues(text)
    return riddle if riddle == "riddles" else _attribution(text)


def _length(text: str) -> str:
    return "fortunes" if len(text) < 90 else "literature"


def _length_and_cues(text: str) -> str:
    label = _attribution_and_riddle(text)
    return label if label != "fortunes" else _length(text)


RULES: dict[str, Rule] = {
    "rule-attribution-line": _attribution,
    "rule-riddle-cues": _riddle_cues,
    "rule-attribution-and-riddle-cues": _attribution_and_riddle,
    "rule-length-90": _length,
    "rule-length-and-cues": _length_and_cues,
}


def reference_models() -> list[tuple[str, object, int | None]]:
    """(name, unfitted estimator or rule name, training rows used or None for all)."""
    words = lambda n, **kw: CountVectorizer(max_features=n, **kw)  # noqa: E731
    chars = lambda n: TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), max_features=n,  # noqa: E731
                                      sublinear_tf=True)
    logreg = lambda c: LogisticRegression(C=c, max_iter=2000)  # noqa: E731
    nb_all = lambda: make_pipeline(words(None), MultinomialNB())  # noqa: E731
    models: list[tuple[str, object, int | None]] = [
        ("majority-class", DummyClassifier(strategy="most_frequent"), None)
    ]
    models += [(f"random-guess-{s}", DummyClassifier(strategy="uniform", random_state=s), None)
               for s in range(3)]
    models += [(f"stratified-guess-{s}", DummyClassifier(strategy="stratified", random_state=s), None)
               for s in range(2)]
    models += [(name, name, None) for name in RULES]
    models += [(f"nb-words-top{n}", make_pipeline(words(n), MultinomialNB()), None) for n in (10, 50, 300)]
    models += [("nb-words-all", nb_all(), None)]
    models += [(f"nb-words-all-first{k}", nb_all(), k) for k in (30, 100, 250)]
    models += [("complement-nb-words", make_pipeline(words(None), ComplementNB()), None)]
    models += [(f"nb-words-bigrams-top{n}", make_pipeline(words(n, ngram_range=(1, 2)), MultinomialNB()),
                None) for n in (2000, None)]
    models += [(f"logreg-tfidf-words-C{c:g}", make_pipeline(TfidfVectorizer(sublinear_tf=True), logreg(c)),
                None) for c in (0.1, 1, 10, 100)]
    models += [(f"logreg-chars-top{n}", make_pipeline(chars(n), logreg(10)), None) for n in (100, 1000, None)]
    models += [(f"logreg-chars-all-first{k}", make_pipeline(chars(None), logreg(10)), k) for k in (50, 200)]
    models += [(f"svm-chars-C{c:g}", make_pipeline(chars(None), LinearSVC(C=c)), None) for c in (0.1, 1)]
    models += [("svm-chars-balanced", make_pipeline(chars(None), LinearSVC(C=1, class_weight="balanced")),
                None)]
    models += [("svm-word-bigrams-first100",
                make_pipeline(TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2)), LinearSVC(C=1)), 100)]
    return models


def build_leaderboard(task_dir: Path = TASK_DIR) -> pd.DataFrame:
    """Train and score every reference; best (highest macro F1) first."""
    public = task_dir / "prepared" / "public"
    train = pd.read_csv(public / "train.csv", keep_default_na=False)
    test = pd.read_csv(public / "test.csv", keep_default_na=False)
    answers = pd.read_csv(task_dir / "prepared" / "private" / "answers.csv").set_index("id")
    truth = answers.loc[test["id"], TARGET].to_numpy()
    rows = []
    for name, model, n_rows in reference_models():
        part = train if n_rows is None else train.iloc[:n_rows]
        if isinstance(model, str):
            pred = np.array([RULES[model](t) for t in test["text"]])
        else:
            model.fit(part["text"], part[TARGET])  # type: ignore[attr-defined]
            pred = model.predict(test["text"])  # type: ignore[attr-defined]
        score = f1_score(truth, pred, labels=np.unique(truth), average="macro", zero_division=0.0)
        rows.append({"team": name, "score": round(float(score), 6)})
    return ranked_board(rows, lower_is_better=False)


if __name__ == "__main__":
    save_board(build_leaderboard(), TASK_DIR)
