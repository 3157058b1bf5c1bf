"""Repairs inside a step, and known-error guidance.

A script that fails the static check (syntax, undefined name, an import the scripts'
interpreter cannot satisfy), crashes with a traceback within the first seconds of its run, or
runs to the end (exit 0) without its required outputs (no `METRIC:` line, no submission or one
in the wrong format) gets up to K quick repair calls before its node is recorded: the run's
stable prefix first (so the server's prefix cache covers it), then the error, the numbered lines
around the failing line, and the script; the answer is the whole corrected script, which is
checked and run again.
Such a call costs a few seconds of prefill and one script's decode, against a whole step's
draft + review. Every attempt is recorded on the node: a `repairer` entry in its calls, and
`extra["repairs"]` = [{stage, error, fixed, then, ...}]. `fixed` means the repaired script got
past the stage that failed (static: it passes the static check; early_crash: it passes the
static check and does not crash early; outputs: it is a valid run); `then` says how it did.

Known errors (prompts/known_errors.yaml): a regular expression on the error text -> the usual
remedy in one line (which may quote what the pattern's named groups caught); the debug and
repair prompts add the first match as "Known remedy: ...".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from langchain_core.language_models import BaseChatModel

import prompts
from nodes.candidate import Candidate, ask_for_script
from nodes.execute import Execution
from nodes.import_hints import missing_imports

DEFAULT_REPAIRS = 2
EARLY_CRASH_S = 10.0
EXCERPT_RADIUS = 5
OUTPUT_TAIL_CHARS = 1500
TRACE_CHARS = 3000
_TABLE = Path(prompts.__file__).parent / "known_errors.yaml"
_TRACEBACK = "Traceback (most recent call last)"
_SCRIPT_LINE = re.compile(r'File "(?:[^"]*/)?solution\.py", line (\d+)')
_LINE = re.compile(r"\bline (\d+)")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


# ---------------------------------------------------------------- known-error guidance


@dataclass(frozen=True)
class KnownError:
    name: str
    pattern: re.Pattern[str]
    remedy: str


@lru_cache(maxsize=4)
def known_errors(path: Path = _TABLE) -> tuple[KnownError, ...]:
    """The table, in file order (first match wins); a malformed table raises ValueError."""
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a list of {{name, pattern, remedy}} entries")
    table = []
    for i, entry in enumerate(raw):
        try:
            name, pattern, remedy = str(entry["name"]), re.compile(entry["pattern"]), str(entry["remedy"])
            table.append(KnownError(name, pattern, remedy.strip()))
        except (KeyError, TypeError, re.error) as exc:
            raise ValueError(f"{path}: entry {i + 1} is malformed ({exc})") from exc
    return tuple(table)


def match_known_error(*texts: str | None) -> KnownError | None:
    """The first table entry matching the first text that any entry matches (the most telling
    text first: the failure line, then the output)."""
    for text in texts:
        if not text:
            continue
        for entry in known_errors():
            if entry.pattern.search(text):
                return entry
    return None


def known_remedy(*texts: str | None) -> str | None:
    """The one-line remedy for an error text, or None when the table has none. A remedy may
    quote what the pattern's named groups caught (`{value}`: the value in the error message)."""
    for text in texts:
        if not text:
            continue
        for entry in known_errors():
            found = entry.pattern.search(text)
            if found:
                caught = {k: (v or "")[:80] for k, v in found.groupdict().items()}
                return _PLACEHOLDER.sub(lambda m: caught.get(m.group(1), m.group(0)), entry.remedy)
    return None


# ---------------------------------------------------------------- what needs a repair


@dataclass(frozen=True)
class RepairNeed:
    """Why a candidate gets a repair call."""

    stage: Literal["static", "early_crash", "outputs"]
    error: str  # what the prompt shows: the static problems, or the end of the traceback
    summary: str  # one line for the node's record
    line: int | None  # the failing line of the script, when known


def repair_need(cand: Candidate, ex: Execution, *, early_crash_s: float = EARLY_CRASH_S) -> RepairNeed | None:
    """A static failure, an early crash with a traceback, or a run that exited 0 without its
    required outputs; None for anything else (a failed generation, a late crash, a timeout or a
    kill: those need a different approach, which is the debug step's job)."""
    if cand.llm_error or not cand.code.strip():
        return None
    if ex.skipped:
        if not ex.static_problems:
            return None
        first = _LINE.search(ex.static_problems[0])
        return RepairNeed("static", "\n".join(ex.static_problems), (ex.failure or ex.skipped)[:300],
                          int(first.group(1)) if first else None)
    if lacks_outputs(ex):
        tail = ex.output.strip()
        tail = "..." + tail[-OUTPUT_TAIL_CHARS:] if len(tail) > OUTPUT_TAIL_CHARS else tail
        return RepairNeed("outputs", f"{ex.failure}\n\nEnd of its output:\n{tail or '(no output)'}",
                          ex.failure[:300], None)
    if not crashed_early(ex, early_crash_s):
        return None
    trace = traceback_tail(ex.output)
    lines = _SCRIPT_LINE.findall(trace)
    line = int(lines[-1]) if lines else None
    return RepairNeed("early_crash", trace, (ex.failure or "crashed")[:300], line)


def crashed_early(ex: Execution, early_crash_s: float = EARLY_CRASH_S) -> bool:
    """The script ran, exited non-zero by itself within `early_crash_s`, with a traceback."""
    if ex.skipped or ex.timed_out or ex.killed_reason or ex.exit_code in (0, None):
        return False
    return ex.seconds <= early_crash_s and _TRACEBACK in ex.output


def lacks_outputs(ex: Execution) -> bool:
    """The script ran to the end by itself (exit 0) but printed no metric or wrote no
    well-formed submission: a missing last step, usually fixed by adding a few lines."""
    if ex.skipped or ex.timed_out or ex.killed_reason or ex.exit_code != 0:
        return False
    return ex.failure is not None


def traceback_tail(output: str, chars: int = TRACE_CHARS) -> str:
    """The last traceback of an output (with anything printed after it), at most `chars`."""
    trace = output[output.rfind(_TRACEBACK):] if _TRACEBACK in output else output
    trace = trace.strip()
    return "..." + trace[-chars:] if len(trace) > chars else trace


def excerpt(code: str, line: int | None, radius: int = EXCERPT_RADIUS) -> str:
    """The numbered lines around `line` (marked `>`); empty when the line is unknown."""
    lines = code.splitlines()
    if line is None or not 1 <= line <= len(lines):
        return ""
    lo, hi = max(1, line - radius), min(len(lines), line + radius)
    width = len(str(hi))
    return "\n".join(f"{'>' if i == line else ' '} {i:>{width}} | {lines[i - 1]}" for i in range(lo, hi + 1))


# ---------------------------------------------------------------- the repair call


def repair_prompt(code: str, need: RepairNeed, *, known: bool = True) -> str:
    """The varying part of a repair request (the run's stable prefix goes before it)."""
    return prompts.render(
        "repair",
        stage=need.stage,
        error=need.error,
        remedy=known_remedy(need.error) if known else None,
        imports=missing_imports(need.error) if known else [],
        line=need.line,
        excerpt=excerpt(code, need.line),
        code=code.rstrip(),
    )


def ask_for_repair(
    llm: BaseChatModel, system: str, code: str, need: RepairNeed, *, system_prompt: bool, known: bool = True,
) -> Candidate:
    """One repair call (role `repairer`): a whole corrected script, or a Candidate with llm_error."""
    return ask_for_script(llm, system, repair_prompt(code, need, known=known), system_prompt=system_prompt,
                          role="repairer")


def apply_repair(
    cand: Candidate, answer: Candidate, need: RepairNeed
) -> tuple[Candidate, dict[str, Any], bool]:
    """(the candidate to go on with, its repair record, whether to run it).

    The repaired candidate keeps the original plan and carries both calls' cost; an answer
    without usable code leaves the script as it was (and its record says why)."""
    usage = cand.usage.model_copy(deep=True)
    usage.add(answer.usage)
    record: dict[str, Any] = {"stage": need.stage, "error": need.summary, "line": need.line, "fixed": None,
                              "tokens": answer.usage.prompt_tokens + answer.usage.completion_tokens,
                              "seconds": round(answer.usage.llm_seconds, 3)}
    if answer.llm_error or not answer.code.strip():
        record.update(fixed=False, then=f"repair call gave no script: {answer.llm_error or 'no code'}"[:300])
        return cand.model_copy(update={"usage": usage}), record, False
    reasoning = cand.reasoning
    if answer.reasoning:
        reasoning = f"{reasoning}\n\n[repair]\n{answer.reasoning}".strip()
    repaired = cand.model_copy(update={"code": answer.code, "usage": usage, "reasoning": reasoning,
                                       "llm_error": None})
    return repaired, record, True


def close_record(
    record: dict[str, Any], ex: Execution, *, early_crash_s: float = EARLY_CRASH_S
) -> dict[str, Any]:
    """The record of a repair, completed with how the repaired script did."""
    if record["stage"] == "outputs":
        fixed = ex.valid
    else:
        fixed = not ex.skipped and (record["stage"] == "static" or not crashed_early(ex, early_crash_s))
    if ex.valid:
        then = f"valid, metric {ex.metric:.6g}"
    else:
        then = (ex.failure or "failed")[:300]
    return {**record, "fixed": fixed, "then": then}


def run_with_repairs(
    cand: Candidate,
    run: Callable[[Candidate, int], Execution],
    llm: BaseChatModel,
    system: str,
    *,
    system_prompt: bool,
    max_repairs: int = DEFAULT_REPAIRS,
    early_crash_s: float = EARLY_CRASH_S,
    known: bool = True,
    on_repair: Callable[[int, RepairNeed], None] | None = None,
) -> tuple[Candidate, Execution, list[dict[str, Any]]]:
    """Execute `cand` (`run(candidate, attempt)`), repairing static failures, early crashes and
    missing outputs up to `max_repairs` times: (final candidate, its execution, repair records);
    the final candidate's usage counts the seconds of every execution. For callers
    that run a candidate inside one graph node; the tree search runs the same steps as
    supersteps of its own."""
    cand, ex = _counted(cand, run(cand, 0))
    repairs: list[dict[str, Any]] = []
    while len(repairs) < max_repairs:
        need = repair_need(cand, ex, early_crash_s=early_crash_s)
        if need is None:
            break
        if on_repair is not None:
            on_repair(len(repairs) + 1, need)
        answer = ask_for_repair(llm, system, cand.code, need, system_prompt=system_prompt, known=known)
        cand, record, runnable = apply_repair(cand, answer, need)
        if not runnable:
            repairs.append(record)
            break
        cand, ex = _counted(cand, run(cand, len(repairs) + 1))
        repairs.append(close_record(record, ex, early_crash_s=early_crash_s))
    return cand, ex, repairs


def _counted(cand: Candidate, ex: Execution) -> tuple[Candidate, Execution]:
    """`cand` with the seconds of its execution `ex` added to its usage, and `ex`."""
    usage = cand.usage.model_copy(deep=True)
    usage.add_execution(ex.seconds)
    return cand.model_copy(update={"usage": usage}), ex
