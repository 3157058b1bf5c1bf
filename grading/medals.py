"""MLE-bench medal rules: thresholds from a leaderboard, and a per-competition report.

Medal rows follow kaggle.com/progression as MLE-bench implements them (``Grader.rank_score`` in
``mlebench/grade_helpers.py``): with N teams the threshold for a medal is the score at 1-based
leaderboard row k (best first), i.e. ``scores[k - 1]``:

* N < 100:      gold k = max(1, int(0.1 N)), silver max(1, int(0.2 N)), bronze max(1, int(0.4 N))
* 100 <= N < 250:  gold k = 10, silver max(1, int(0.2 N)), bronze max(1, int(0.4 N))
* 250 <= N < 1000: gold k = 10 + int(0.002 N), silver 50, bronze 100
* N >= 1000:    gold k = 10 + int(0.002 N), silver max(1, int(0.05 N)), bronze max(1, int(0.1 N))

The ``max(1, ...)`` on silver/bronze matters only for tiny boards (N < 5) and matches MLE-bench.
The median threshold is the median of all leaderboard scores. A score equal to a medal threshold
earns it; above_median is strict. As in MLE-bench, medals are exclusive: a gold score has
``gold_medal`` only, not also silver and bronze.

Unlike MLE-bench, which trusts the leaderboard's order and infers the direction from its first and
last rows, the direction is given here and the scores are sorted by it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel


class MedalThresholds(BaseModel):
    gold: float
    silver: float
    bronze: float
    median: float
    lower_is_better: bool
    n_teams: int


class CompetitionReport(BaseModel):
    competition_id: str
    score: float | None
    gold_threshold: float
    silver_threshold: float
    bronze_threshold: float
    median_threshold: float
    any_medal: bool
    gold_medal: bool
    silver_medal: bool
    bronze_medal: bool
    above_median: bool
    valid_submission: bool
    is_lower_better: bool


def medal_rows(n_teams: int) -> tuple[int, int, int]:
    """1-based leaderboard rows (gold, silver, bronze) whose scores are the medal thresholds."""
    n = n_teams
    if n < 1:
        raise ValueError("a leaderboard needs at least one team")
    if n < 100:
        return max(1, int(n * 0.1)), max(1, int(n * 0.2)), max(1, int(n * 0.4))
    if n < 250:
        return 10, max(1, int(n * 0.2)), max(1, int(n * 0.4))
    if n < 1000:
        return 10 + int(n * 0.002), 50, 100
    return 10 + int(n * 0.002), max(1, int(n * 0.05)), max(1, int(n * 0.1))


def medal_thresholds(leaderboard_scores: Sequence[float], lower_is_better: bool) -> MedalThresholds:
    scores = np.asarray(list(leaderboard_scores), dtype=float)
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError("leaderboard_scores must be a non-empty sequence of numbers")
    if not np.isfinite(scores).all():
        raise ValueError("leaderboard_scores contain NaN or infinite values")
    ranked = np.sort(scores) if lower_is_better else -np.sort(-scores)  # best first
    gold, silver, bronze = medal_rows(len(ranked))
    return MedalThresholds(
        gold=float(ranked[gold - 1]),
        silver=float(ranked[silver - 1]),
        bronze=float(ranked[bronze - 1]),
        median=float(np.median(ranked)),
        lower_is_better=lower_is_better,
        n_teams=len(ranked),
    )


def report_for(competition_id: str, score: float | None, thresholds: MedalThresholds) -> CompetitionReport:
    """Medal flags for ``score``; a None (or NaN) score is an invalid submission with all flags False."""
    if score is not None and math.isnan(float(score)):
        score = None
    t = thresholds
    gold = silver = bronze = above_median = False
    if score is not None:
        score = float(score)

        def reaches(threshold: float) -> bool:
            return score <= threshold if t.lower_is_better else score >= threshold

        gold = reaches(t.gold)
        silver = not gold and reaches(t.silver)
        bronze = not gold and not silver and reaches(t.bronze)
        above_median = score < t.median if t.lower_is_better else score > t.median
    return CompetitionReport(
        competition_id=competition_id,
        score=score,
        gold_threshold=t.gold,
        silver_threshold=t.silver,
        bronze_threshold=t.bronze,
        median_threshold=t.median,
        any_medal=gold or silver or bronze,
        gold_medal=gold,
        silver_medal=silver,
        bronze_medal=bronze,
        above_median=above_median,
        valid_submission=score is not None,
        is_lower_better=t.lower_is_better,
    )


def read_leaderboard(path: str | Path) -> list[float]:
    """Scores from a leaderboard CSV's ``score`` column, in file order."""
    try:
        frame = pd.read_csv(path)
    except Exception as exc:
        raise ValueError(f"cannot read leaderboard {str(path)!r}: {exc}") from exc
    if "score" not in frame.columns:
        raise ValueError(f"leaderboard {str(path)!r} has no 'score' column (columns: {list(frame.columns)})")
    scores = pd.to_numeric(frame["score"], errors="coerce")
    bad = scores.isna() | ~np.isfinite(scores.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        raise ValueError(
            f"leaderboard {str(path)!r}: {int(bad.sum())} missing or non-numeric score(s), "
            f"first at row {int(np.flatnonzero(bad.to_numpy())[0]) + 1}"
        )
    if len(scores) == 0:
        raise ValueError(f"leaderboard {str(path)!r} has no rows")
    return [float(v) for v in scores]
