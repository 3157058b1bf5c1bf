"""The leaderboard of word-pronunciation: a documented population of reference solutions.

Each reference predicts from `train.csv` (or a part of it) and is scored by character error rate
on the private answers: trivial baselines (empty or constant answers, random training
pronunciations, spelling the letters out), nearest-neighbour word lookups, and letter-to-phoneme
rules learnt from a hard-EM letter/phoneme alignment, from one rule per letter to rules that look
at up to three letters on each side (with back-off to narrower contexts), plus decision trees on
the letter window, so the medal thresholds separate competent from strong solutions.

    python tasks/word-pronunciation/leaderboard.py   # rewrites leaderboard.csv (deterministic)
"""

from __future__ import annotations

import functools
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeClassifier

from grading.graders import grade_submission
from tasks.prepare import ranked_board, save_board

TASK_DIR = Path(__file__).resolve().parent
Emission = tuple[str, ...]  # the phonemes one letter stands for: none, one or two
Predictor = Callable[[list[str], list[str], list[str]], list[str]]  # (train words, prons, test words)


def align(words: list[str], prons: list[str]) -> list[list[Emission]]:
    """Hard-EM monotonic alignment: every letter emits 0, 1 or 2 phonemes (empty when impossible)."""
    return _align(tuple(words), tuple(prons))


@functools.lru_cache(maxsize=8)
def _align(words: tuple[str, ...], prons: tuple[str, ...], iterations: int = 4) -> list[list[Emission]]:
    phones = [p.split() for p in prons]
    logp: dict[tuple[str, Emission], float] = {}
    floor = {0: -3.0, 1: -1.0, 2: -4.0}  # before any counts: prefer one phoneme per letter
    result: list[list[Emission]] = []
    for _ in range(iterations):
        result = []
        counts: Counter[tuple[str, Emission]] = Counter()
        for word, ph in zip(words, phones):
            n, m = len(word), len(ph)
            best = [[-math.inf] * (m + 1) for _ in range(n + 1)]
            back = [[0] * (m + 1) for _ in range(n + 1)]
            best[0][0] = 0.0
            for i in range(1, n + 1):
                letter = word[i - 1]
                for j in range(m + 1):
                    for k in (0, 1, 2):
                        if j < k or best[i - 1][j - k] == -math.inf:
                            continue
                        unseen = floor[k] - 6.0 if logp else floor[k]
                        s = best[i - 1][j - k] + logp.get((letter, tuple(ph[j - k:j])), unseen)
                        if s > best[i][j]:
                            best[i][j], back[i][j] = s, k
            if best[n][m] == -math.inf:
                result.append([])
                continue
            path: list[Emission] = []
            j = m
            for i in range(n, 0, -1):
                k = back[i][j]
                path.append(tuple(ph[j - k:j]))
                j -= k
            path.reverse()
            result.append(path)
            counts.update(zip(word, path))
        per_letter: Counter[str] = Counter()
        for (letter, _), c in counts.items():
            per_letter[letter] += c
        logp = {key: math.log(c / per_letter[key[0]]) for key, c in counts.items()}
    return result


def _context(word: str, i: int, left: int, right: int) -> tuple[str, str, str]:
    padded = "^" * left + word + "$" * right
    return padded[i:i + left], word[i], padded[i + left + 1:i + left + 1 + right]


def context_rules(left: int, right: int, *, backoff: bool = True, n_train: int | None = None) -> Predictor:
    """Most frequent emission of each letter in its (left, right) letter context, backing off to
    narrower contexts (or emitting nothing) when the context was never seen."""
    windows = sorted(((a, b) for a in range(left + 1) for b in range(right + 1)),
                     key=lambda w: (-(w[0] + w[1]), -w[1]))
    if not backoff:
        windows = [(left, right)]

    def predict(words: list[str], prons: list[str], test: list[str]) -> list[str]:
        words, prons = words[:n_train], prons[:n_train]
        tables: dict[tuple[int, int], dict[tuple[str, str, str], Counter[Emission]]] = {
            w: defaultdict(Counter) for w in windows}
        for word, path in zip(words, align(words, prons)):
            for i, emission in enumerate(path):
                for a, b in windows:
                    tables[(a, b)][_context(word, i, a, b)][emission] += 1
        out = []
        for word in test:
            phones: list[str] = []
            for i in range(len(word)):
                for a, b in windows:
                    seen = tables[(a, b)].get(_context(word, i, a, b))
                    if seen:
                        phones += min(seen.items(), key=lambda kv: (-kv[1], kv[0]))[0]
                        break
            out.append(" ".join(phones))
        return out

    return predict


def window_tree(width: int, max_depth: int | None) -> Predictor:
    """A decision tree predicting each letter's emission from the letters `width` either side."""

    def features(word: str) -> list[list[str]]:
        padded = "^" * width + word + "$" * width
        return [list(padded[i:i + 2 * width + 1]) for i in range(len(word))]

    def predict(words: list[str], prons: list[str], test: list[str]) -> list[str]:
        rows, labels = [], []
        for word, path in zip(words, align(words, prons)):
            if path:
                rows += features(word)
                labels += [" ".join(e) or "-" for e in path]
        encoder = OneHotEncoder(handle_unknown="ignore")
        tree = DecisionTreeClassifier(max_depth=max_depth, random_state=0)
        tree.fit(encoder.fit_transform(rows), labels)
        out = []
        for word in test:
            emitted = tree.predict(encoder.transform(features(word)))
            out.append(" ".join(e for e in emitted if e != "-"))
        return out

    return predict


def constant(text: str) -> Predictor:
    return lambda words, prons, test: [text] * len(test)


def spell_letters(words: list[str], prons: list[str], test: list[str]) -> list[str]:
    """Each letter read as the phoneme of the same name where there is one (c -> K, x -> K S)."""
    table = {"a": "AE", "c": "K", "e": "EH", "i": "IH", "j": "JH", "o": "AA", "q": "K", "u": "AH",
             "x": "K S", "h": "HH"}
    return [" ".join(table.get(c, c.upper()) for c in w) for w in test]


def random_pronunciation(seed: int) -> Predictor:
    def predict(words: list[str], prons: list[str], test: list[str]) -> list[str]:
        rng = np.random.default_rng(seed)
        return [prons[i] for i in rng.integers(0, len(prons), size=len(test))]

    return predict


def most_common_pronunciation(words: list[str], prons: list[str], test: list[str]) -> list[str]:
    counts = Counter(prons)
    return [min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]] * len(test)


def shared_end(from_start: bool) -> Predictor:
    """The pronunciation of the training word sharing the longest prefix (or suffix)."""

    def predict(words: list[str], prons: list[str], test: list[str]) -> list[str]:
        key = (lambda w: w) if from_start else (lambda w: w[::-1])
        order = sorted(range(len(words)), key=lambda i: key(words[i]))
        keys = [key(words[i]) for i in order]
        out = []
        for word in test:
            k = key(word)
            pos = int(np.searchsorted(keys, k))
            cands = [p for p in (pos - 1, pos) if 0 <= p < len(keys)]
            best = max(cands, key=lambda p: (len(_common_prefix(keys[p], k)), -p))
            out.append(prons[order[best]])
        return out

    return predict


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def ngram_neighbour(n_max: int) -> Predictor:
    """The pronunciation of the training word most similar in letter n-grams (tf-idf cosine)."""

    def predict(words: list[str], prons: list[str], test: list[str]) -> list[str]:
        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, n_max))
        nn = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute")
        nn.fit(vec.fit_transform(words))
        idx = nn.kneighbors(vec.transform(test), return_distance=False)[:, 0]
        return [prons[i] for i in idx]

    return predict


def reference_solutions() -> list[tuple[str, Predictor]]:
    """(name, predictor) for every reference solution."""
    refs: list[tuple[str, Predictor]] = [
        ("empty", constant("")),
        ("constant-AH", constant("AH")),
        ("most-common-pronunciation", most_common_pronunciation),
        ("random-train-pronunciation-0", random_pronunciation(0)),
        ("random-train-pronunciation-1", random_pronunciation(1)),
        ("spell-letters", spell_letters),
        ("longest-shared-prefix-word", shared_end(True)),
        ("longest-shared-suffix-word", shared_end(False)),
        ("ngram-neighbour-2", ngram_neighbour(2)),
        ("ngram-neighbour-4", ngram_neighbour(4)),
    ]
    refs += [(f"letter-rules-n{n}", context_rules(0, 0, n_train=n)) for n in (30, 300)]
    refs += [(f"context-rules-{a}-{b}", context_rules(a, b)) for a, b in
             ((0, 0), (1, 0), (0, 1), (1, 1), (2, 1), (1, 2), (2, 2), (3, 2), (3, 3))]
    refs += [(f"context-rules-{a}-{b}-no-backoff", context_rules(a, b, backoff=False))
             for a, b in ((1, 1), (2, 2), (3, 3))]
    refs += [(f"context-rules-{a}-{b}", context_rules(a, b)) for a, b in ((0, 2), (2, 0), (3, 1), (1, 3))]
    refs += [(f"context-rules-2-2-n{n}", context_rules(2, 2, n_train=n)) for n in (200, 1000, 3000)]
    refs += [(f"window-tree-{w}-depth-{d}", window_tree(w, d)) for w, d in ((1, 8), (2, 20), (3, None))]
    return refs


def build_leaderboard(task_dir: Path = TASK_DIR) -> pd.DataFrame:
    """Run and score every reference; best (lowest CER) first."""
    public = task_dir / "prepared" / "public"
    read = lambda p: pd.read_csv(p, dtype=str, keep_default_na=False)  # noqa: E731  (words like "nan")
    train, test = read(public / "train.csv"), read(public / "test.csv")
    answers = task_dir / "prepared" / "private" / "answers.csv"
    words, prons, test_words = list(train["word"]), list(train["pronunciation"]), list(test["word"])
    rows = []
    for name, predictor in reference_solutions():
        pred = predictor(words, prons, test_words)
        result = grade_submission("cer", pd.DataFrame({"id": test["id"], "pronunciation": pred}), answers)
        assert result.valid and result.score is not None, (name, result.reason)
        rows.append({"team": name, "score": round(result.score, 6)})
    return ranked_board(rows, lower_is_better=True)


if __name__ == "__main__":
    save_board(build_leaderboard(), TASK_DIR)
