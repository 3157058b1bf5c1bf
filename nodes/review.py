"""Review: read the metric line, check the submission, and ask the LLM for a verdict.

The facts (exit status, `METRIC:` line, submission shape) decide whether a node is buggy; the
LLM's verdict adds an analysis for later prompts and is kept on the node. The verdict uses JSON
schema structured output, with a plain-text JSON fallback for servers without it (no tool calls).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

import prompts
from nodes.structured import StructuredOutputSupport, ask_json, response_format
from nodes.usage import Usage

_METRIC_RE = re.compile(
    r"^\s*METRIC:\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf)\s*$",
    re.MULTILINE | re.IGNORECASE,
)


class Verdict(BaseModel):
    """The LLM's judgement of one run."""

    is_bug: bool
    summary: str


VERDICT_FORMAT = response_format(Verdict, "verdict")
ANSWER_TOKENS = 400  # the verdict's answer cap; a model that thinks gets its reasoning budget on top


def parse_metric(output: str) -> float | None:
    """The value of the last `METRIC: <float>` line; None if absent or not finite."""
    matches = _METRIC_RE.findall(output)
    if not matches:
        return None
    value = float(matches[-1])
    return value if math.isfinite(value) else None


def check_submission(path: Path, sample: Path | None) -> str | None:
    """None when the submission exists and matches the sample's columns and row count."""
    if not path.is_file():
        return "no submission/submission.csv was written"
    try:
        sub = pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a reason, not a crash
        return f"submission.csv cannot be read as CSV ({type(exc).__name__})"
    if sample is None:
        return None if len(sub) else "submission.csv is empty"
    ref = pd.read_csv(sample)
    if list(sub.columns) != list(ref.columns):
        return (
            f"submission columns {list(sub.columns)[:8]} differ from the sample submission's "
            f"{list(ref.columns)[:8]}"
        )
    if len(sub) != len(ref):
        return f"submission has {len(sub)} rows, the sample submission has {len(ref)}"
    return None


@dataclass
class Facts:
    """What the harness established about a run, independent of any LLM."""

    executed: bool
    exit_code: int | None
    timed_out: bool
    metric: float | None
    submission_problem: str | None
    failure: str | None  # why it is buggy, None when it is not

    @property
    def is_buggy(self) -> bool:
        """A node is buggy when the run failed, printed no metric, or wrote no valid submission."""
        return self.failure is not None

    def describe(self) -> str:
        """The facts as short lines for the review prompt."""
        lines = [
            f"- exit code: {self.exit_code}" + (" (killed at the time limit)" if self.timed_out else ""),
            f"- METRIC line: {self.metric if self.metric is not None else 'missing'}",
            f"- submission: {self.submission_problem or 'present, matches the sample format'}",
        ]
        return "\n".join(lines)


def establish_facts(
    *,
    exit_code: int | None,
    timed_out: bool,
    killed_reason: str | None,
    output: str,
    submission_problem: str | None,
    last_error: str,
    timeout_s: float,
) -> Facts:
    """Decide buggy-or-not from the execution alone."""
    metric = parse_metric(output)
    if timed_out:
        failure = f"the script was killed at the time limit ({timeout_s:.0f} s)"
    elif killed_reason:
        failure = f"the script was killed: {killed_reason}"
    elif exit_code != 0:
        failure = f"the script exited with code {exit_code}: {last_error}"
    elif metric is None:
        failure = "the script printed no 'METRIC: <float>' line"
        if submission_problem:  # both are missing: say both, so one fix can cover both
            failure += f", and {submission_problem}"
    elif submission_problem:
        failure = submission_problem
    else:
        failure = None
    return Facts(
        executed=True,
        exit_code=exit_code,
        timed_out=timed_out,
        metric=metric,
        submission_problem=submission_problem,
        failure=failure,
    )


def llm_verdict(
    llm: BaseChatModel,
    system: str,
    code: str,
    output: str,
    facts: Facts,
    support: StructuredOutputSupport,
    *,
    system_prompt: bool = True,
    output_chars: int = 6000,
    max_tokens: int = ANSWER_TOKENS,
) -> tuple[Verdict | None, Usage, str | None]:
    """Ask for a verdict: (verdict or None, usage, error line or None); `max_tokens` caps the
    answer (thinking gets the client's reasoning budget on top, see nodes.structured)."""
    out = output.strip()
    if len(out) > output_chars:
        out = "..." + out[-output_chars:]
    text = prompts.render(
        "review", code=code.rstrip(), output=out or "(no output)", facts=facts.describe()
    )
    return ask_json(llm, system, text, Verdict, support, name="verdict",
                    system_prompt=system_prompt, max_tokens=max_tokens)


def last_error_line(output: str, fallback: str = "see output") -> str:
    """The most telling line of a failed run's output: its last exception line."""
    for line in reversed(output.strip().splitlines()):
        s = line.strip()
        if s and ("Error" in s or "Exception" in s) and not s.startswith("File "):
            return s[:300]
    return fallback[:300]
