"""Medal thresholds by team count (MLE-bench / kaggle.com/progression rows) and per-competition reports."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from grading.medals import MedalThresholds, medal_rows, medal_thresholds, read_leaderboard, report_for

# N -> (gold row, silver row, bronze row), 1-based, worked out by hand from the rules
ROWS = {
    1: (1, 1, 1),
    3: (1, 1, 1),  # int(0.3), int(0.6), int(1.2) -> max(1, .) keeps every row on the board
    10: (1, 2, 4),
    99: (9, 19, 39),
    100: (10, 20, 40),
    249: (10, 49, 99),
    250: (10, 50, 100),
    999: (11, 50, 100),
    1000: (12, 50, 100),
    2000: (14, 100, 200),
}

MEDIANS = {1: 1.0, 3: 2.0, 10: 5.5, 99: 50.0, 100: 50.5, 249: 125.0, 250: 125.5, 999: 500.0, 1000: 500.5, 2000: 1000.5}


@pytest.mark.parametrize("n", sorted(ROWS))
def test_rows_by_team_count(n):
    assert medal_rows(n) == ROWS[n]


@pytest.mark.parametrize("n", sorted(ROWS))
def test_thresholds_higher_is_better(n):
    scores = [float(s) for s in range(1, n + 1)]  # best first is N, N-1, ...: row k holds N - k + 1
    random.Random(n).shuffle(scores)  # the caller need not sort
    t = medal_thresholds(scores, lower_is_better=False)
    gold, silver, bronze = ROWS[n]
    assert (t.gold, t.silver, t.bronze) == (n - gold + 1, n - silver + 1, n - bronze + 1)
    assert t.median == MEDIANS[n] and t.n_teams == n and t.lower_is_better is False


@pytest.mark.parametrize("n", sorted(ROWS))
def test_thresholds_lower_is_better(n):
    scores = [float(s) for s in range(n, 0, -1)]  # worst first on purpose; best first is 1, 2, ...: row k holds k
    t = medal_thresholds(scores, lower_is_better=True)
    assert (t.gold, t.silver, t.bronze) == ROWS[n]
    assert t.median == MEDIANS[n] and t.n_teams == n and t.lower_is_better is True


def test_exact_values_at_tier_boundaries():
    # spelled out once more as plain numbers for the boundaries the rules change at
    assert medal_thresholds(range(1, 100), False).model_dump() == dict(
        gold=91.0, silver=81.0, bronze=61.0, median=50.0, lower_is_better=False, n_teams=99)
    assert medal_thresholds(range(1, 101), False).model_dump() == dict(
        gold=91.0, silver=81.0, bronze=61.0, median=50.5, lower_is_better=False, n_teams=100)
    assert medal_thresholds(range(1, 250), False).model_dump() == dict(
        gold=240.0, silver=201.0, bronze=151.0, median=125.0, lower_is_better=False, n_teams=249)
    assert medal_thresholds(range(1, 251), False).model_dump() == dict(
        gold=241.0, silver=201.0, bronze=151.0, median=125.5, lower_is_better=False, n_teams=250)
    assert medal_thresholds(range(1, 1000), True).model_dump() == dict(
        gold=11.0, silver=50.0, bronze=100.0, median=500.0, lower_is_better=True, n_teams=999)
    assert medal_thresholds(range(1, 1001), True).model_dump() == dict(
        gold=12.0, silver=50.0, bronze=100.0, median=500.5, lower_is_better=True, n_teams=1000)


def test_ties_and_bad_input():
    t = medal_thresholds([0.9, 0.9, 0.9, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], lower_is_better=False)
    assert (t.gold, t.silver, t.bronze, t.median) == (0.9, 0.9, 0.5, 0.1)
    with pytest.raises(ValueError):
        medal_thresholds([], lower_is_better=False)
    with pytest.raises(ValueError, match="NaN"):
        medal_thresholds([1.0, float("nan")], lower_is_better=False)


HIGH = MedalThresholds(gold=0.9, silver=0.8, bronze=0.7, median=0.5, lower_is_better=False, n_teams=100)
LOW = MedalThresholds(gold=0.1, silver=0.2, bronze=0.3, median=0.5, lower_is_better=True, n_teams=100)


def flags(report):
    return report.gold_medal, report.silver_medal, report.bronze_medal, report.any_medal, report.above_median


def test_report_higher_is_better():
    assert flags(report_for("c", 0.95, HIGH)) == (True, False, False, True, True)
    assert flags(report_for("c", 0.9, HIGH)) == (True, False, False, True, True)  # equal earns gold
    assert flags(report_for("c", 0.8, HIGH)) == (False, True, False, True, True)
    assert flags(report_for("c", 0.7, HIGH)) == (False, False, True, True, True)
    assert flags(report_for("c", 0.6999, HIGH)) == (False, False, False, False, True)
    assert flags(report_for("c", 0.5, HIGH)) == (False, False, False, False, False)  # median is not above it
    assert flags(report_for("c", 0.1, HIGH)) == (False, False, False, False, False)
    r = report_for("spaceship-titanic", 0.85, HIGH)
    assert r.competition_id == "spaceship-titanic" and r.score == 0.85 and r.valid_submission
    assert (r.gold_threshold, r.silver_threshold, r.bronze_threshold, r.median_threshold) == (0.9, 0.8, 0.7, 0.5)
    assert r.is_lower_better is False


def test_report_lower_is_better():
    assert flags(report_for("c", 0.05, LOW)) == (True, False, False, True, True)
    assert flags(report_for("c", 0.1, LOW)) == (True, False, False, True, True)
    assert flags(report_for("c", 0.2, LOW)) == (False, True, False, True, True)
    assert flags(report_for("c", 0.3, LOW)) == (False, False, True, True, True)
    assert flags(report_for("c", 0.4, LOW)) == (False, False, False, False, True)
    assert flags(report_for("c", 0.5, LOW)) == (False, False, False, False, False)
    assert flags(report_for("c", 0.9, LOW)) == (False, False, False, False, False)
    assert report_for("c", 0.2, LOW).is_lower_better is True


def test_report_invalid_submission():
    for score in (None, float("nan")):
        r = report_for("c", score, LOW)
        assert r.score is None and r.valid_submission is False
        assert flags(r) == (False, False, False, False, False)
        assert r.gold_threshold == 0.1 and r.median_threshold == 0.5
    assert report_for("c", 0.0, HIGH).valid_submission is True  # a zero score is still a valid one


def test_thresholds_feed_report():
    t = medal_thresholds(range(1, 101), lower_is_better=True)  # gold 10, silver 20, bronze 40, median 50.5
    assert flags(report_for("c", 40.0, t)) == (False, False, True, True, True)
    assert flags(report_for("c", 50.0, t)) == (False, False, False, False, True)
    assert flags(report_for("c", 50.5, t)) == (False, False, False, False, False)


def test_read_leaderboard(tmp_path: Path):
    path = tmp_path / "leaderboard.csv"
    path.write_text("teamName,score,submissionDate\na,0.91,2020\nb,0.875,2020\nc,0.5,2020\n")
    assert read_leaderboard(path) == [0.91, 0.875, 0.5]
    (tmp_path / "no_score.csv").write_text("team,points\na,1\n")
    with pytest.raises(ValueError, match="score"):
        read_leaderboard(tmp_path / "no_score.csv")
    (tmp_path / "bad.csv").write_text("team,score\na,1\nb,oops\n")
    with pytest.raises(ValueError, match="non-numeric"):
        read_leaderboard(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("team,score\n")
    with pytest.raises(ValueError, match="no rows"):
        read_leaderboard(tmp_path / "empty.csv")
    with pytest.raises(ValueError, match="cannot read"):
        read_leaderboard(tmp_path / "absent.csv")
