"""Hidden grading: scoring a submission with the task's own grader, out of the agent's sight.

In order: MLE-bench's `grade_csv` when the `mlebench` package knows the competition; the task's
own `grade.py` (or its config's `grade_fn`) in a separate process when it loads here; our grader
of the same name (MLE-bench's names mapped by `resolve_grader`). The same graders score the held
rows of the harness's validation split (`grading_plan` on their labels), and `medal_reporter_for`
turns a test score into MLE-bench's medal report. Used by the search (graphs) and by the
benchmarks alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from grading.graders import grade_submission, resolve_grader
from grading.medals import medal_thresholds, read_leaderboard, report_for
from grading.task_grader import TaskGrader
from tasks.competition import Competition


@dataclass(frozen=True)
class HiddenGrade:
    """A submission's score on the private answers (kept out of every prompt)."""

    score: float | None
    valid: bool
    reason: str | None = None


HiddenGrader = Callable[[Path], HiddenGrade]


def hidden_grader_for(comp: Competition, say: Callable[[str], None] | None = None) -> HiddenGrader | None:
    """Grades submissions on the task's private answers, out of the agent's sight. In order:
    MLE-bench's `grade_csv` when the `mlebench` package knows the competition; the task's own
    `grade.py` (or its config's `grade_fn`) in a separate process when it loads here; our grader
    of the same name (MLE-bench's names mapped by `resolve_grader`). None, with one warning line
    through `say`, when none applies: the run goes on without hidden grading."""
    grader, how = hidden_grading_plan(comp)
    if say is not None and comp.answers is not None:
        say(f"hidden grading: {how}")
    return grader


def hidden_grading_plan(comp: Competition) -> tuple[HiddenGrader | None, str]:
    """(the hidden grader or None, one line saying which grader it is or why there is none)."""
    if comp.answers is None:
        return None, "none (the task has no answers)"
    return grading_plan(comp, Path(comp.answers))


def grading_plan(comp: Competition, answers: Path) -> tuple[HiddenGrader | None, str]:
    """The task's grader on `answers` (the private answers, or the held rows' labels): (grader
    or None, one line saying which it is or why there is none)."""
    same = comp.answers is not None and Path(answers).resolve() == Path(comp.answers).resolve()
    official = mlebench_grader_for(comp, None if same else answers)
    if official is not None:
        return official, f"MLE-bench's grader for '{comp.id}'"
    own_failure = None
    for task_grader in _own_graders(comp):
        own_failure = task_grader.check()
        if own_failure is None:

            def grade_own(path: Path, g: TaskGrader = task_grader) -> HiddenGrade:
                result = g.grade(Path(path), answers)
                return HiddenGrade(score=result.score, valid=result.valid, reason=result.reason)

            return grade_own, f"the task's own grader ({task_grader.label}, in a separate process)"
    ours, _lower = resolve_grader(comp.grader)
    if ours is not None:
        answers_df = pd.read_csv(answers)

        def grade(path: Path) -> HiddenGrade:
            result = grade_submission(ours, path, answers_df)
            return HiddenGrade(score=result.score, valid=result.valid, reason=result.reason)

        named = f"'{comp.grader}' as our '{ours}'" if ours != comp.grader else f"'{ours}'"
        extra = f" (the task's own grader does not load here: {own_failure})" if own_failure else ""
        return grade, f"grader {named}{extra}"
    why = (f"warning: grader '{comp.grader}' is unknown here" if comp.grader
           else "warning: the task names no grader")
    if own_failure:
        why += f" and the task's own grader does not load here ({own_failure})"
    return None, why + "; the run goes on without hidden grading"


def _own_graders(comp: Competition) -> list[TaskGrader]:
    graders = []
    if comp.grade_py is not None:
        graders.append(TaskGrader(grade_py=comp.grade_py))
    if comp.grade_fn:
        graders.append(TaskGrader(grade_fn=comp.grade_fn))
    return graders


def mlebench_grader_for(comp: Competition, answers: Path | None = None) -> HiddenGrader | None:
    """MLE-bench's `grade_csv` for a competition in its data dir (`<data dir>/<id>/prepared/`),
    on its answers or on `answers` (the held rows); None when the package is not installed or
    does not know the competition."""
    try:
        from mlebench.grade import grade_csv
        from mlebench.registry import registry
    except ImportError:
        return None
    try:
        competition = registry.set_data_dir(comp.root.parent).get_competition(comp.id)
    except Exception:  # noqa: BLE001 - an unknown id is simply not an MLE-bench competition
        return None
    if answers is not None:  # the held rows' labels instead of the competition's answers
        try:
            competition = dataclasses.replace(competition, answers=Path(answers))
        except (TypeError, ValueError):  # not a dataclass in this version: no MLE-bench grader
            return None

    def grade(path: Path) -> HiddenGrade:
        report = grade_csv(Path(path), competition)
        valid = bool(report.valid_submission)
        return HiddenGrade(score=report.score if valid else None, valid=valid,
                           reason=None if valid else "mlebench: the submission could not be graded")

    return grade


def medal_reporter_for(comp: Competition, lower_is_better: bool) -> Any:
    """MLE-bench's report (thresholds, medals, above median) for a test score, given a leaderboard."""
    if comp.leaderboard is None or comp.answers is None:
        return None
    thresholds = medal_thresholds(read_leaderboard(comp.leaderboard), lower_is_better)

    def report(score: float | None) -> dict[str, Any]:
        return report_for(comp.id, score, thresholds).model_dump()

    return report
