"""Select operator: keep the best of several executed candidates (self-consistency's reduction).

The rule, in order:
1. Candidates with a valid result (ran cleanly, printed a metric, wrote a well-formed
   submission) compete on their score in the task's direction: in a run that holds a
   validation split, the harness's score of the held rows (tasks.holdout; the METRIC line is
   the script's own view and decides nothing), else the validation metric.
2. Candidates tied on the best metric, or -- when none has a metric -- the candidates that
   still wrote a well-formed submission, are ranked by majority agreement: the mean share of
   test rows on which their predictions equal those of the other candidates' submissions.
3. When no candidate wrote a submission, those whose runs got furthest (clean exit, then a
   metric line, before crashes, before scripts that never ran) stay in the running.
4. When that leaves more than one and an LLM judge is available, the judge picks among them
   from plans, facts and output; otherwise the lowest index wins.
Every decision names the rule that made it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

import prompts
from nodes.execute import Execution
from nodes.operators import Candidate
from nodes.structured import StructuredOutputSupport, ask_json
from nodes.usage import Usage


class Attempt(BaseModel):
    """One candidate of a fan-out and what its execution established."""

    index: int
    candidate: Candidate
    execution: Execution


@dataclass
class Selection:
    """Which attempt was kept, by which rule, and what deciding cost."""

    index: int
    rule: str
    usage: Usage


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _predictions(path: str | None) -> pd.DataFrame | None:
    if not path or not Path(path).is_file():
        return None
    try:
        return pd.read_csv(path)
    except Exception:  # noqa: BLE001 - an unreadable file simply does not vote
        return None


def _agreement(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Share of rows on which two submissions predict the same (id column excluded)."""
    if list(a.columns) != list(b.columns) or len(a) != len(b) or len(a) == 0:
        return 0.0
    cols = list(a.columns[1:]) or list(a.columns)
    equal = np.ones(len(a), dtype=bool)
    for col in cols:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number):
            equal &= np.isclose(x.astype(float), y.astype(float), rtol=1e-6, atol=1e-9, equal_nan=True)
        else:
            equal &= x.astype(str) == y.astype(str)
    return float(equal.mean())


def agreement_scores(attempts: Sequence[Attempt]) -> dict[int, float]:
    """Each attempt's mean agreement with every other attempt that wrote a readable submission."""
    subs = {a.index: _predictions(a.execution.submission_file) for a in attempts}
    voters = {i: df for i, df in subs.items() if df is not None}
    scores = {}
    for i, df in voters.items():
        others = [_agreement(df, other) for j, other in voters.items() if j != i]
        scores[i] = sum(others) / len(others) if others else 0.0
    return scores


# a judge answers (chosen index or None, its cost, why it gave no usable answer or None)
Judge = Callable[[Sequence[Attempt]], tuple[int | None, Usage, str | None]]
JUDGE_ANSWER_TOKENS = 300  # the judge's answer cap; a model that thinks gets its reasoning budget on top


def select_best(
    attempts: Sequence[Attempt], *, lower_is_better: bool, judge: Judge | None = None
) -> Selection:
    """Apply the module's rule; `attempts` must not be empty."""
    if not attempts:
        raise ValueError("nothing to select from")
    ordered = sorted(attempts, key=lambda a: a.index)
    valid = [a for a in ordered if a.execution.score is not None and math.isfinite(a.execution.score)]
    if valid:
        key = (min if lower_is_better else max)(a.execution.score for a in valid)  # type: ignore[type-var]
        tied = [a for a in valid if _same(a.execution.score, key)]  # type: ignore[arg-type]
        what = "holdout score" if tied[0].execution.by_holdout else "validation metric"
        if len(tied) == 1:
            return Selection(tied[0].index, f"best {what}", Usage())
        return _by_agreement(tied, ordered, f"tie on the best {what}", judge)
    with_submission = [a for a in ordered if a.execution.submission_file]
    if with_submission:
        return _by_agreement(with_submission, ordered, "no valid metric", judge)
    furthest = max(_progress(a) for a in ordered)
    pool = [a for a in ordered if _progress(a) == furthest]
    return _by_judge(pool, "no candidate wrote a submission; the furthest runs", judge)


def _progress(a: Attempt) -> int:
    """How far a run got: not run < crashed < crashed after a metric < clean < clean with a metric."""
    ex = a.execution
    if ex.skipped is not None:
        return 0
    ran_clean = ex.exit_code == 0 and not ex.timed_out
    return (3 if ran_clean else 1) + (ex.metric is not None)


def _by_agreement(
    pool: list[Attempt], everyone: Sequence[Attempt], why: str, judge: Judge | None
) -> Selection:
    if len(pool) == 1:
        return Selection(pool[0].index, f"{why}; the only candidate left", Usage())
    scores = agreement_scores(everyone)
    top = max(scores.get(a.index, 0.0) for a in pool)
    leaders = [a for a in pool if _same(scores.get(a.index, 0.0), top)]
    if len(leaders) == 1:
        return Selection(leaders[0].index, f"{why}; majority agreement of predictions ({top:.3f})", Usage())
    return _by_judge(leaders, f"{why}; agreement tied", judge)


def _by_judge(pool: list[Attempt], why: str, judge: Judge | None) -> Selection:
    if len(pool) > 1 and judge is not None:
        choice, usage, error = judge(pool)
        if choice is not None and choice in {a.index for a in pool}:
            return Selection(choice, f"{why}; LLM judge", usage)
        if error is None:
            error = f"it picked {choice}, not one of {[a.index for a in pool]}"
        return Selection(pool[0].index, f"{why}; judge fallback, lowest index (no usable answer: {error})",
                         usage)
    return Selection(pool[0].index, f"{why}; lowest index", Usage())


class JudgeAnswer(BaseModel):
    """The judge's pick."""

    best: int
    reason: str


def llm_judge(
    llm: BaseChatModel,
    system: str,
    support: StructuredOutputSupport,
    *,
    system_prompt: bool,
    output_chars: int = 1500,
) -> Judge:
    """A judge that asks the model which candidate is most likely right."""

    def judge(pool: Sequence[Attempt]) -> tuple[int | None, Usage, str | None]:
        items = [
            {
                "index": a.index,
                "plan": a.candidate.plan.strip()[:800] or "(no plan)",
                "feedback": a.execution.feedback(output_chars),
            }
            for a in pool
        ]
        answer, usage, error = ask_json(
            llm,
            system,
            prompts.render("judge", candidates=items),
            JudgeAnswer,
            support,
            name="judge",
            role="judge",
            system_prompt=system_prompt,
            max_tokens=JUDGE_ANSWER_TOKENS,
        )
        return (answer.best if answer else None), usage, error

    return judge
