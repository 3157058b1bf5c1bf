"""Execute operator: statically check a candidate script (syntax, names, imports), run it in a
fresh sandboxed workspace, and establish the facts of the run (exit status, `METRIC:` line,
submission format).

Every strategy executes through here, so a script is judged the same way whichever strategy
wrote it. The result is plain data (`Execution`) that graph states carry and checkpoints store.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from pydantic import BaseModel

from nodes.review import Facts, check_submission, establish_facts, last_error_line
from nodes.static_check import import_checker_for, static_report
from prompts import fenced
from sandbox import Limits, create_workspace, run_script
from tasks.holdout import KEPT_SUBMISSION, HeldSplit


class Execution(BaseModel):
    """What happened when a candidate ran (or why it was not run)."""

    skipped: str | None = None  # set when the script never ran (no code, static check failed)
    static_problems: list[str] = []  # what the static check found (then `skipped` says so)
    notes: list[str] = []  # checks that could not be done (e.g. the import probe timed out)
    exit_code: int | None = None
    timed_out: bool = False
    killed_reason: str | None = None
    seconds: float = 0.0
    output: str = ""
    submission_problem: str | None = None
    submission_file: str | None = None  # host path of a submission matching the sample format
    workspace: str | None = None  # host path of the workspace the script ran in
    metric: float | None = None
    failure: str | None = None  # why the run counts as buggy; None when it is a valid result
    # the harness's validation split (tasks.holdout): the held rows' score, never shown to the agent
    by_holdout: bool = False  # the run holds a split: selection uses holdout_score
    holdout_score: float | None = None
    holdout_note: str | None = None  # why a well-formed submission got no holdout score
    self_report_flag: str | None = None  # the METRIC line is far better than the holdout score

    @property
    def valid(self) -> bool:
        """Ran cleanly, printed a metric and wrote a well-formed submission."""
        return self.failure is None and self.metric is not None

    @property
    def score(self) -> float | None:
        """What selection compares: the harness's holdout score in a run that holds a split,
        else the script's own metric; None for a run that is not valid."""
        if not self.valid:
            return None
        return self.holdout_score if self.by_holdout else self.metric

    def facts(self) -> Facts:
        """The harness's facts, for review and reflection prompts."""
        return Facts(
            executed=self.skipped is None,
            exit_code=self.exit_code,
            timed_out=self.timed_out,
            metric=self.metric,
            submission_problem=self.submission_problem,
            failure=self.failure,
        )

    def feedback(self, output_chars: int = 4000) -> str:
        """Facts and the end of the output as text for a model that revises the script."""
        if self.skipped:
            return f"The script was not run: {self.skipped}"
        out = self.output.strip()
        if len(out) > output_chars:
            out = "..." + out[-output_chars:]
        verdict = (
            f"It failed: {self.failure}" if self.failure else f"It ran cleanly; METRIC {self.metric:.6g}"
        )
        if self.self_report_flag and not self.failure:
            verdict += f"\nHarness check: {self.self_report_flag}."
        return f"{verdict}\n\nOutput (end):\n{fenced(out or '(no output)')}"


STATIC_PREFIX = "static check: "


def check_script(code: str, llm_error: str | None, python: str | None = None) -> Execution | None:
    """The static verdict on a candidate: an unrun `Execution` saying why it cannot run, an
    `Execution` holding only notes when a check could not be done, or None when it looks runnable.
    Imports are checked against `python`, the interpreter scripts run with."""
    if llm_error:  # the generation failed; its reason says how (call failed, no code, answer cut)
        return Execution(skipped=llm_error, failure=llm_error)
    if not code:
        reason = "no Python code block in the answer"
        return Execution(skipped=reason, failure=reason)
    problems, note = static_report(code, import_checker_for(python))
    if problems:
        reason = STATIC_PREFIX + "; ".join(problems[:5])
        return Execution(skipped=reason, failure=reason, static_problems=problems,
                         notes=[note] if note else [])
    return Execution(notes=[note]) if note else None


def execute_script(
    code: str,
    workspace_dir: Path,
    *,
    public_dir: Path,
    sample_submission: Path | None,
    timeout_s: float,
    backend: str = "auto",
    llm_error: str | None = None,
    slots: threading.Semaphore | None = None,
    limits: Limits | None = None,
    python: str | None = None,
    held: HeldSplit | None = None,
) -> Execution:
    """Check and run one script with `python` (default: the one `limits` names, else this
    interpreter); `slots` bounds how many run at the same time. With a held split (`held`), a
    well-formed submission is taken apart: its held rows are scored, its real test rows kept."""
    if python is None and limits is not None:
        python = limits.python
    checked = check_script(code, llm_error, python)
    if checked is not None and checked.skipped:
        return checked
    with slots if slots is not None else contextlib.nullcontext():
        workspace = create_workspace(workspace_dir, public_dir)
        result = run_script(code, workspace, timeout_s=timeout_s, backend=backend, limits=limits,
                            python=python)
    sub_path = workspace.submission_dir / "submission.csv"
    problem = check_submission(sub_path, sample_submission)
    # host paths out of the log: shorter prompts, identical across runs and resumes
    output = result.output.replace(f"{workspace.root}/", "")
    facts = establish_facts(
        exit_code=result.exit_code,
        timed_out=result.timed_out,
        killed_reason=result.killed_reason,
        output=output,
        submission_problem=problem,
        last_error=last_error_line(output),
        timeout_s=timeout_s,
    )
    kept = str(sub_path) if problem is None else None
    holdout: dict = {}
    if held is not None:
        holdout["by_holdout"] = True
        if problem is None:
            scored = held.score(sub_path, workspace.root / KEPT_SUBMISSION)
            kept = scored.kept
            holdout.update(holdout_score=scored.score, holdout_note=scored.note)
            if facts.failure is None:
                holdout["self_report_flag"] = held.flag(facts.metric, scored.score)
    return Execution(
        exit_code=result.exit_code,
        timed_out=result.timed_out,
        killed_reason=result.killed_reason,
        seconds=result.seconds,
        output=output,
        submission_problem=problem,
        submission_file=kept,
        metric=facts.metric,
        failure=facts.failure,
        notes=checked.notes if checked is not None else [],
        workspace=str(workspace.root),
        **holdout,
    )
