"""Grader registry: score a submission against held-out answers, MLE-bench style.

``grade_submission(name, submission, answers)`` never raises for a bad submission; it returns a
``GradeResult`` with ``valid=False`` and a one-line reason instead. It raises ``ValueError`` only
for programmer errors: an unknown grader name, bad ``id_column``/``target_columns``/``params``,
or malformed answers.

Alignment and formats
---------------------
* The id column defaults to the answers' first column, the target columns to the rest. Rows are
  matched by id, so the submission may list them in any order. The submission must have exactly
  the id column plus the target columns (any order); extra columns, missing columns, missing or
  blank ids, duplicated ids, unknown ids and a wrong row count all make it invalid.
* CSV files are read as text (``dtype=str``, no NA guessing) and converted per grader kind:
  numeric-looking ids and labels are compared by value (``7``, ``7.0`` and ``007`` are the same
  id; ``1`` and ``1.0`` the same label); ``true``/``false`` in any case are booleans.
* ``label`` graders (accuracy, f1, f1_macro) compare labels; a blank/NaN prediction is invalid.
* ``probability`` graders (roc_auc, log_loss) need finite numbers in [0, 1] (1e-9 slack). The
  answers hold 0/1 indicators: one column (binary: the submission gives P(positive)) or one
  column per class (one-hot for log_loss; one-hot or multi-label for roc_auc, which averages the
  per-column AUCs, i.e. one-vs-rest macro). log_loss rows with several columns must sum to one
  within ``PROB_SUM_ATOL``.
* ``number`` graders (rmse, rmsle, mae) need finite numbers; with several target columns every
  cell counts as one observation. rmsle rejects negative predictions.
* ``string`` graders (exact_match, cer) strip surrounding whitespace. An empty cell in a CSV is an
  empty prediction (valid, and simply wrong); a NaN/None in a DataFrame submission is invalid.

Parameters (``params=``): ``f1`` takes ``pos_label``; by default the positive label is the
answers' minority class (ties: the label that sorts last, so ``1`` for 0/1 and ``True`` for
booleans). No other grader takes parameters.

Scores are not rounded (MLE-bench rounds to 5 decimals before ranking; callers may do so).
Levenshtein distance for ``cer`` is implemented here (bit-parallel, Myers/Hyyrö); no package used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype
from pydantic import BaseModel
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    f1_score,
    matthews_corrcoef,
    mean_absolute_error,
    roc_auc_score,
    root_mean_squared_error,
    root_mean_squared_log_error,
)

PROB_SUM_ATOL = 1e-4  # how far a row of class probabilities may be from summing to one
PROB_RANGE_SLACK = 1e-9  # float noise tolerated outside [0, 1] (values are then clipped)
LOG_LOSS_EPS = 1e-15

PredictionKind = Literal["label", "probability", "number", "string"]


class InvalidSubmissionError(Exception):
    """The submission cannot be graded; the message is a one-line reason."""


class GradeResult(BaseModel):
    score: float | None
    valid: bool
    reason: str | None
    grader: str


ScoreFn = Callable[[np.ndarray, np.ndarray, Mapping[str, Any]], float]
CheckFn = Callable[[np.ndarray, Mapping[str, Any]], None]


@dataclass(frozen=True)
class GraderSpec:
    """One metric: ``score(y_true, y_pred, params)`` on aligned (n_rows, n_targets) arrays."""

    name: str
    score: ScoreFn
    lower_is_better: bool
    prediction: PredictionKind
    description: str
    single_target: bool = False  # exactly one target column
    rows_sum_to_one: bool = False  # with several columns, each row of probabilities sums to one
    nonnegative: bool = False  # predictions and answers must be >= 0
    check_answers: CheckFn | None = None  # raises ValueError on malformed answers / params
    params: tuple[str, ...] = ()  # accepted parameter names


# --------------------------------------------------------------------------- text / number parsing

_TRUE_FALSE = {"true": "True", "false": "False"}


def _format_numbers(values: np.ndarray) -> np.ndarray:
    """Canonical text of numbers: integral values without a decimal point, others as repr."""
    out = np.empty(len(values), dtype=object)
    integral = np.isfinite(values) & (np.abs(values) < 2.0**53)
    integral[integral] = values[integral] == np.round(values[integral])
    out[integral] = [str(v) for v in values[integral].astype(np.int64)]
    out[~integral] = [repr(float(v)) for v in values[~integral]]
    return out


def _canonical_text(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(canonical text per value, missing mask) for ids and class labels."""
    if is_bool_dtype(series.dtype):
        missing = series.isna().to_numpy()
        return np.array([str(bool(v)) if not m else "" for v, m in zip(series, missing)], object), missing
    if is_numeric_dtype(series.dtype):
        values = series.to_numpy(dtype=float, na_value=np.nan)
        missing = np.isnan(values)
        return _format_numbers(values), missing
    raw = series.to_numpy(dtype=object)
    missing = np.asarray(pd.isna(raw), dtype=bool)
    text = np.array(["" if m else str(v).strip() for v, m in zip(raw, missing)], dtype=object)
    missing |= text == ""
    numbers = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(dtype=float)
    parsed = ~np.isnan(numbers) & ~missing
    if parsed.any():
        text[parsed] = _format_numbers(numbers[parsed])
    for i in np.flatnonzero(~parsed & ~missing):
        text[i] = _TRUE_FALSE.get(text[i].lower(), text[i])
    return text, missing


def canonical_ids(values: pd.Series | Sequence[Any]) -> np.ndarray:
    """Ids as the graders compare them: text, trimmed, numbers without a trailing `.0`."""
    return _canonical_text(pd.Series(values) if not isinstance(values, pd.Series) else values)[0]


def _numbers(series: pd.Series, column: str) -> np.ndarray:
    """Finite floats, or InvalidSubmissionError naming the first problem."""
    if is_bool_dtype(series.dtype):
        if series.isna().any():
            count = int(series.isna().sum())
            raise InvalidSubmissionError(f"{count} NaN/missing value(s) in column {column!r}")
        return series.to_numpy(dtype=float)
    if is_numeric_dtype(series.dtype):
        values = series.to_numpy(dtype=float, na_value=np.nan)
    else:
        raw = series.to_numpy(dtype=object)
        missing = np.asarray(pd.isna(raw), dtype=bool)
        text = np.array(["" if m else str(v).strip() for v, m in zip(raw, missing)], dtype=object)
        missing |= text == ""
        values = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(dtype=float)
        lowered = np.array([t.lower() for t in text], dtype=object)
        bad = np.isnan(values) & ~missing & (lowered != "nan")
        if bad.any():
            example = text[np.flatnonzero(bad)[0]]
            raise InvalidSubmissionError(
                f"{int(bad.sum())} non-numeric value(s) in column {column!r}, e.g. {example[:40]!r}"
            )
    nan = np.isnan(values)
    if nan.any():
        raise InvalidSubmissionError(f"{int(nan.sum())} NaN/missing value(s) in column {column!r}")
    if not np.isfinite(values).all():
        raise InvalidSubmissionError(f"non-finite (infinite) value(s) in column {column!r}")
    return values


def _strings(series: pd.Series, column: str, *, missing_ok: bool) -> np.ndarray:
    raw = series.to_numpy(dtype=object)
    missing = np.asarray(pd.isna(raw), dtype=bool)
    if missing.any() and not missing_ok:
        raise InvalidSubmissionError(f"{int(missing.sum())} NaN/missing prediction(s) in column {column!r}")
    return np.array(["" if m else str(v).strip() for v, m in zip(raw, missing)], dtype=object)


# --------------------------------------------------------------------------- preparing values


def _prepare_values(
    spec: GraderSpec, frame: pd.DataFrame, *, answers: bool, ids: np.ndarray | None = None
) -> np.ndarray:
    """(n_rows, n_targets) array in the grader's value kind; InvalidSubmissionError on problems."""
    columns = []
    for name in frame.columns:
        col = frame[name]
        if spec.prediction == "label":
            text, missing = _canonical_text(col)
            if missing.any():
                raise InvalidSubmissionError(f"{int(missing.sum())} NaN/missing label(s) in column {name!r}")
            columns.append(text)
        elif spec.prediction == "string":
            columns.append(_strings(col, name, missing_ok=answers))
        else:
            values = _numbers(col, name)
            if spec.prediction == "probability" and not answers:
                low, high = values.min(initial=0.0), values.max(initial=1.0)
                if low < -PROB_RANGE_SLACK or high > 1 + PROB_RANGE_SLACK:
                    bad = low if low < -PROB_RANGE_SLACK else high
                    raise InvalidSubmissionError(
                        f"probabilities outside [0, 1] in column {name!r} (e.g. {bad:.6g})"
                    )
                values = np.clip(values, 0.0, 1.0)
            if spec.nonnegative and (values < 0).any():
                raise InvalidSubmissionError(
                    f"{int((values < 0).sum())} negative value(s) in column {name!r}; {spec.name} needs >= 0"
                )
            columns.append(values)
    out = np.column_stack(columns) if columns else np.empty((len(frame), 0))
    if spec.prediction == "probability" and not answers and spec.rows_sum_to_one and out.shape[1] > 1:
        sums = out.sum(axis=1)
        off = np.abs(sums - 1.0) > PROB_SUM_ATOL
        if off.any():
            i = int(np.flatnonzero(off)[0])
            where = f"id {str(ids[i])!r}" if ids is not None else f"row {i}"
            raise InvalidSubmissionError(
                f"{int(off.sum())} row(s) of class probabilities do not sum to one "
                f"(e.g. {where}: {sums[i]:.6g})"
            )
    return out


# --------------------------------------------------------------------------- answer checks


def _check_indicators(y_true: np.ndarray, spec_name: str) -> None:
    if not np.isin(y_true, (0.0, 1.0)).all():
        raise ValueError(f"{spec_name}: answers must be 0/1 indicators (one column, or one column per class)")


def _check_roc_auc(y_true: np.ndarray, params: Mapping[str, Any]) -> None:
    _check_indicators(y_true, "roc_auc")
    for j in range(y_true.shape[1]):
        if len(np.unique(y_true[:, j])) < 2:
            raise ValueError(f"roc_auc: answers column {j} holds a single class; AUC is undefined")


def _check_log_loss(y_true: np.ndarray, params: Mapping[str, Any]) -> None:
    _check_indicators(y_true, "log_loss")
    if y_true.shape[1] > 1 and not (y_true.sum(axis=1) == 1).all():
        raise ValueError("log_loss: multi-class answers must be one-hot (exactly one 1 per row)")


def _positive_label(y_true: np.ndarray, params: Mapping[str, Any]) -> str:
    labels, counts = np.unique(y_true[:, 0].astype(str), return_counts=True)
    if "pos_label" in params and params["pos_label"] is not None:
        pos, missing = _canonical_text(pd.Series([params["pos_label"]], dtype=object))
        if missing[0] or pos[0] not in set(labels):
            raise ValueError(f"f1: pos_label {params['pos_label']!r} is not a label in the answers")
        return str(pos[0])
    # minority class; among equally rare labels the one that sorts last (as text) wins
    rarest = counts.min()
    return str(max(label for label, count in zip(labels, counts) if count == rarest))


def _check_f1(y_true: np.ndarray, params: Mapping[str, Any]) -> None:
    n_classes = len(np.unique(y_true[:, 0].astype(str)))
    if n_classes > 2:
        raise ValueError(f"f1 is binary but the answers hold {n_classes} classes; use f1_macro")
    _positive_label(y_true, params)


def _check_cer(y_true: np.ndarray, params: Mapping[str, Any]) -> None:
    if sum(len(s) for s in y_true.ravel()) == 0:
        raise ValueError("cer: the answers hold no reference characters")


# --------------------------------------------------------------------------- scoring functions


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray, params: Mapping[str, Any]) -> float:
    return float(accuracy_score(y_true.ravel().astype(str), y_pred.ravel().astype(str)))


def _roc_auc(y_true: np.ndarray, y_pred: np.ndarray, params: Mapping[str, Any]) -> float:
    per_column = [roc_auc_score(y_true[:, j], y_pred[:, j]) for j in range(y_true.shape[1])]
    return float(np.mean(per_column))


def _f1(y_true: np.ndarray, y_pred: np.ndarray, params: Mapping[str, Any]) -> float:
    pos = _positive_label(y_true, params)
    truth = y_true[:, 0].astype(str) == pos
    pred = y_pred[:, 0].astype(str) == pos
    return float(f1_score(truth, pred, zero_division=0.0))


def _f1_macro(y_true: np.ndarray, y_pred: np.ndarray, params: Mapping[str, Any]) -> float:
    truth, pred = y_true[:, 0].astype(str), y_pred[:, 0].astype(str)
    labels = np.unique(truth)  # macro over the answers' classes; unknown predicted labels are just wrong
    return float(f1_score(truth, pred, labels=labels, average="macro", zero_division=0.0))


def _f1_micro(y_true: np.ndarray, y_pred: np.ndarray, params: Mapping[str, Any]) -> float:
    truth, pred = y_true[:, 0].astype(str), y_pred[:, 0].astype(str)
    return float(f1_score(truth, pred, labels=np.unique(truth), average="micro", zero_division=0.0))


def _ordinal(values: np.ndarray, what: str) -> np.ndarray:
    numbers = pd.to_numeric(pd.Series(values.ravel()), errors="coerce").to_numpy(dtype=float)
    if np.isnan(numbers).any():
        raise InvalidSubmissionError(f"quadratic weighted kappa needs numeric (ordinal) {what}")
    return numbers.astype(np.int64) if (numbers == np.round(numbers)).all() else numbers


def _qwk(y_true: np.ndarray, y_pred: np.ndarray, params: Mapping[str, Any]) -> float:
    truth, pred = _ordinal(y_true, "answers"), _ordinal(y_pred, "predictions")
    if truth.dtype != np.int64 or pred.dtype != np.int64:
        raise InvalidSubmissionError("quadratic weighted kappa needs integer labels")
    return float(cohen_kappa_score(truth, pred, weights="quadratic"))


def _mcc(y_true: np.ndarray, y_pred: np.ndarray, params: Mapping[str, Any]) -> float:
    return float(matthews_corrcoef(y_true[:, 0].astype(str), y_pred[:, 0].astype(str)))


def _log_loss(y_true: np.ndarray, y_pred: np.ndarray, params: Mapping[str, Any]) -> float:
    # Computed directly: sklearn 1.9's log_loss has no eps and clips at machine epsilon instead.
    p = np.clip(y_pred, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    if y_true.shape[1] == 1:
        y, q = y_true[:, 0], p[:, 0]
        return float(-np.mean(y * np.log(q) + (1.0 - y) * np.log(1.0 - q)))
    truth = np.argmax(y_true, axis=1)
    return float(-np.mean(np.log(p[np.arange(len(p)), truth])))


def _rmse(y_true: np.ndarray, y_pred: np.ndarray, params: Mapping[str, Any]) -> float:
    return float(root_mean_squared_error(y_true.ravel(), y_pred.ravel()))


def _rmsle(y_true: np.ndarray, y_pred: np.ndarray, params: Mapping[str, Any]) -> float:
    return float(root_mean_squared_log_error(y_true.ravel(), y_pred.ravel()))


def _mae(y_true: np.ndarray, y_pred: np.ndarray, params: Mapping[str, Any]) -> float:
    return float(mean_absolute_error(y_true.ravel(), y_pred.ravel()))


def _exact_match(y_true: np.ndarray, y_pred: np.ndarray, params: Mapping[str, Any]) -> float:
    return float(np.mean(y_true.ravel() == y_pred.ravel()))


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert/delete/substitute, cost 1 each).

    Bit-parallel dynamic programming (Myers 1999, Hyyrö 2003): one column of the classic DP table is
    held as two bit vectors of vertical +1/-1 deltas, so each character of the longer string costs
    a handful of integer operations on a len(shorter)-bit Python int.
    """
    if a == b:
        return 0
    start = 0  # common prefix and suffix never change the distance
    while start < len(a) and start < len(b) and a[start] == b[start]:
        start += 1
    end_a, end_b = len(a), len(b)
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a -= 1
        end_b -= 1
    a, b = a[start:end_a], b[start:end_b]
    if len(a) > len(b):
        a, b = b, a  # a: the pattern held in bits (the shorter one)
    m = len(a)
    if m == 0:
        return len(b)
    peq: dict[str, int] = {}
    for i, ch in enumerate(a):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    full = (1 << m) - 1
    high = 1 << (m - 1)
    pv, mv, dist = full, 0, m
    for ch in b:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (~(xh | pv) & full)
        mh = pv & xh
        if ph & high:
            dist += 1
        elif mh & high:
            dist -= 1
        ph = ((ph << 1) | 1) & full
        mh = (mh << 1) & full
        pv = mh | (~(xv | ph) & full)
        mv = ph & xv
    return dist


def _cer(y_true: np.ndarray, y_pred: np.ndarray, params: Mapping[str, Any]) -> float:
    refs, hyps = y_true.ravel(), y_pred.ravel()
    edits = sum(levenshtein(r, h) for r, h in zip(refs, hyps))
    return edits / sum(len(r) for r in refs)


GRADERS: dict[str, GraderSpec] = {
    spec.name: spec
    for spec in (
        GraderSpec("accuracy", _accuracy, False, "label", "fraction of labels equal to the answers"),
        GraderSpec(
            "roc_auc", _roc_auc, False, "probability",
            "ROC AUC; one probability column (binary) or one per class, averaged one-vs-rest (macro)",
            check_answers=_check_roc_auc,
        ),
        GraderSpec(
            "f1", _f1, False, "label",
            "binary F1; positive label = params['pos_label'] or the answers' minority class",
            single_target=True, check_answers=_check_f1, params=("pos_label",),
        ),
        GraderSpec(
            "f1_macro", _f1_macro, False, "label", "F1 averaged over the answers' classes",
            single_target=True,
        ),
        GraderSpec(
            "f1_micro", _f1_micro, False, "label", "F1 pooled over the answers' classes (micro average)",
            single_target=True,
        ),
        GraderSpec(
            "quadratic_weighted_kappa", _qwk, False, "label",
            "Cohen's kappa with quadratic weights on integer (ordinal) labels", single_target=True,
        ),
        GraderSpec(
            "mcc", _mcc, False, "label", "Matthews correlation coefficient of the labels", single_target=True,
        ),
        GraderSpec(
            "log_loss", _log_loss, True, "probability",
            "log loss, probabilities clipped to [1e-15, 1-1e-15]; one column per class or one P(1) column",
            rows_sum_to_one=True, check_answers=_check_log_loss,
        ),
        GraderSpec("rmse", _rmse, True, "number", "root mean squared error"),
        GraderSpec(
            "rmsle", _rmsle, True, "number", "root mean squared error of log1p(values)",
            nonnegative=True,
        ),
        GraderSpec("mae", _mae, True, "number", "mean absolute error"),
        GraderSpec(
            "exact_match", _exact_match, False, "string",
            "fraction of predictions equal to the answer after stripping surrounding whitespace",
        ),
        GraderSpec(
            "cer", _cer, True, "string",
            "character error rate: total Levenshtein distance / total reference characters",
            check_answers=_check_cer,
        ),
    )
}


# MLE-bench names its graders freely (about 45 names over its 82 competitions). Each known name
# maps to (our grader with the same semantics, or None where ours would score differently, and
# whether lower is better). Names are compared after `grader_key` (case, '-', ' ', '_' folded).
# A name mapped to None still gives the metric direction; grading then needs the task's grade.py.
MLEBENCH_GRADERS: dict[str, tuple[str | None, bool]] = {
    "accuracy": ("accuracy", False),
    "multi_class_classification_accuracy": ("accuracy", False),
    "auc_roc": ("roc_auc", False),
    "roc_auc": ("roc_auc", False),
    "auroc": ("roc_auc", False),
    "mean_column_wise_roc_auc": ("roc_auc", False),
    "column_wise_roc_auc": ("roc_auc", False),
    "auroc_multi_label": ("roc_auc", False),
    "weighted_auroc": (None, False),
    "multi_class_log_loss": ("log_loss", True),
    "log_loss": ("log_loss", True),
    "logloss": ("log_loss", True),
    "weighted_multi_label_log_loss": (None, True),
    "micro_f1_score": ("f1_micro", False),
    "f1_micro": ("f1_micro", False),
    "macro_f1_score": ("f1_macro", False),
    "f1_macro": ("f1_macro", False),
    "f1_score": ("f1", False),
    "f1": ("f1", False),
    "f0.5_score": (None, False),
    "probabilistic_f1_score": (None, False),
    "root_mean_squared_error": ("rmse", True),
    "rmse": ("rmse", True),
    "root_mean_squared_log_error": ("rmsle", True),
    "rmsle": ("rmsle", True),
    "mean_column_wise_rmsle": (None, True),
    "mean_absolute_error": ("mae", True),
    "mae": ("mae", True),
    "log_mean_absolute_error": (None, True),
    "quadratic_weighted_kappa": ("quadratic_weighted_kappa", False),
    "qwk": ("quadratic_weighted_kappa", False),
    "matthews_correlation_coefficient": ("mcc", False),
    "mcc": ("mcc", False),
    "exact_match": ("exact_match", False),
    "cer": ("cer", True),
    "character_error_rate": ("cer", True),
    "levenshtein_distance": (None, True),
    "levenhstein_distance": (None, True),
    "top_1_classification_error": (None, True),
    "mean_average_precision": (None, False),
    "map@5": (None, False),
    "map_at_5": (None, False),
    "map@12": (None, False),
    "label_ranking_average_precision": (None, False),
    "kendall_tau": (None, False),
    "pearson_correlation_coefficient": (None, False),
    "column_wise_spearman": (None, False),
    "jaccard_similarity": (None, False),
    "word_level_jaccard_score": (None, False),
    "dice_coefficient": (None, False),
    "global_dice": (None, False),
    "dice_hausdorff_combo": (None, False),
    "mean_precision_intersection_over_union_at_different_thresholds": (None, False),
    "map_at_iou>0.4": (None, False),
    "kl_divergence": (None, True),
    "mean_angular_error": (None, True),
    "average_haversine_distance": (None, True),
    "modified_laplace_log_likelihood": (None, False),
}


def grader_key(name: str) -> str:
    """A grader name with case and separators folded: 'Multi-Class Log-Loss' -> 'multi_class_log_loss'."""
    return "_".join(name.strip().lower().replace("-", " ").replace("_", " ").split())


def resolve_grader(name: str | None) -> tuple[str | None, bool | None]:
    """(our grader for a task's grader name, lower-is-better) — (None, None) for a name nobody knows.

    Our own names come first, then MLE-bench's names; a known name without a grader of the same
    semantics here gives (None, its direction)."""
    if not name:
        return None, None
    key = grader_key(name)
    if name in GRADERS:
        return name, GRADERS[name].lower_is_better
    if key in GRADERS:
        return key, GRADERS[key].lower_is_better
    if key in MLEBENCH_GRADERS:
        return MLEBENCH_GRADERS[key]
    return None, None


def _spec(grader: str) -> GraderSpec:
    try:
        return GRADERS[grader]
    except KeyError:
        raise ValueError(f"unknown grader {grader!r}; known graders: {', '.join(sorted(GRADERS))}") from None


def lower_is_better(grader: str) -> bool:
    return _spec(grader).lower_is_better


# --------------------------------------------------------------------------- loading


def _read_csv(path: str | Path) -> pd.DataFrame:
    """All cells as text. The header is read as a data row so that a row with more fields than the
    header is a parse error (pandas would otherwise shift it into an index) and duplicated column
    names are kept as they are; short rows are padded with empty cells."""
    raw = pd.read_csv(path, header=None, dtype=str, na_filter=False)
    frame = raw.iloc[1:].reset_index(drop=True)
    frame.columns = [str(c) for c in raw.iloc[0]]
    return frame


def _load_answers(answers: pd.DataFrame | str | Path) -> pd.DataFrame:
    if isinstance(answers, pd.DataFrame):
        frame = answers
    else:
        try:
            frame = _read_csv(answers)
        except Exception as exc:  # a missing or broken answers file is a setup error
            raise ValueError(f"cannot read answers {str(answers)!r}: {_one_line(exc)}") from exc
    if frame.columns.duplicated().any():
        raise ValueError("answers have duplicated column names")
    if len(frame) == 0:
        raise ValueError("answers have no rows")
    return frame


def _load_submission(submission: pd.DataFrame | str | Path) -> pd.DataFrame:
    if isinstance(submission, pd.DataFrame):
        frame = submission
    else:
        path = Path(submission)
        if not path.is_file():
            raise InvalidSubmissionError(f"submission file not found: {str(path)!r}")
        try:
            frame = _read_csv(path)
        except pd.errors.EmptyDataError:
            raise InvalidSubmissionError("empty submission file (no header, no rows)") from None
        except Exception as exc:
            raise InvalidSubmissionError(f"unreadable submission CSV: {_one_line(exc)}") from None
    if len(frame) == 0:
        raise InvalidSubmissionError("empty submission (no rows)")
    return frame


def _one_line(exc: BaseException | str) -> str:
    text = str(exc) if not isinstance(exc, str) else exc
    if isinstance(exc, BaseException) and not text:
        text = type(exc).__name__
    return " ".join(text.split())[:300]


def _examples(values: Sequence[Any], limit: int = 3) -> str:
    shown = ", ".join(repr(str(v)) for v in list(values)[:limit])
    return shown + (", ..." if len(values) > limit else "")


# --------------------------------------------------------------------------- grading


def _align(
    frame: pd.DataFrame, id_column: str, targets: list[str], answer_ids: pd.Index
) -> pd.DataFrame:
    """The submission's target columns in the answers' row order, or InvalidSubmissionError."""
    columns = [str(c) for c in frame.columns]
    expected = [id_column, *targets]
    missing_cols = [c for c in expected if c not in columns]
    if missing_cols:
        raise InvalidSubmissionError(f"missing column(s): {_examples(missing_cols, 10)}; expected {expected}")
    extra_cols = [c for c in columns if c not in expected]
    if extra_cols:
        raise InvalidSubmissionError(
            f"unexpected extra column(s): {_examples(extra_cols, 10)}; expected {expected}"
        )
    if len(set(columns)) != len(columns):
        raise InvalidSubmissionError("duplicated column names")
    frame = frame.set_axis(columns, axis=1)

    ids, blank = _canonical_text(frame[id_column])
    if blank.any():
        raise InvalidSubmissionError(f"{int(blank.sum())} missing/blank value(s) in id column {id_column!r}")
    sub_ids = pd.Index(ids)
    unknown = sub_ids.difference(answer_ids)
    absent = answer_ids.difference(sub_ids)
    dup = sub_ids[sub_ids.duplicated()].unique()
    details = []
    if len(absent):
        details.append(f"{len(absent)} missing id(s) e.g. {_examples(absent)}")
    if len(unknown):
        details.append(f"{len(unknown)} unknown id(s) e.g. {_examples(unknown)}")
    if len(dup):
        details.append(f"{len(dup)} duplicated id(s) e.g. {_examples(dup)}")
    if len(frame) != len(answer_ids):
        raise InvalidSubmissionError(
            f"wrong row count: {len(frame)} rows, expected {len(answer_ids)}"
            + (f" ({'; '.join(details)})" if details else "")
        )
    if details:
        raise InvalidSubmissionError("ids do not match the answers: " + "; ".join(details))
    order = sub_ids.get_indexer(answer_ids)
    return frame[targets].iloc[order].reset_index(drop=True)


def grade_submission(
    grader: str,
    submission: pd.DataFrame | str | Path,
    answers: pd.DataFrame | str | Path,
    *,
    id_column: str | None = None,
    target_columns: Sequence[str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> GradeResult:
    """Score ``submission`` against ``answers`` with the named grader (see the module docstring)."""
    spec = _spec(grader)
    params = dict(params or {})
    unknown_params = sorted(set(params) - set(spec.params))
    if unknown_params:
        raise ValueError(
            f"grader {grader!r} takes no parameter(s) {unknown_params}; accepted: {list(spec.params)}"
        )

    # ---- answers: every problem here is the caller's, so ValueError
    answer_frame = _load_answers(answers)
    answer_columns = [str(c) for c in answer_frame.columns]
    answer_frame = answer_frame.set_axis(answer_columns, axis=1)
    id_col = id_column if id_column is not None else answer_columns[0]
    if id_col not in answer_columns:
        raise ValueError(f"id column {id_col!r} not in answers columns {answer_columns}")
    if target_columns is not None:
        targets = [str(c) for c in target_columns]
    else:
        targets = [c for c in answer_columns if c != id_col]
    if not targets:
        raise ValueError("no target columns: answers need an id column and at least one target column")
    if id_col in targets or len(set(targets)) != len(targets):
        raise ValueError(f"target columns {targets} must be distinct and exclude the id column {id_col!r}")
    absent = [c for c in targets if c not in answer_columns]
    if absent:
        raise ValueError(f"target column(s) {absent} not in answers columns {answer_columns}")
    if spec.single_target and len(targets) != 1:
        raise ValueError(f"grader {grader!r} needs exactly one target column, got {targets}")
    answer_ids, blank = _canonical_text(answer_frame[id_col])
    if blank.any():
        raise ValueError(f"answers have {int(blank.sum())} missing id(s) in column {id_col!r}")
    answer_index = pd.Index(answer_ids)
    if answer_index.has_duplicates:
        dup = answer_index[answer_index.duplicated()]
        raise ValueError(f"answers have duplicated ids, e.g. {_examples(dup)}")
    try:
        y_true = _prepare_values(spec, answer_frame[targets], answers=True)
    except InvalidSubmissionError as exc:
        raise ValueError(f"malformed answers for {grader!r}: {exc}") from None
    if spec.check_answers is not None:
        spec.check_answers(y_true, params)

    # ---- submission: every problem here is reported, never raised
    try:
        frame = _load_submission(submission)
        aligned = _align(frame, id_col, targets, answer_index)
        y_pred = _prepare_values(spec, aligned, answers=False, ids=answer_ids)
    except InvalidSubmissionError as exc:
        return GradeResult(score=None, valid=False, reason=_one_line(exc), grader=grader)
    try:
        score = float(spec.score(y_true, y_pred, params))
    except InvalidSubmissionError as exc:
        return GradeResult(score=None, valid=False, reason=_one_line(exc), grader=grader)
    except Exception as exc:  # noqa: BLE001 - a submission must never crash grading
        reason = f"could not score submission: {type(exc).__name__}: {_one_line(exc)}"
        return GradeResult(score=None, valid=False, reason=reason[:400], grader=grader)
    if not math.isfinite(score):
        reason = f"metric is undefined (got {score})"
        return GradeResult(score=None, valid=False, reason=reason, grader=grader)
    return GradeResult(score=score, valid=True, reason=None, grader=grader)
