"""Run and repair: the second half of a search step.

Execute: statically check a candidate script (syntax, names, imports: `nodes.static_check`), run
it in a fresh sandboxed workspace, and establish the facts of the run (exit status, `METRIC:`
line, submission format). Every strategy executes through here, so a script is judged the same
way whichever strategy wrote it. The result is plain data (`Execution`) that graph states carry
and checkpoints store.

Repairs inside a step: a script that fails the static check (syntax, undefined name, an import
the scripts' interpreter cannot satisfy), crashes with a traceback within the first seconds of
its run, or runs to the end (exit 0) without its required outputs (no `METRIC:` line, no
submission or one in the wrong format) gets up to K quick repair calls before its node is
recorded: the run's stable prefix first (so the server's prefix cache covers it), then the error,
the numbered lines around the failing line, and the script; the answer is the whole corrected
script, which is checked and run again.
Such a call costs a few seconds of prefill and one script's decode, against a whole step's
draft + review. Every attempt is recorded on the node: a `repairer` entry in its calls, and
`extra["repairs"]` = [{stage, error, fixed, then, ...}]. `fixed` means the repaired script got
past the stage that failed (static: it passes the static check; early_crash: it passes the
static check and does not crash early; outputs: it is a valid run); `then` says how it did.
The repair prompt adds the known remedy of the error and the import line of an undefined name
(`nodes.import_hints`).

Imports the harness adds (`import_fix`, on unless `auto_imports` is off): before any repair call,
a script whose static check names undefined names with an unambiguous import line (`train_test_split`,
`os`, `np`) gets those lines added after its docstring and `__future__` imports, under a comment
saying the harness added them, and is checked again. It costs no LLM call and does not count
against the K repairs; its record (stage "imports", `added`: the lines) is on the node like a
repair's, so tree.html and the ablation see it. Whatever the static check still finds then goes
to the repair call as usual.

Imports the harness moves (`move_fix`, with `import_fix`): a script whose static check says it
imports a name from a module that lacks it, where one of the common modules has it (`from
sklearn.model_selection import RandomForestClassifier`), gets that name imported from the module
that has it, in the same place, under the same alias and below a comment saying so. Its record
(stage "moved", `added`: the new lines) is on the node like the imports'.

Outline names the harness adds (`outline_fix`, on unless `outline` is off): after the imports, a
script whose static check names an undefined name that a line of the data facts' outline assigns
(`X_test = test[features]`, the read of `test`, the sample submission) gets that line and the
outline lines it needs before the statement that first uses it (`nodes.outline`: only lines that
rebind none of the script's names and read only names bound above them). Its record (stage
"outline", `added`: the lines) is on the node like the imports'.

Repairs that get less far are set aside (`kept_before`, on unless `revert` is off): a repaired
script whose run got less far than the script before it (`progress`: no script < a static failure
< a crash, a timeout or a kill < exit 0 without the outputs < a valid run) does not replace it;
the step goes on with the script before it and that script's run, the next repair call starts
from there, and the set-aside repair's record says `kept: "before"` and holds the `script` set
aside (tree.html shows it). Its cost stays on the candidate. A tie keeps the repaired script, so
a repair that moves the error elsewhere is not undone. Small models often answer a repair with
a fragment of the script (the lines around the error, the rest left out); without this, the
fragment replaced a script that crashed on line 40 with one that fails the static check on line 1.
Before it is set aside, such an answer that is a fragment of the script before it (`splice_fragment`:
under `FRAGMENT_SHARE` of its lines, at least two of them lines of the script) is put in the place
it covers and that script is run (on unless `splice` is off); only if that still gets less far is it
set aside. The record keeps `fragment` (its length, the lines it replaced, how it did alone).

A debug or improve answer that is a fragment of its parent's script (`parent_splice`):
small models answer "fix this script" with the lines they changed. When the answer alone fails
the static check, or names neither the metric line nor the submission (so its run would end
without them), and is a fragment of the parent's script, the harness puts it in the place it
covers there and runs that script instead (a record of stage "parent", with `fragment`, on the
node). An answer the harness's imports make whole is a short script, not a fragment. No LLM
call; it does not count against the K repairs.

A static failure with several problems is asked for all of them at once: the prompt counts them
and the excerpt marks up to `MARKED_LINES` of their lines (a small model fixes the one it is
shown and leaves the rest, one repair call each).
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import difflib
import io
import re
import threading
import tokenize
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

import prompts
from nodes.absent_drop import absent_labels, ignore_absent
from nodes.counterpart import add_counterparts
from nodes.double_vectorize import not_text, unvectorize
from nodes.import_hints import (
    auto_imports,
    import_for,
    missing_imports,
    named_failure_remedies,
    quoted_value,
    static_remedies,
)
from nodes.operators import UNCHANGED_STAGE, Candidate, ask_for_script
from nodes.outline import OutlineLine, add_outline_lines, outline_from_prompt
from nodes.pyast import parse
from nodes.removed_api import removed_api_error, rewrite_removed
from nodes.reorder import move_up
from nodes.review import Facts, check_submission, establish_facts, last_error_line
from nodes.row_counts import count_note, table_rows
from nodes.source_span import span
from nodes.static_check import STATIC_PREFIX, bound_by, import_checker_for, missing_ending, static_report
from nodes.substitute import substitute
from nodes.task_facts import column_home, value_home
from nodes.test_rows import length_mismatch, repredict
from prompts import fenced
from sandbox import Limits, create_workspace, run_script
from sandbox.workspace import INPUT
from tasks.holdout import KEPT_SUBMISSION, HeldSplit

DEFAULT_REPAIRS = 2
EARLY_CRASH_S = 10.0
EXCERPT_RADIUS = 5
MARKED_LINES = 4  # the excerpt of a static failure marks at most this many problem lines
OUTPUT_TAIL_CHARS = 1500
TRACE_CHARS = 3000
_TRACEBACK = "Traceback (most recent call last)"
_SCRIPT_LINE = re.compile(r'File "(?:[^"]*/)?solution\.py", line (\d+)')
_LINE = re.compile(r"\bline (\d+)")


# ---------------------------------------------------------------- execute


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
        """Ran cleanly, wrote a well-formed submission and printed a metric (or, in a run that holds
        a split, had its submission scored on the held rows: `held_without_metric`)."""
        return self.failure is None and (self.metric is not None
                                         or (self.by_holdout and self.holdout_score is not None))

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
        ran = "It ran cleanly; " + metric_text(self.metric)
        verdict = f"It failed: {self.failure}" if self.failure else ran
        if self.self_report_flag and not self.failure:
            verdict += f"\nHarness check: {self.self_report_flag}."
        return f"{verdict}\n\nOutput (end):\n{fenced(out or '(no output)')}"


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
    notes = list(checked.notes) if checked is not None else []
    with slots if slots is not None else contextlib.nullcontext():
        try:
            workspace = create_workspace(workspace_dir, public_dir)
            result = run_script(code, workspace, timeout_s=timeout_s, backend=backend, limits=limits,
                                python=python)
        except OSError as exc:  # the system refused the run (no process, memory or file left)
            return sandbox_failure(exc, notes, workspace_dir)
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
            elif held_without_metric(facts, scored.score):
                facts = replace(facts, failure=None)
                notes.append(HELD_WITHOUT_METRIC)
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
        notes=notes,
        workspace=str(workspace.root),
        **holdout,
    )


HELD_WITHOUT_METRIC = ("no METRIC line: the harness scored the submission on its held rows, which is "
                       "what selection compares in a run that holds a split")


def held_without_metric(facts: Facts, holdout_score: float | None) -> bool:
    """A run that holds a split needs no METRIC line: a script that exited 0 and wrote a
    well-formed submission the held rows scored is valid without one (the METRIC line is then
    only the script's self-report; the node's notes say it had none)."""
    return (facts.metric is None and holdout_score is not None and facts.exit_code == 0
            and not facts.timed_out and facts.submission_problem is None)


def metric_text(metric: float | None, word: str = "METRIC") -> str:
    """'METRIC 0.9' or, for a valid run without the line (`held_without_metric`), what it lacked."""
    return f"{word} {metric:.6g}" if metric is not None else "no METRIC line"


SANDBOX_FAILURE = "sandbox failure: the script could not be run"


def sandbox_failure(exc: OSError, notes: list[str], workspace_dir: Path) -> Execution:
    """The record of a run the system refused to start or finish (`fork` out of processes or
    memory, no file descriptor left, a full disk): the node is buggy for a reason that is not
    its script's, so it gets no repair call, and the run goes on."""
    reason = f"{SANDBOX_FAILURE} ({type(exc).__name__}: {exc})"
    return Execution(skipped=reason, failure=reason, output=reason, workspace=str(workspace_dir),
                     notes=notes)


# ---------------------------------------------------------------- what needs a repair


@dataclass(frozen=True)
class RepairNeed:
    """Why a candidate gets a repair call."""

    stage: Literal["static", "early_crash", "outputs"]
    error: str  # what the prompt shows: the static problems, or the end of the traceback
    summary: str  # one line for the node's record
    line: int | None  # the failing line of the script, when known
    also: tuple[int, ...] = ()  # the lines of the other static problems (the excerpt marks them too)
    data: str | None = None  # the ./input/ the script read (where a remedy looks up a quoted value)


def repair_need(cand: Candidate, ex: Execution, *, early_crash_s: float = EARLY_CRASH_S) -> RepairNeed | None:
    """A static failure, an early crash with a traceback, or a run that exited 0 without its
    required outputs; None for anything else (a failed generation, a late crash, a timeout or a
    kill: those need a different approach, which is the debug step's job)."""
    if cand.llm_error or not cand.code.strip():
        return None
    if ex.skipped:
        if not ex.static_problems:
            return None
        lines = [int(m.group(1)) for m in map(_LINE.search, ex.static_problems) if m]
        first = lines[0] if lines else None
        also = tuple(sorted({n for n in lines if n != first}))[:MARKED_LINES - 1]
        return RepairNeed("static", "\n".join(ex.static_problems), (ex.failure or ex.skipped)[:300],
                          first, also)
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
    data = str(Path(ex.workspace) / INPUT) if ex.workspace else None
    return RepairNeed("early_crash", trace, (ex.failure or "crashed")[:300], line, data=data)


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


def excerpt(code: str, line: int | None, radius: int = EXCERPT_RADIUS, also: tuple[int, ...] = ()) -> str:
    """The numbered lines around `line` and the lines in `also` (each marked `>`; a gap between
    their windows shows as `...`); empty when the line is unknown. With other lines marked, each
    window is half as wide."""
    lines = code.splitlines()
    if line is None or not 1 <= line <= len(lines):
        return ""
    marked = sorted({line, *(n for n in also if 1 <= n <= len(lines))})
    if len(marked) > 1:
        radius = max(1, radius // 2)
    shown = sorted({i for m in marked for i in range(max(1, m - radius), min(len(lines), m + radius) + 1)})
    width = len(str(shown[-1]))
    out: list[str] = []
    for prev, i in zip([None, *shown], shown, strict=False):
        if prev is not None and i != prev + 1:
            out.append(" " * (width + 2) + "...")
        out.append(f"{'>' if i in marked else ' '} {i:>{width}} | {lines[i - 1]}")
    return "\n".join(out)


# ---------------------------------------------------------------- imports the harness adds

IMPORTS_STAGE = "imports"
MOVED_STAGE = "moved"  # the harness took a name from the module that lacks it to the one that has it
OUTLINE_STAGE = "outline"  # the harness added the data facts' outline lines of undefined names
PARENT_STAGE = "parent"  # the harness put a fragment answer in its parent's script
SHELL_STAGE = "shell"  # the harness took out notebook shell and magic lines (`!pip install x`)
VECTORIZED_STAGE = "vectorized"  # the harness put a text vectorizer before an estimator given strings
HOISTED_STAGE = "hoisted"  # the harness moved a def or class above the line that first uses it
COUNTERPART_STAGE = "counterpart"  # the harness wrote a split's line from the one for another split
REMOVED_API_STAGE = "removed_api"  # the harness rewrote calls of an API the installed versions removed
REORDERED_STAGE = "reordered"  # the harness moved assignments above the line that first uses their names
UNVECTORIZED_STAGE = "unvectorized"  # the harness took a second text vectorizer out of a pipeline
ABSENT_DROP_STAGE = "absent_drop"  # the harness let a drop of the target from the test table pass
TEST_ROWS_STAGE = "test_rows"  # the harness made the submission's column the predictions for the test rows
SUBSTITUTED_STAGE = "substituted"  # the harness put scikit-learn's gradient boosting for a missing package's
# what the harness does to a script without an LLM call
HARNESS_STAGES = frozenset({IMPORTS_STAGE, MOVED_STAGE, OUTLINE_STAGE, PARENT_STAGE, SHELL_STAGE,
                            VECTORIZED_STAGE, HOISTED_STAGE, COUNTERPART_STAGE, REMOVED_API_STAGE,
                            REORDERED_STAGE, SUBSTITUTED_STAGE, TEST_ROWS_STAGE, ABSENT_DROP_STAGE,
                            UNVECTORIZED_STAGE})
SHELL_COMMENT = "# removed by the harness: a notebook shell or magic line does not run in a script, " \
    "and nothing can be installed here:"
IMPORTS_COMMENT = "# imports added by the harness: these names were used but never imported"


def add_imports(code: str, lines: list[str], comment: str = IMPORTS_COMMENT) -> str:
    """`code` with the import `lines` (under `comment`) after its module docstring and
    `from __future__` imports; at the top when the script does not parse."""
    at = 0
    try:
        body = parse(code).body
    except SyntaxError:
        body = []
    for i, stmt in enumerate(body):
        docstring = (i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
                     and isinstance(stmt.value.value, str))
        future = isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__"
        if not (docstring or future):
            break
        at = stmt.end_lineno or at
    source = code.splitlines(keepends=True)
    if source and not source[-1].endswith("\n"):
        source[-1] += "\n"
    block = [comment + "\n", *(line + "\n" for line in lines)]
    return "".join(source[:at] + block + source[at:])


def harness_record(stage: str, error: str, line: int | None, **detail: Any) -> dict[str, Any]:
    """The record of a harness fix (no LLM call: no tokens, no seconds), whose `fixed` is set by
    `close_record` once the rewritten script ran; `detail` says what it changed (`added`, ...)."""
    return {"stage": stage, "error": error, "line": line, "fixed": None, **detail,
            "tokens": 0, "seconds": 0.0}


def import_fix(cand: Candidate, ex: Execution) -> tuple[Candidate, dict[str, Any]] | None:
    """A script that failed the static check with undefined names the harness can import:
    (the script with those imports added, its record, to be closed by `close_record` once the
    new script ran); None when there is nothing to add."""
    if not ex.skipped or not ex.static_problems or cand.llm_error:
        return None
    found = auto_imports(ex.static_problems)
    if not found:
        return None
    record = harness_record(IMPORTS_STAGE, "undefined: " + ", ".join(found), None, added=list(found.values()))
    return cand.model_copy(update={"code": add_imports(cand.code, list(found.values()))}), record


_MISPLACED_AT = re.compile(r"^line (\d+): ImportError: cannot import name '(\w+)' from '([\w.]+)'")
MOVED_COMMENT = "# moved by the harness:"


def _whole_lines(stmt: ast.stmt, lines: list[str]) -> bool:
    """Whether `stmt` is alone on its lines (no `;` neighbour), so its lines can be rewritten."""
    end = stmt.end_lineno or stmt.lineno
    head, tail = lines[stmt.lineno - 1][:stmt.col_offset], lines[end - 1][stmt.end_col_offset or 0:]
    return not head.strip() and (not tail.strip() or tail.strip().startswith("#"))


def move_fix(cand: Candidate, ex: Execution) -> tuple[Candidate, dict[str, Any]] | None:
    """A script that failed the static check because it imports a name from a module that lacks
    it, where one of the common modules has it (`from sklearn.model_selection import
    RandomForestClassifier`: `nodes.import_hints.import_for`): (the script with that name imported
    from the module that has it, in the same place and under the same alias, its record); None
    when there is nothing to move."""
    if not ex.skipped or not ex.static_problems or cand.llm_error:
        return None
    wrong: dict[int, dict[str, str]] = {}  # line -> {name: the module that has it}
    for m in map(_MISPLACED_AT.match, ex.static_problems):
        line = import_for(m.group(2)) if m else None
        if m and line and line.startswith("from ") and line.split()[1] != m.group(3):
            wrong.setdefault(int(m.group(1)), {})[m.group(2)] = line.split()[1]
    if not wrong:
        return None
    try:
        tree = parse(cand.code)
    except SyntaxError:
        return None
    lines = cand.code.splitlines()
    edits: list[tuple[int, int, list[str]]] = []
    added: list[str] = []
    for stmt in ast.walk(tree):
        move = wrong.get(getattr(stmt, "lineno", 0)) if isinstance(stmt, ast.ImportFrom) else None
        if not move or not stmt.module or not _whole_lines(stmt, lines):
            continue
        indent = lines[stmt.lineno - 1][:stmt.col_offset]
        kept = [a for a in stmt.names if a.name not in move]
        moved = [ast.unparse(ast.ImportFrom(module=move[a.name], names=[a], level=0))
                 for a in stmt.names if a.name in move]
        new = [ast.unparse(ast.ImportFrom(module=stmt.module, names=kept, level=stmt.level))] if kept else []
        names = ", ".join(a.name for a in stmt.names if a.name in move)
        note = f"{MOVED_COMMENT} {names} is not in {stmt.module}"
        edits.append((stmt.lineno, stmt.end_lineno or stmt.lineno,
                      [f"{indent}{note}", *(indent + text for text in new + moved)]))
        added.extend(moved)
    if not edits:
        return None
    for start, end, text in sorted(edits, reverse=True):
        lines[start - 1:end] = text
    record = harness_record(MOVED_STAGE, "misplaced: " + "; ".join(added), min(e[0] for e in edits),
                            added=added)
    return cand.model_copy(update={"code": "\n".join(lines) + "\n"}), record


# ---------------------------------------------------------------- a vectorizer the harness puts in

VECTORIZED_COMMENT = ("# imports added by the harness: the estimator got the strings of a text column "
                      "as they are, so a text vectorizer now comes first in its pipeline")
_VECTORIZER = {"near_unique": "TfidfVectorizer(analyzer='char_wb', ngram_range=(1, 3))",
               "texts": "TfidfVectorizer()"}
_VECTORIZER_IMPORTS = ["import numpy", "from sklearn.pipeline import make_pipeline",
                       "from sklearn.preprocessing import FunctionTransformer",
                       "from sklearn.feature_extraction.text import TfidfVectorizer"]
_BOOSTERS = re.compile(r"^(?:XGB|LGBM|CatBoost)\w*(?:Classifier|Regressor)$")


@lru_cache(maxsize=1)
def _estimator_names() -> frozenset[str]:
    """The class names of scikit-learn's classifiers and regressors (installed here)."""
    try:
        from sklearn.utils import all_estimators
        return frozenset(name for name, _ in all_estimators(type_filter=["classifier", "regressor"]))
    except Exception:  # noqa: BLE001 - no scikit-learn: no estimator to wrap
        return frozenset()


def _estimator_call(node: ast.AST | None) -> ast.Call | None:
    """`node` when it constructs a classifier or regressor (`KNeighborsClassifier(n_neighbors=1)`)."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    return node if name in _estimator_names() or _BOOSTERS.match(name) else None


def vectorize_fix(
    cand: Candidate, ex: Execution, data: Path | None
) -> tuple[Candidate, dict[str, Any]] | None:
    """A script that crashed in an estimator's `fit` because the strings of a text column reached
    it as they are (`could not convert string to float: 'chamness'`, the value found in `data`'s
    tables by `nodes.task_facts.value_home`), on a task whose one feature is that column of words
    or free text: (the script with that estimator made `make_pipeline(FunctionTransformer(
    numpy.ravel), <its text vectorizer>, <the estimator>)`, its record); None otherwise. The ravel
    takes a one-column table or a Series alike. The estimator is the one constructed on the
    failing `.fit` line, or assigned to the name whose `.fit` that is."""
    if data is None or cand.llm_error or ex.skipped or ex.valid or ex.exit_code in (0, None) or ex.timed_out:
        return None
    value = quoted_value(ex.failure, ex.output[-4000:])
    home = value_home(data, value) if value else None
    if (home is None or home.role != "feature" or home.kind not in _VECTORIZER
            or home.features != (home.column,)):
        return None
    lines = _SCRIPT_LINE.findall(traceback_tail(ex.output))
    if not lines:
        return None
    at = int(lines[-1])
    try:
        tree = parse(cand.code)
    except SyntaxError:
        return None
    fits = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == "fit" and n.lineno <= at <= (n.end_lineno or n.lineno)]
    target: ast.Call | None = None
    for fit in fits:
        receiver = fit.func.value  # type: ignore[attr-defined]
        target = _estimator_call(receiver)
        if target is None and isinstance(receiver, ast.Name):
            made = [s.value for s in ast.walk(tree) if isinstance(s, ast.Assign) and s.lineno < fit.lineno
                    and any(isinstance(t, ast.Name) and t.id == receiver.id for t in s.targets)]
            target = _estimator_call(max(made, key=lambda v: v.lineno)) if made else None
        if target is not None:
            break
    if target is None:
        return None
    segment = ast.get_source_segment(cand.code, target)
    if segment is None:
        return None
    begin, end = span(cand.code, target)
    wrapped = f"make_pipeline(FunctionTransformer(numpy.ravel), {_VECTORIZER[home.kind]}, {segment})"
    code = add_imports(cand.code[:begin] + wrapped + cand.code[end:], _VECTORIZER_IMPORTS, VECTORIZED_COMMENT)
    name = segment.split("(", 1)[0]
    record = harness_record(VECTORIZED_STAGE, f"the strings of `{home.column}` reached {name} as they are",
                            target.lineno, value=home.value[:200], added=[wrapped])
    return cand.model_copy(update={"code": code}), record


def shell_lines(code: str) -> list[int]:
    """The lines (1-based) whose logical line starts with `!` or `%`: notebook shell commands and
    magics, never Python (a `%` continuing an expression or a `!` inside a string is not one)."""
    found: list[int] = []
    start = True
    skip = (tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT, tokenize.ENCODING, tokenize.NL)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.NEWLINE:
                start = True
            elif tok.type not in skip and start:
                start = False
                if tok.string in ("!", "%"):
                    found.append(tok.start[0])
    except (tokenize.TokenError, SyntaxError):  # an unclosed bracket or string: what was seen stands
        pass
    return found


def shell_fix(cand: Candidate, ex: Execution) -> tuple[Candidate, dict[str, Any]] | None:
    """A script that does not parse because it holds notebook lines (`!pip install imblearn`,
    `%matplotlib inline`): (the script with each such line replaced by `pass` and a comment
    quoting it, its record); None when the script parses or has no such line."""
    if not ex.skipped or cand.llm_error or not any("SyntaxError" in p for p in ex.static_problems):
        return None
    at = shell_lines(cand.code)
    if not at:
        return None
    lines = cand.code.splitlines()
    removed = [lines[n - 1].strip() for n in at]
    for n, text in zip(at, removed):
        line = lines[n - 1]
        lines[n - 1] = f"{line[:len(line) - len(line.lstrip())]}pass  {SHELL_COMMENT} {text}"
    record = harness_record(SHELL_STAGE, "notebook lines: " + "; ".join(removed)[:300], at[0],
                            removed=removed)
    return cand.model_copy(update={"code": "\n".join(lines) + "\n"}), record


_UNDEFINED_AT = re.compile(r"^line (\d+): undefined name '(\w+)'")
_DEFINED_LATER = re.compile(
    r"^line (\d+): undefined name '(\w+)' \(assigned only later, line (\d+): `(?:def|class) ")
HOISTED_COMMENT = "# moved up by the harness: used above the line that defined it:"


def _evaluated_at_definition(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> list[ast.AST]:
    """What runs when a def or class statement runs (decorators, defaults, bases, annotations):
    moving the statement up must not make these read a name not yet assigned."""
    found: list[ast.AST] = list(node.decorator_list)
    if isinstance(node, ast.ClassDef):
        return found + list(node.bases) + [k.value for k in node.keywords]
    args = node.args
    found += [d for d in (*args.defaults, *args.kw_defaults) if d is not None]
    found += [a.annotation for a in (*args.posonlyargs, *args.args, *args.kwonlyargs) if a.annotation]
    return found + ([node.returns] if node.returns else [])


def hoist_fix(cand: Candidate, ex: Execution) -> tuple[Candidate, dict[str, Any]] | None:
    """A script that failed the static check because it uses a function or class above the
    top-level `def`/`class` that defines it (a small model writes the helper after the code that
    calls it): (the script with that definition moved to just above the top-level statement that
    first uses it, under a comment saying so, its record); None otherwise. Only a name defined
    once at the top level, whose definition evaluates nothing but constants when it runs (no
    decorators, defaults, bases or annotations that read names): moving it up then changes
    nothing but when the name exists."""
    if not ex.skipped or not ex.static_problems or cand.llm_error:
        return None
    wanted: dict[str, int] = {}  # name -> the first line that uses it
    for m in map(_DEFINED_LATER.match, ex.static_problems):
        if m:
            wanted[m.group(2)] = min(int(m.group(1)), wanted.get(m.group(2), int(m.group(1))))
    if not wanted:
        return None
    try:
        tree = parse(cand.code)
    except SyntaxError:
        return None
    body = tree.body
    lines = cand.code.splitlines()
    moves: list[tuple[int, ast.stmt]] = []  # (index of the statement to go above, the definition)
    for name, used in wanted.items():
        defs = [s for s in body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and s.name == name]
        if len(defs) != 1:
            continue
        reads = {n.id for e in _evaluated_at_definition(defs[0]) for n in ast.walk(e)
                 if isinstance(n, ast.Name)}
        if reads - set(dir(builtins)):
            continue
        first = next((i for i, s in enumerate(body) if s.lineno <= used <= (s.end_lineno or s.lineno)), None)
        if first is None or body[first].lineno >= defs[0].lineno:
            continue
        moves.append((first, defs[0]))
    if not moves:
        return None
    # cut the definitions out (bottom first), then put each above its first user (bottom first)
    blocks: dict[int, list[str]] = {}
    for _, d in sorted(moves, key=lambda m: m[1].lineno, reverse=True):
        blocks[d.lineno] = lines[d.lineno - 1:d.end_lineno]
        del lines[d.lineno - 1:d.end_lineno]
    for first, d in sorted(moves, key=lambda m: (body[m[0]].lineno, m[1].lineno), reverse=True):
        at = body[first].lineno - 1  # above every moved definition: its line number is unchanged
        lines[at:at] = [f"{HOISTED_COMMENT} {d.name}", *blocks[d.lineno], ""]
    names = ", ".join(d.name for _, d in sorted(moves, key=lambda m: m[1].lineno))
    record = harness_record(HOISTED_STAGE, f"defined below its first use: {names}",
                            min(body[f].lineno for f, _ in moves),
                            added=[f"{d.name} moved above line {body[f].lineno}" for f, d in moves])
    return cand.model_copy(update={"code": "\n".join(lines) + "\n"}), record


def outline_fix(cand: Candidate, ex: Execution, outline: tuple[OutlineLine, ...]
                ) -> tuple[Candidate, dict[str, Any]] | None:
    """A script that failed the static check with undefined names that lines of the data facts'
    outline define (`nodes.outline.add_outline_lines`): (the script with those lines added, its
    record, to be closed by `close_record` once it ran); None when there is nothing to add."""
    if not ex.skipped or not ex.static_problems or cand.llm_error or not outline:
        return None
    undefined = [(m.group(2), int(m.group(1))) for m in map(_UNDEFINED_AT.match, ex.static_problems) if m]
    done = add_outline_lines(cand.code, undefined, outline)
    if done is None:
        return None
    code, lines = done
    named = {n for o in outline if o.text in lines for n in o.assigns}
    names = list(dict.fromkeys(n for n, _ in undefined if n in named))
    record = harness_record(OUTLINE_STAGE, "undefined: " + ", ".join(names), None, added=lines)
    return cand.model_copy(update={"code": code}), record


def counterpart_fix(cand: Candidate, ex: Execution) -> tuple[Candidate, dict[str, Any]] | None:
    """A script that failed the static check with an undefined name whose counterpart for another
    split it assigns (`X_val_scaled`, where it has `X_test_scaled = scaler.transform(X_test)`):
    (the script with that line written for the missing split, `nodes.counterpart`, its record);
    None when there is none to add safely."""
    if not ex.skipped or not ex.static_problems or cand.llm_error:
        return None
    done = add_counterparts(cand.code, list(ex.static_problems))
    if done is None:
        return None
    code, found = done
    names = ", ".join(c.name for c in found)
    record = harness_record(COUNTERPART_STAGE, f"undefined: {names}", min(c.before for c in found),
                            added=[c.line for c in found])
    return cand.model_copy(update={"code": code}), record


_NOT_INSTALLED = re.compile(r"No module named '(\w+)' \(not installed where scripts run\)")


def substitute_fix(cand: Candidate, ex: Execution) -> tuple[Candidate, dict[str, Any]] | None:
    """A script that failed the static check because it imports XGBoost, LightGBM or CatBoost,
    which are not installed where scripts run, and uses only their estimator classes: (the script
    with those made scikit-learn's HistGradientBoosting estimators, `nodes.substitute`, its
    record); None otherwise."""
    if not ex.skipped or not ex.static_problems or cand.llm_error:
        return None
    done = substitute(cand.code, list(ex.static_problems))
    if done is None:
        return None
    code, rewritten = done
    added = [f"line {s.line}: {s.was[:120]} -> {s.now[:120]}"
             + (f" (dropped: {', '.join(s.dropped)})" if s.dropped else "") for s in rewritten]
    packages = sorted(m.group(1) for m in map(_NOT_INSTALLED.search, ex.static_problems) if m)
    record = harness_record(SUBSTITUTED_STAGE, f"not installed: {rewritten[0].was}", rewritten[0].line,
                            added=added, packages=packages)
    return cand.model_copy(update={"code": code}), record


def reorder_fix(cand: Candidate, ex: Execution) -> tuple[Candidate, dict[str, Any]] | None:
    """A script that failed the static check because it uses names above the plain assignments
    that make them (a repair answer put its lines above what they read): (the script with those
    assignments, and the lines below the use they need, moved above the statement that first uses
    them, `nodes.reorder`, its record); None when none can be moved safely."""
    if not ex.skipped or not ex.static_problems or cand.llm_error:
        return None
    done = move_up(cand.code, list(ex.static_problems))
    if done is None:
        return None
    code, moved = done
    names = ", ".join(n for m in moved for n in m.names)
    added = [f"lines {', '.join(map(str, m.lines))} moved above line {m.above}: {m.text}" for m in moved]
    record = harness_record(REORDERED_STAGE, f"used above the line that assigns it: {names}", moved[0].above,
                            added=added, names=[n for m in moved for n in m.names])
    return cand.model_copy(update={"code": code}), record


def test_rows_fix(cand: Candidate, ex: Execution, outline: tuple[OutlineLine, ...] = ()
                  ) -> tuple[Candidate, dict[str, Any]] | None:
    """A script that crashed writing the predictions for a validation split (or the train table)
    into the submission's column (`Length of values (56) does not match length of index (164)`):
    (the script with that value predicted from the test split's features, `nodes.test_rows`, with
    the `outline` lines that make them when the script has none, its record); None otherwise."""
    if cand.llm_error or ex.skipped or ex.valid or ex.exit_code in (0, None) or ex.timed_out:
        return None
    lines = _SCRIPT_LINE.findall(traceback_tail(ex.output))
    done = repredict(cand.code, ex.failure or "", int(lines[-1])) if lines else None
    if done is None:
        return None
    code, what = done
    added = [f"line {what.line}: {what.was[:150]} -> {what.now[:150]}"]
    if what.unassigned:
        made = add_outline_lines(code, [(what.features, what.line)], outline)
        if made is None:
            return None
        code = made[0]
        added += made[1]
    record = harness_record(TEST_ROWS_STAGE, (ex.failure or "")[:300], what.line, added=added)
    return cand.model_copy(update={"code": code}), record


def double_vectorize_fix(cand: Candidate, ex: Execution) -> tuple[Candidate, dict[str, Any]] | None:
    """A script that crashed fitting a pipeline that vectorizes text on text it already vectorized
    (`'csr_matrix' object has no attribute 'lower'`): (the script with the pipeline's text
    vectorizers taken out, `nodes.double_vectorize`, its record); None otherwise."""
    if cand.llm_error or ex.skipped or ex.valid or ex.exit_code in (0, None) or ex.timed_out:
        return None
    lines = _SCRIPT_LINE.findall(traceback_tail(ex.output))
    done = unvectorize(cand.code, ex.failure or "", int(lines[-1])) if lines else None
    if done is None:
        return None
    code, was, now = done
    record = harness_record(UNVECTORIZED_STAGE, (ex.failure or "")[:300], int(lines[-1]),
                            added=[f"{was[:150]} -> {now[:150]}"])
    return cand.model_copy(update={"code": code}), record


def absent_drop_fix(cand: Candidate, ex: Execution, data: Path | None
                    ) -> tuple[Candidate, dict[str, Any]] | None:
    """A script that crashed dropping the target from the test table, which never had it
    (`KeyError: "['target'] not found in axis"`, the target as `data`'s tables say): (the script
    with `errors="ignore"` on those drops, `nodes.absent_drop`, its record); None otherwise."""
    if data is None or cand.llm_error or ex.skipped or ex.valid or ex.exit_code in (0, None) or ex.timed_out:
        return None
    lines = _SCRIPT_LINE.findall(traceback_tail(ex.output))
    if not lines or not absent_labels(ex.failure):
        return None

    def is_target(name: str) -> bool:
        home = column_home(data, name)
        return home is not None and home.role == "target"

    done = ignore_absent(cand.code, ex.failure or "", int(lines[-1]), is_target)
    if done is None:
        return None
    code, labels, was = done
    added = [f'{w[:150]} -> errors="ignore"' for w in was]
    record = harness_record(ABSENT_DROP_STAGE, f"the test table has no {', '.join(labels)} to drop",
                            int(lines[-1]), added=added, labels=labels)
    return cand.model_copy(update={"code": code}), record


REMOVED_API_COMMENT = "# imported by the harness for the calls it rewrote (a removed API)"


def removed_api_fix(cand: Candidate, ex: Execution) -> tuple[Candidate, dict[str, Any]] | None:
    """A script that crashed on an API the installed versions removed (`squared=False`,
    `OneHotEncoder(sparse=...)`, `.applymap`): (the script with those calls rewritten as the same
    computation, `nodes.removed_api`, its record); None otherwise."""
    if cand.llm_error or ex.skipped or ex.valid or ex.exit_code in (0, None) or ex.timed_out:
        return None
    done = rewrite_removed(cand.code, ex.failure, traceback_tail(ex.output))
    if done is None:
        return None
    code, what, numpy = done
    if numpy and not re.search(r"^import numpy\s*$", code, re.M):
        code = add_imports(code, ["import numpy"], REMOVED_API_COMMENT)
    record = harness_record(REMOVED_API_STAGE, (ex.failure or "")[:300], None, added=what)
    return cand.model_copy(update={"code": code}), record


Fix = Callable[[Candidate, "Execution"], "tuple[Candidate, dict[str, Any]] | None"]


def harness_fixes(*, imports: bool = True, outline: tuple[OutlineLine, ...] = (),
                  vectorize: Path | None = None, data: Path | None = None) -> list[Fix]:
    """What the harness does, in this order, to a script the static check failed, each once per
    run of the step's script (no LLM call): take out notebook shell lines that keep it from
    parsing (`shell_fix`, always), move a def or class above its first use (`hoist_fix`,
    always), add the imports of undefined names (`import_fix`), import a
    name from the module that has it where the script names one that lacks it (`move_fix`), make
    the estimators of a gradient-boosting package that is not installed scikit-learn's
    (`substitute_fix`, always), move
    plain assignments above the statement that first uses their names (`reorder_fix`, always), then
    the outline lines of undefined names (`outline_fix`, with the outline of the prompt), then a
    split's line made from the one the script wrote for another split (`counterpart_fix`,
    always); to a script that crashed on an API the installed versions removed, those calls
    rewritten as the same computation (`removed_api_fix`, always); to one that crashed writing a
    validation split's predictions into the submission, the test split's (`test_rows_fix`,
    always); to one that crashed fitting a pipeline that vectorizes text on what it vectorized
    already, that pipeline without its text vectorizers (`double_vectorize_fix`, always); to one
    that crashed dropping the target from the test table, `errors="ignore"` on
    that drop (`absent_drop_fix`, with `data`, the folder scripts read); and to
    a script whose estimator crashed on the strings of the task's one text column, put a text
    vectorizer before it (`vectorize_fix`, with `vectorize`, the folder scripts read)."""
    # the substitution after the imports: one of them may be the package (`xgb` -> `import xgboost as xgb`)
    fixes: list[Fix] = [shell_fix, hoist_fix, *([import_fix, move_fix] if imports else []), substitute_fix,
                        reorder_fix]
    if outline:
        fixes.append(lambda c, ex: outline_fix(c, ex, outline))
    fixes += [counterpart_fix, removed_api_fix, lambda c, ex: test_rows_fix(c, ex, outline),
              double_vectorize_fix]
    if data is not None:
        fixes.append(lambda c, ex: absent_drop_fix(c, ex, data))
    if vectorize is not None:
        fixes.append(lambda c, ex: vectorize_fix(c, ex, vectorize))
    return fixes


def progress(ex: Execution) -> int:
    """How far a run got: 0 no script (the generation failed), 1 failed the static check, 2 ran
    and crashed, timed out or was stopped, 3 ran to the end (exit 0) without its outputs, 4 valid."""
    if ex.valid:
        return 4
    if ex.skipped:
        return 1 if ex.static_problems else 0
    if ex.exit_code == 0 and not ex.timed_out and not ex.killed_reason:
        return 3
    return 2


def kept_before(before: Execution, after: Execution) -> bool:
    """Whether a repair's run (`after`) got less far than the run of the script before it
    (`before`), so the step goes on with that script; a tie keeps the repaired one."""
    return progress(after) < progress(before)


SET_ASIDE = "before"  # a repair record's `kept` when the step went on with the script before it


def set_aside(records: list[dict[str, Any]], script: str) -> list[dict[str, Any]]:
    """The closed records of one repair (the call's, and the imports the harness then added),
    marked as set aside: the step went on with the script before it. The first keeps the
    `script` that was set aside (the node's code is the one before it), for tree.html."""
    return [{**r, "kept": SET_ASIDE, **({"script": script} if i == 0 else {})} for i, r in enumerate(records)]


# ---------------------------------------------------------------- a fragment put in its place

FRAGMENT_SHARE = 0.6  # an answer with fewer lines than this share of the script may be a fragment
ANCHOR_CHARS = 4  # a line shorter than this (blank, `)`, `else:`) does not anchor a fragment
SIMILAR = 0.6  # an edge line of the fragment this similar to the script's line next to it replaces it


def _line_key(line: str) -> str:
    return " ".join(line.split())


def splice_fragment(script: str, answer: str) -> tuple[str, tuple[int, int]] | None:
    """`script` with a repair `answer` that is only a fragment of it put in the place it covers:
    (the spliced script, (first, last) line of `script` replaced, 1-based), or None when the
    answer does not look like a fragment (it has at least `FRAGMENT_SHARE` of the script's lines,
    or fewer than two of its lines are lines of the script and it is not made of assignments
    of names the script assigns).

    The place: from the first to the last line of the script that the fragment repeats (difflib's
    matching blocks on whitespace-normalised lines), widened over the script's lines next to it
    while the fragment's unmatched edge lines resemble them (a changed line replaces its
    original; the edge lines past that are inserted). A fragment with too few such lines that
    is made of top-level assignments goes where the script assigns the same names
    (`_assignments_splice`)."""
    old, new = script.splitlines(), answer.splitlines()
    if not new or len(new) >= FRAGMENT_SHARE * len(old):
        return None
    old_keys, new_keys = [_line_key(s) for s in old], [_line_key(s) for s in new]
    matcher = difflib.SequenceMatcher(None, old_keys, new_keys, autojunk=False)
    anchors = [(b.a + k, b.b + k) for b in matcher.get_matching_blocks() for k in range(b.size)
               if len(new_keys[b.b + k]) >= ANCHOR_CHARS]
    if len(anchors) < 2:
        return _assignments_splice(script, answer)
    (lo, first), (hi, last) = anchors[0], anchors[-1]
    lo = _widen(old_keys, [new_keys[j] for j in range(first - 1, -1, -1)], lo, -1)
    hi = _widen(old_keys, [new_keys[j] for j in range(last + 1, len(new))], hi, +1) + 1
    body = [*old[:lo], *new, *old[hi:]]
    return "\n".join(body) + "\n", (lo + 1, hi)


def _assignments_splice(script: str, answer: str) -> tuple[str, tuple[int, int]] | None:
    """A fragment of top-level assignments that repeats too few of the script's lines to anchor
    it (one changed line: the split with `stratify=` added): each assignment replaces the one
    top-level assignment of the script that binds the same names; None unless every one of them
    has exactly one such place (and no two the same)."""
    try:
        old_body, new_body = parse(script).body, parse(answer).body
    except (SyntaxError, ValueError):
        return None
    kinds = (ast.Assign, ast.AnnAssign)
    if not new_body or not all(isinstance(st, kinds) for st in new_body):
        return None
    olds = [st for st in old_body if isinstance(st, kinds)]
    places: dict[int, ast.stmt] = {}
    for st in new_body:
        names = bound_by(st)
        same = [o for o in olds if bound_by(o) == names]
        if len(same) != 1 or same[0].lineno in places:
            return None
        places[same[0].lineno] = st
    lines, new = script.splitlines(), answer.splitlines()
    spans = {o.lineno: o.end_lineno or o.lineno for o in olds}
    for at in sorted(places, reverse=True):
        st = places[at]
        lines[at - 1:spans[at]] = new[st.lineno - 1:st.end_lineno or st.lineno]
    first = min(places)
    return "\n".join(lines) + "\n", (first, max(spans[a] for a in places))


def _widen(old_keys: list[str], edge: list[str], at: int, step: int) -> int:
    """Where the place of a fragment ends on one side: from its anchor line `at`, the fragment's
    unmatched `edge` lines (outwards) replace the script's next non-blank lines while each is
    similar to it; blank and short lines on either side are passed over."""
    i = at
    for line in edge:
        if len(line) < ANCHOR_CHARS:
            continue
        j = i + step
        while 0 <= j < len(old_keys) and len(old_keys[j]) < ANCHOR_CHARS:
            j += step
        if not 0 <= j < len(old_keys) or difflib.SequenceMatcher(None, old_keys[j], line).ratio() < SIMILAR:
            break
        i = j
    return i


def splice_retry(before: str, answer: str, record: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """For a repair answer whose run got less far than the script `before` it: when the answer is
    a fragment of that script (`splice_fragment`), (the spliced script, the repair's `record`
    reopened to be closed by the spliced script's run, with `fragment`: its length, the lines it
    replaced and how the fragment alone did); None otherwise."""
    spliced = splice_fragment(before, answer)
    if spliced is None:
        return None
    code, (first, last) = spliced
    reopened = {k: v for k, v in record.items() if k not in ("then", "fixed")}
    reopened.update(fixed=None, fragment={"lines": len(answer.splitlines()), "replaced": [first, last],
                                          "then": record.get("then")})
    return code, reopened


def keep_or_set_aside(
    before: Candidate, before_ex: Execution, answer: str, cand: Candidate, ex: Execution,
    repairs: list[dict[str, Any]], at: int,
    attempt: Callable[[Candidate, dict[str, Any]], tuple[Candidate, Execution]], *, splice: bool,
) -> tuple[Candidate, Execution]:
    """After a repair's run (`cand`, `ex`; its records from `repairs[at]` on): the candidate and
    run the step goes on with. One that got less far than the script `before` it is, with
    `splice`, first retried as a fragment put in its place (`attempt(candidate, open record)`
    runs it and closes the record); if it still gets less far, its records are set aside and
    the step goes back to `before` (keeping every cost so far)."""
    if not kept_before(before_ex, ex):
        return cand, ex
    retry = splice_retry(before.code, answer, repairs[at]) if splice else None
    if retry is not None:
        code, reopened = retry
        del repairs[at:]
        cand, ex = attempt(cand.model_copy(update={"code": code}), reopened)
        if not kept_before(before_ex, ex):
            return cand, ex
    repairs[at:] = set_aside(repairs[at:], cand.code)  # the repair and its imports
    return before.model_copy(update={"usage": cand.usage}), before_ex


def parent_splice(parent_code: str, cand: Candidate, *, python: str | None = None,
                  imports: bool = True) -> tuple[Candidate, dict[str, Any]] | None:
    """A debug or improve answer that is a fragment of its parent's script: (the parent's script
    with the fragment in its place, the open record of stage PARENT_STAGE to be closed by
    `close_record` once it ran), or None. A fragment: the answer alone fails the static check
    (also with the imports the harness would add, when `imports`: an answer those make whole is
    a short script, not a fragment), or it names neither the metric line nor the submission
    (`missing_ending`: it would run and fail without them), and `splice_fragment` places it in
    the parent's script."""
    if cand.llm_error or not cand.code.strip():
        return None
    alone = check_script(cand.code, None, python)
    fix = import_fix(cand, alone) if imports and alone is not None and alone.static_problems else None
    if fix is not None:
        alone = check_script(fix[0].code, None, python)
    failed = alone.failure if alone is not None and alone.static_problems else None
    then = failed or missing_ending(cand.code)
    if then is None:
        return None
    spliced = splice_fragment(parent_code, cand.code)
    if spliced is None:
        return None
    code, (first, last) = spliced
    if failed is None and check_script(code, None, python) is not None:  # it ran alone, not there
        return None
    lines = len(cand.code.splitlines())
    record = harness_record(
        PARENT_STAGE, f"the answer ({lines} lines) is a fragment of the parent's script "
                      f"({len(parent_code.splitlines())} lines)", None,
        fragment={"lines": lines, "replaced": [first, last], "then": then[:300]})
    return cand.model_copy(update={"code": code}), record


def llm_repairs(records: list[dict[str, Any]]) -> int:
    """How many of a step's repair records were repair calls: not what the harness did, nor the
    second ask of an improve answer that changed nothing (`nodes.operators.improve_changed`),
    which leaves the K repairs to the failures."""
    return sum(1 for r in records if r.get("stage") not in (*HARNESS_STAGES, UNCHANGED_STAGE))


# ---------------------------------------------------------------- the repair call


def repair_remedies(need: RepairNeed) -> list[tuple[str, str]]:
    """(name, remedy) of the known remedies a repair request for `need` carries."""
    if need.stage == "static":
        return static_remedies(need.error)
    return named_failure_remedies(need.error, data=need.data)


def repair_prompt(code: str, need: RepairNeed, *, known: bool = True, facts: str = "") -> str:
    """The varying part of a repair request (the run's stable prefix, `facts`, goes before it;
    its rows line tells what the row counts of a shape error are)."""
    return prompts.render(
        "repair",
        stage=need.stage,
        error=need.error,
        remedies=[remedy for _, remedy in repair_remedies(need)] if known else [],
        counts=count_note(table_rows(facts), need.error) if known and need.stage != "static" else None,
        imports=missing_imports(need.error) if known else [],
        line=need.line,
        marked=[n for n in sorted({need.line, *need.also}) if n is not None],
        problems=len(need.error.splitlines()) if need.stage == "static" else 1,
        excerpt=excerpt(code, need.line, also=need.also),
        code=code.rstrip(),
    )


def ask_for_repair(
    llm: BaseChatModel, system: str, code: str, need: RepairNeed, *, system_prompt: bool, known: bool = True,
) -> Candidate:
    """One repair call (role `repairer`): a whole corrected script, or a Candidate with llm_error;
    its `remedies` name the known remedies the request carried."""
    answer = ask_for_script(llm, system, repair_prompt(code, need, known=known, facts=system),
                            system_prompt=system_prompt,
                            role="repairer")
    names = [name for name, _ in repair_remedies(need)] if known else []
    return answer.model_copy(update={"remedies": names})


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
    if answer.remedies:
        record["remedies"] = list(answer.remedies)
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
    elif record["stage"] == REMOVED_API_STAGE:  # past the removed API's error
        fixed = ex.valid or (not ex.skipped and not removed_api_error(ex.failure))
    elif record["stage"] == SUBSTITUTED_STAGE:  # the static check no longer names those packages
        gone = record.get("packages", ())
        fixed = not ex.skipped or not any(f"No module named '{p}'" in problem
                                          for p in gone for problem in ex.static_problems)
    elif record["stage"] == REORDERED_STAGE:  # nor those names as assigned only later
        fixed = not ex.skipped or not any(f"undefined name '{n}' (assigned only later" in problem
                                          for n in record.get("names", ()) for problem in ex.static_problems)
    elif record["stage"] == UNVECTORIZED_STAGE:  # past the matrix given to a text vectorizer
        fixed = ex.valid or (not ex.skipped and not not_text(ex.failure))
    elif record["stage"] == ABSENT_DROP_STAGE:  # past the missing labels
        still = set(record.get("labels") or ()) & set(absent_labels(ex.failure))
        fixed = ex.valid or (not ex.skipped and not still)
    elif record["stage"] == TEST_ROWS_STAGE:  # past the length mismatch
        fixed = ex.valid or (not ex.skipped and not length_mismatch(ex.failure))
    elif record["stage"] == VECTORIZED_STAGE:  # past the strings it was about
        fixed = ex.valid or (not ex.skipped and str(record.get("value")) not in (ex.failure or ""))
    else:
        fixed = not ex.skipped and (record["stage"] in ("static", *HARNESS_STAGES)
                                    or not crashed_early(ex, early_crash_s))
    if ex.valid:
        then = "valid, " + metric_text(ex.metric, "metric")
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
    auto_imports: bool = True,
    outline: bool = True,
    revert: bool = True,
    splice: bool = True,
    on_repair: Callable[[int, RepairNeed], None] | None = None,
    parent: str = "",
    python: str | None = None,
    vectorize: Path | None = None,
    data: Path | None = None,
) -> tuple[Candidate, Execution, list[dict[str, Any]]]:
    """Execute `cand` (`run(candidate, attempt)`, attempt 0, 1, ...: a run after the first must
    not disturb the files of an earlier one, which may be kept), adding the imports of undefined
    names (`import_fix`, unless `auto_imports` is off) and the data facts' outline lines of
    undefined names (`outline_fix`: the outline in `system`, unless `outline` is off), and
    repairing static failures, early
    crashes and missing outputs up to `max_repairs` times: (final candidate, its execution,
    repair records); the final candidate's usage counts the seconds of every execution and
    every repair call. With `revert`, a repair whose run got less far than the script before it
    is set aside (`kept_before`) and the step goes on with that script; with `splice` too, such an
    answer that is a fragment of that script is first put in its place (`splice_retry`) and the
    result run. `parent`: the script a debug or improve request showed; with `splice`, a first
    answer that is a fragment of it runs in its place (`parent_splice`; imports checked against
    `python`, the interpreter scripts run with). `vectorize`: the folder scripts read, for
    `vectorize_fix` (None: off); `data`: that folder, for the harness fixes that look up the
    task's tables (`absent_drop_fix`). For callers
    that run a candidate inside one graph node; the tree search runs the same steps as
    supersteps of its own."""
    repairs: list[dict[str, Any]] = []
    runs = 0
    fixes = harness_fixes(imports=auto_imports, outline=outline_from_prompt(system) if outline else (),
                          vectorize=vectorize, data=data)

    def execute(c: Candidate, closing: dict[str, Any] | None = None) -> tuple[Candidate, Execution]:
        # run `c` (closing the record of the repair that wrote it), then once more after each
        # thing the harness adds to a script the static check failed (`harness_fixes`)
        def once(c: Candidate, closing: dict[str, Any] | None) -> tuple[Candidate, Execution]:
            nonlocal runs
            c, ex = _counted(c, run(c, runs))
            runs += 1
            if closing is not None:
                repairs.append(close_record(closing, ex, early_crash_s=early_crash_s))
            return c, ex

        c, ex = once(c, closing)
        for fixer in fixes:
            fix = fixer(c, ex)
            if fix is not None:
                c, ex = once(*fix)
        return c, ex

    spliced = parent_splice(parent, cand, python=python, imports=auto_imports) if parent and splice else None
    cand, ex = execute(*spliced) if spliced is not None else execute(cand)
    while llm_repairs(repairs) < max_repairs:
        need = repair_need(cand, ex, early_crash_s=early_crash_s)
        if need is None:
            break
        if on_repair is not None:
            on_repair(llm_repairs(repairs) + 1, need)
        answer = ask_for_repair(llm, system, cand.code, need, system_prompt=system_prompt, known=known)
        repaired, record, runnable = apply_repair(cand, answer, need)
        if not runnable:
            repairs.append(record)
            cand = repaired
            break
        before, before_ex, at = cand, ex, len(repairs)
        cand, ex = execute(repaired, record)
        if revert:
            cand, ex = keep_or_set_aside(before, before_ex, repaired.code, cand, ex, repairs, at, execute,
                                         splice=splice)
    return cand, ex, repairs


def _counted(cand: Candidate, ex: Execution) -> tuple[Candidate, Execution]:
    """`cand` with the seconds of its execution `ex` added to its usage, and `ex`."""
    usage = cand.usage.model_copy(deep=True)
    usage.add_execution(ex.seconds)
    return cand.model_copy(update={"usage": usage}), ex
