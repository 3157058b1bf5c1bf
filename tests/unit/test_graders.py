"""Grader registry: known scores by hand, invalid submissions reported (never raised), id alignment."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grading.graders import GRADERS, GradeResult, grade_submission, levenshtein, lower_is_better

ALL = ["accuracy", "roc_auc", "f1", "f1_macro", "f1_micro", "quadratic_weighted_kappa", "mcc", "log_loss", "rmse",
       "rmsle", "mae", "exact_match", "cer"]


def frame(ids, **columns) -> pd.DataFrame:
    return pd.DataFrame({"id": ids, **columns})


def valid_score(result: GradeResult) -> float:
    assert result.valid, result.reason
    assert result.reason is None and result.score is not None
    return result.score


def invalid(result: GradeResult, *words: str) -> None:
    assert not result.valid and result.score is None
    assert result.reason and "\n" not in result.reason
    for word in words:
        assert word.lower() in result.reason.lower(), result.reason


def mann_whitney_auc(y, p) -> float:
    """AUC as the fraction of (positive, negative) pairs ranked correctly, ties count half."""
    pos = [s for t, s in zip(y, p) if t == 1]
    neg = [s for t, s in zip(y, p) if t == 0]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def naive_levenshtein(a: str, b: str) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        table[i][0] = i
    for j in range(len(b) + 1):
        table[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1,
                              table[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return table[-1][-1]


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_directions():
    assert sorted(GRADERS) == sorted(ALL)
    assert {g for g in ALL if lower_is_better(g)} == {"log_loss", "rmse", "rmsle", "mae", "cer"}
    kinds = {name: spec.prediction for name, spec in GRADERS.items()}
    assert kinds["roc_auc"] == kinds["log_loss"] == "probability"
    assert kinds["cer"] == kinds["exact_match"] == "string"
    assert kinds["accuracy"] == "label" and kinds["rmse"] == "number"


def test_unknown_grader_lists_known_names():
    with pytest.raises(ValueError) as err:
        grade_submission("bleu", frame([1], y=[1]), frame([1], y=[1]))
    for name in ALL:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="accuracy"):
        lower_is_better("nope")


# ----------------------------------------------------------------------------- known scores


def test_accuracy_aligns_by_id_whatever_the_order():
    answers = frame([10, 11, 12, 13, 14], label=["a", "b", "a", "c", "b"])
    # same predictions, rows reversed: 10 a ok, 11 b ok, 12 c wrong, 13 c ok, 14 a wrong -> 3/5
    sub = frame([14, 13, 12, 11, 10], label=["a", "c", "c", "b", "a"])
    assert valid_score(grade_submission("accuracy", sub, answers)) == pytest.approx(0.6)


def test_accuracy_from_csv_files_with_numeric_and_boolean_spellings(tmp_path: Path):
    (tmp_path / "answers.csv").write_text("PassengerId,Transported\n0001_01,True\n0002_01,False\n0003_01,True\n")
    (tmp_path / "sub.csv").write_text("PassengerId,Transported\n0003_01,true\n0001_01,TRUE\n0002_01,True\n")
    assert valid_score(grade_submission("accuracy", tmp_path / "sub.csv", tmp_path / "answers.csv")) == pytest.approx(2 / 3)
    # integer labels written as floats and ids with leading zeros still match by value
    answers = frame([1, 2, 3, 4], y=[0, 1, 2, 1])
    (tmp_path / "s2.csv").write_text("id,y\n004,1.0\n3,2\n2.0,0\n1,0.0\n")
    assert valid_score(grade_submission("accuracy", str(tmp_path / "s2.csv"), answers)) == pytest.approx(0.75)


def test_accuracy_multi_column_counts_every_cell():
    answers = frame([1, 2], a=["x", "y"], b=["p", "q"])
    sub = frame([2, 1], b=["q", "q"], a=["y", "y"])  # cells: (1,a) wrong, (1,b) wrong, (2,a) ok, (2,b) ok
    assert valid_score(grade_submission("accuracy", sub, answers)) == pytest.approx(0.5)


def test_roc_auc_binary():
    y = [0, 0, 1, 1]
    p = [0.1, 0.4, 0.35, 0.8]  # 3 of 4 positive/negative pairs ordered correctly
    result = grade_submission("roc_auc", frame([1, 2, 3, 4], target=p), frame([1, 2, 3, 4], target=y))
    assert valid_score(result) == pytest.approx(0.75) == pytest.approx(mann_whitney_auc(y, p))


def test_roc_auc_multiclass_is_macro_one_vs_rest():
    ids = list(range(6))
    classes = [0, 1, 2, 0, 1, 2]
    onehot = {f"c{k}": [int(c == k) for c in classes] for k in range(3)}
    probs = {
        "c0": [0.6, 0.3, 0.2, 0.3, 0.5, 0.1],
        "c1": [0.3, 0.4, 0.3, 0.3, 0.2, 0.5],
        "c2": [0.1, 0.3, 0.5, 0.4, 0.3, 0.4],
    }
    expected = np.mean([mann_whitney_auc(onehot[c], probs[c]) for c in ("c0", "c1", "c2")])
    sub = frame(ids[::-1], **{c: v[::-1] for c, v in probs.items()})
    assert valid_score(grade_submission("roc_auc", sub, frame(ids, **onehot))) == pytest.approx(expected)
    # the oracle itself, by hand for c0: positive 0.6 beats all 4 negatives, positive 0.3 beats 0.2 and 0.1
    # and ties 0.3 -> (4 + 2.5) / 8
    assert mann_whitney_auc(onehot["c0"], probs["c0"]) == pytest.approx(6.5 / 8)


def test_f1_binary_default_positive_is_minority_class():
    ids = list(range(6))
    answers = frame(ids, y=[1, 0, 0, 0, 1, 0])
    sub = frame(ids, y=[1, 1, 0, 0, 0, 0])
    # positive = 1 (2 of 6): tp=1, fp=1, fn=1 -> precision = recall = 0.5
    assert valid_score(grade_submission("f1", sub, answers)) == pytest.approx(0.5)
    # positive = 0: tp=3 (ids 2,3,5), fp=1 (id 4), fn=1 (id 1) -> 2*3 / (2*3 + 1 + 1)
    assert valid_score(grade_submission("f1", sub, answers, params={"pos_label": 0})) == pytest.approx(0.75)


def test_f1_string_labels_and_ties():
    answers = frame([1, 2, 3], y=["ham", "spam", "ham"])
    sub = frame([1, 2, 3], y=["spam", "spam", "ham"])  # positive spam: tp=1, fp=1, fn=0 -> 2/3
    assert valid_score(grade_submission("f1", sub, answers)) == pytest.approx(2 / 3)
    tie = frame([1, 2], y=[0, 1])  # equally rare: the label sorting last (1) is positive
    assert valid_score(grade_submission("f1", frame([1, 2], y=[1, 1]), tie)) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="pos_label"):
        grade_submission("f1", sub, answers, params={"pos_label": "eggs"})
    with pytest.raises(ValueError, match="f1_macro"):
        grade_submission("f1", frame([1, 2, 3], y=[0, 1, 2]), frame([1, 2, 3], y=[0, 1, 2]))
    with pytest.raises(ValueError, match="parameter"):
        grade_submission("accuracy", sub, answers, params={"pos_label": "spam"})


def test_f1_macro_by_hand():
    ids = list(range(6))
    answers = frame(ids, y=["a", "a", "b", "b", "c", "c"])
    sub = frame(ids, y=["a", "b", "b", "b", "c", "a"])
    # a: tp1 fp1 fn1 -> 0.5; b: tp2 fp1 fn0 -> 0.8; c: tp1 fp0 fn1 -> 2/3
    expected = (0.5 + 0.8 + 2 / 3) / 3
    assert valid_score(grade_submission("f1_macro", sub, answers)) == pytest.approx(expected)


def test_log_loss_multiclass_binary_and_clipping():
    ids = [1, 2, 3]
    answers = frame(ids, A=[1, 0, 0], B=[0, 1, 0], C=[0, 0, 1])
    sub = frame(ids, A=[0.7, 0.2, 0.1], B=[0.2, 0.5, 0.1], C=[0.1, 0.3, 0.8])
    expected = -(math.log(0.7) + math.log(0.5) + math.log(0.8)) / 3
    assert valid_score(grade_submission("log_loss", sub, answers)) == pytest.approx(expected)
    # a zero probability on the true class is clipped to 1e-15
    hard = frame(ids, A=[0.0, 0.0, 0.0], B=[1.0, 1.0, 0.0], C=[0.0, 0.0, 1.0])
    clipped = -(math.log(1e-15) + math.log(1 - 1e-15) + math.log(1 - 1e-15)) / 3
    assert valid_score(grade_submission("log_loss", hard, answers)) == pytest.approx(clipped)
    binary = grade_submission("log_loss", frame([1, 2], p=[0.9, 0.4]), frame([1, 2], p=[1, 0]))
    assert valid_score(binary) == pytest.approx(-(math.log(0.9) + math.log(0.6)) / 2)


def test_regression_metrics_by_hand():
    answers = frame([1, 2, 3, 4], y=[1.0, 2.0, 3.0, 4.0])
    sub = frame([4, 3, 2, 1], y=[2.0, 3.0, 2.0, 1.0])  # by id: 1 -> 1.0, 2 -> 2.0, 3 -> 3.0, 4 -> 2.0 (error 2)
    assert valid_score(grade_submission("rmse", sub, answers)) == pytest.approx(math.sqrt(4 / 4))
    assert valid_score(grade_submission("mae", sub, answers)) == pytest.approx(2 / 4)
    rmsle = math.sqrt(((math.log(3.0) - math.log(5.0)) ** 2) / 4)
    assert valid_score(grade_submission("rmsle", sub, answers)) == pytest.approx(rmsle)
    ans2 = frame([1, 2], a=[0.0, 1.0], b=[2.0, 3.0])
    sub2 = frame([1, 2], a=[1.0, 1.0], b=[2.0, 0.0])  # squared errors 1, 0, 0, 9 over 4 cells
    assert valid_score(grade_submission("rmse", sub2, ans2)) == pytest.approx(math.sqrt(10 / 4))


def test_exact_match_strips_whitespace():
    answers = frame([1, 2, 3, 4], text=["hello world", "abc", "A", ""])
    sub = frame([1, 2, 3, 4], text=["  hello world\t", "abd", "a", "  "])
    assert valid_score(grade_submission("exact_match", sub, answers)) == pytest.approx(2 / 4)


def test_cer_known_distances(tmp_path: Path):
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("flaw", "lawn") == 2
    assert levenshtein("", "abc") == 3 and levenshtein("abc", "") == 3 and levenshtein("same", "same") == 0
    assert levenshtein("ab", "ba") == 2 and levenshtein("日本語", "日本") == 1
    answers = frame([1, 2, 3], text=["kitten", "flaw", "abc"])
    sub = frame([3, 1, 2], text=["abc", "sitting", "lawn"])
    assert valid_score(grade_submission("cer", sub, answers)) == pytest.approx((3 + 2 + 0) / (6 + 4 + 3))
    # in a CSV an empty cell is an empty prediction: every reference character is a deletion
    (tmp_path / "sub.csv").write_text("id,text\n1,kitten\n2,\n3,abc\n")
    assert valid_score(grade_submission("cer", tmp_path / "sub.csv", answers)) == pytest.approx(4 / 13)


def test_levenshtein_matches_naive_dp_on_random_strings():
    rng = random.Random(7)
    for _ in range(400):
        a = "".join(rng.choice("abcd") for _ in range(rng.randint(0, 15)))
        b = "".join(rng.choice("abce") for _ in range(rng.randint(0, 15)))
        assert levenshtein(a, b) == naive_levenshtein(a, b), (a, b)
    long_a = "".join(rng.choice("abcdefgh") for _ in range(130))  # longer than a 64-bit word
    long_b = "".join(rng.choice("abcdefgh") for _ in range(150))
    assert levenshtein(long_a, long_b) == naive_levenshtein(long_a, long_b)


def test_explicit_id_and_target_columns():
    answers = pd.DataFrame({"extra": [9, 9], "key": ["x", "y"], "t": [1.0, 3.0]})
    sub = pd.DataFrame({"t": [2.0, 1.0], "key": ["y", "x"]})
    result = grade_submission("mae", sub, answers, id_column="key", target_columns=["t"])
    assert valid_score(result) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="nope"):
        grade_submission("mae", sub, answers, id_column="nope")


# ----------------------------------------------------------------------------- invalid submissions


ANS = frame([1, 2, 3], y=[0.5, 1.5, 2.5])


def test_unreadable_and_empty_files(tmp_path: Path):
    cases = {
        "missing.csv": (None, "not found"),
        "empty.csv": (b"", "empty"),
        "header_only.csv": (b"id,y\n", "empty"),
        "quote.csv": (b'id,y\n1,"0.5\n2,1\n', "unreadable"),
        "ragged.csv": (b"id,y\n1,0.5,7\n2,1.5\n3,2.5\n", "unreadable"),
        "binary.csv": (b"\xff\xfe\x00\x81id,y", "unreadable"),
    }
    for name, (content, word) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        invalid(grade_submission("rmse", path, ANS), word)
    invalid(grade_submission("rmse", tmp_path, ANS), "not found")  # a directory
    invalid(grade_submission("rmse", pd.DataFrame(columns=["id", "y"]), ANS), "empty")


def test_wrong_columns():
    invalid(grade_submission("rmse", frame([1, 2, 3], pred=[1, 2, 3]), ANS), "missing column", "'y'")
    invalid(grade_submission("rmse", pd.DataFrame({"y": [1, 2, 3]}), ANS), "missing column", "'id'")
    invalid(grade_submission("rmse", frame([1, 2, 3], y=[1, 2, 3], z=[0, 0, 0]), ANS), "extra column", "'z'")
    dup = pd.DataFrame([[1, 1.0, 1.0], [2, 2.0, 2.0], [3, 3.0, 3.0]], columns=["id", "y", "y"])
    invalid(grade_submission("rmse", dup, ANS), "duplicated column")


def test_wrong_ids_and_row_counts(tmp_path: Path):
    invalid(grade_submission("rmse", frame([1, 2], y=[1, 2]), ANS), "row count", "1 missing id")
    invalid(grade_submission("rmse", frame([1, 2, 3, 4], y=[1, 2, 3, 4]), ANS), "row count", "unknown id")
    invalid(grade_submission("rmse", frame([1, 2, 2], y=[1, 2, 2]), ANS), "duplicated id", "missing id")
    invalid(grade_submission("rmse", frame([1, 2, 7], y=[1, 2, 3]), ANS), "ids do not match", "'3'", "'7'")
    invalid(grade_submission("rmse", frame([1.0, None, 3.0], y=[1, 2, 3]), ANS), "blank", "id")
    (tmp_path / "s.csv").write_text("id,y\n1,1\n,2\n3,3\n")
    invalid(grade_submission("rmse", tmp_path / "s.csv", ANS), "blank")


def test_bad_numbers(tmp_path: Path):
    invalid(grade_submission("rmse", frame([1, 2, 3], y=[1.0, np.nan, 2.0]), ANS), "nan")
    invalid(grade_submission("mae", frame([1, 2, 3], y=[1.0, "abc", 2.0]), ANS), "non-numeric", "abc")
    invalid(grade_submission("rmse", frame([1, 2, 3], y=[1.0, np.inf, 2.0]), ANS), "non-finite")
    invalid(grade_submission("rmsle", frame([1, 2, 3], y=[1.0, -0.5, 2.0]), ANS), "negative")
    (tmp_path / "s.csv").write_text("id,y\n1,1.0\n2,\n3,NaN\n")
    invalid(grade_submission("rmse", tmp_path / "s.csv", ANS), "nan")
    (tmp_path / "t.csv").write_text("id,y\n1,1.0\n2,two\n3,3\n")
    invalid(grade_submission("rmse", tmp_path / "t.csv", ANS), "non-numeric", "two")


def test_bad_probabilities():
    binary = frame([1, 2, 3], y=[0, 1, 1])
    invalid(grade_submission("roc_auc", frame([1, 2, 3], y=[0.2, 1.3, 0.4]), binary), "outside [0, 1]")
    invalid(grade_submission("log_loss", frame([1, 2, 3], y=[-0.1, 0.5, 0.4]), binary), "outside [0, 1]")
    invalid(grade_submission("roc_auc", frame([1, 2, 3], y=[0.2, "x", 0.4]), binary), "non-numeric")
    answers = frame([1, 2], A=[1, 0], B=[0, 1])
    invalid(grade_submission("log_loss", frame([1, 2], A=[0.6, 0.2], B=[0.6, 0.8]), answers), "sum to one")
    # within the tolerance: accepted
    ok = frame([1, 2], A=[0.6, 0.2], B=[0.40001, 0.8])
    assert grade_submission("log_loss", ok, answers).valid
    invalid(grade_submission("log_loss", frame([1, 2], A=[0.6, np.nan], B=[0.4, 0.8]), answers), "nan")


def test_bad_labels_and_strings(tmp_path: Path):
    answers = frame([1, 2, 3], y=["a", "b", "a"])
    invalid(grade_submission("accuracy", frame([1, 2, 3], y=["a", None, "a"]), answers), "missing")
    (tmp_path / "s.csv").write_text("id,y\n1,a\n2,\n3,a\n")
    invalid(grade_submission("f1_macro", tmp_path / "s.csv", answers), "missing")
    texts = frame([1, 2], t=["abc", "de"])
    invalid(grade_submission("cer", frame([1, 2], t=["abc", None]), texts), "missing")
    invalid(grade_submission("exact_match", frame([1, 2], t=[np.nan, "de"]), texts), "missing")


def test_every_grader_reports_instead_of_raising_on_garbage(tmp_path: Path):
    answers = {
        "accuracy": frame([1, 2], y=[0, 1]), "f1": frame([1, 2], y=[0, 1]), "f1_macro": frame([1, 2], y=[0, 1]),
        "roc_auc": frame([1, 2], y=[0, 1]), "log_loss": frame([1, 2], y=[0, 1]), "rmse": frame([1, 2], y=[0, 1]),
        "rmsle": frame([1, 2], y=[0, 1]), "mae": frame([1, 2], y=[0, 1]),
        "exact_match": frame([1, 2], y=["a", "b"]), "cer": frame([1, 2], y=["a", "b"]),
        "f1_micro": frame([1, 2], y=[0, 1]), "quadratic_weighted_kappa": frame([1, 2], y=[0, 1]),
        "mcc": frame([1, 2], y=[0, 1]),
    }
    (tmp_path / "garbage.csv").write_bytes(b"\x00\x01 not,a\ncsv")
    for name in ALL:
        result = grade_submission(name, tmp_path / "garbage.csv", answers[name])
        assert not result.valid and result.reason and result.grader == name
        result = grade_submission(name, frame([5, 6], y=[1, 1]), answers[name])
        invalid(result, "ids")


# ----------------------------------------------------------------------------- malformed answers


def test_malformed_answers_raise_value_error(tmp_path: Path):
    sub = frame([1, 2], y=[0.1, 0.9])
    with pytest.raises(ValueError, match="duplicated ids"):
        grade_submission("rmse", sub, frame([1, 1], y=[0.0, 1.0]))
    with pytest.raises(ValueError, match="0/1"):
        grade_submission("log_loss", sub, frame([1, 2], y=[0.3, 1.0]))
    with pytest.raises(ValueError, match="single class"):
        grade_submission("roc_auc", sub, frame([1, 2], y=[1, 1]))
    with pytest.raises(ValueError, match="target"):
        grade_submission("rmse", sub, pd.DataFrame({"id": [1, 2]}))
    with pytest.raises(ValueError, match="cannot read answers"):
        grade_submission("rmse", sub, tmp_path / "absent.csv")
    with pytest.raises(ValueError, match="non-numeric"):
        grade_submission("rmse", sub, frame([1, 2], y=["x", 1.0]))
