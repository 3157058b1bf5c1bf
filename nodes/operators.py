"""Choose and write: the first half of a search step, read top-down.

1. The search policy, AIDE's, as a pure function: (tree, settings, rng) -> Action (draft,
   debug or improve, and the node it starts from), with the run's draft budget.
2. The operators' prompts: draft (a fresh solution from the task alone), improve (one atomic
   change to a working solution) and debug (fix a failing script, told which errors were already
   tried on its branch and, when the error is a known one (prompts/known_errors.yaml), its usual
   remedy).
3. Asking for the script: one LLM call whose answer becomes a `Candidate` (a plan, a script and
   what it cost), shared by every operator and strategy that asks for a script.

Running the script and repairing it inside the step is `nodes.execute`; reviewing it is
`nodes.review`.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

import prompts
from nodes.code_extract import extract_plan_and_code
from nodes.import_hints import failure_remedies, missing_imports
from nodes.pyast import parse
from nodes.row_counts import count_note, table_rows
from nodes.tree import Node, Tree
from nodes.usage import Usage
from serving.llm import MAX_ANSWER_CHARS, LLMCallError, LLMReply, build_messages, complete

# ---------------------------------------------------------------- the search policy


AIDE_DRAFTS = 5
STEPS_PER_DRAFT = 4


def draft_budget(steps: int, num_drafts: int | None = None) -> int:
    """Initial drafts for a run of `steps` nodes: `num_drafts` when given; otherwise one draft per
    4 steps, at least 1 and at most AIDE's 5 (4 steps: 1 draft and 3 debug/improve steps;
    10 steps: 2; 20 steps and more: 5). A short run drafting 5 times could never debug or improve."""
    if num_drafts is not None:
        return num_drafts
    return max(1, min(AIDE_DRAFTS, steps // STEPS_PER_DRAFT))


@dataclass(frozen=True)
class PolicySettings:
    """AIDE's defaults: 5 initial drafts, debug with probability 0.5 up to depth 3."""

    num_drafts: int = 5
    debug_prob: float = 0.5
    max_debug_depth: int = 3


@dataclass(frozen=True)
class Action:
    """What the next step does: a stage and the node it starts from (None for a draft)."""

    stage: str
    parent_id: str | None = None


def choose_action(tree: Tree, settings: PolicySettings, rng: random.Random) -> Action:
    """Pick the next step like AIDE.

    Fewer drafts than `num_drafts` -> draft. With probability `debug_prob`, debug a random
    buggy leaf whose debug depth is within the limit. No working node -> draft. Otherwise
    improve the best node.
    """
    if tree.draft_count < settings.num_drafts:
        return Action("draft")
    if rng.random() < settings.debug_prob:
        debuggable = [
            n for n in tree.buggy_leaves() if n.debug_depth <= settings.max_debug_depth
        ]
        if debuggable:
            return Action("debug", rng.choice(debuggable).id)
    best = tree.best()
    if best is None:
        return Action("draft")
    return Action("improve", best.id)


def step_rng(seed: int, step: int) -> random.Random:
    """A generator fixed by (seed, step), so a replayed step makes the same choice."""
    return random.Random(f"{seed}:{step}")


# ---------------------------------------------------------------- the draft prompt: a fresh solution


def draft_prompt(memory: list[str]) -> str:
    """The request for a new solution; `memory` lists one-line summaries of earlier attempts
    (`Tree.branch_memory(None)`: earlier drafts and the run's best nodes). The reply format is
    added by `ask_for_script`."""
    return prompts.render("draft", memory=memory)


def draft(
    llm: BaseChatModel, system: str, memory: list[str], *, system_prompt: bool = True
) -> Candidate:
    """Ask for a new solution."""
    return ask_for_script(llm, system, draft_prompt(memory), system_prompt=system_prompt)


# ---------------------------------------------------------------- the improve prompt: one atomic change


_WARNING = re.compile(r"^(?:.*?:\d+: )?(\w*Warning): (.+?)\s*$", re.MULTILINE)
WARNINGS_SHOWN = 3
WARNING_CHARS = 240


def run_warnings(output: str | None, limit: int = WARNINGS_SHOWN, chars: int = WARNING_CHARS) -> list[str]:
    """The distinct warnings a run printed ("Category: message", without the file and line of
    the library that raised it), first seen first, at most `limit`, each cut to `chars`:
    what a working script's output says could be better (a classifier fit to a numeric target,
    a model that did not converge)."""
    found: list[str] = []
    for m in _WARNING.finditer(output or ""):
        text = f"{m.group(1)}: {m.group(2)}"
        text = text if len(text) <= chars else text[: chars - 3] + "..."
        if text not in found:
            found.append(text)
        if len(found) == limit:
            break
    return found


def improve_prompt(parent: Node, memory: list[str], *, lower_is_better: bool) -> str:
    """The request for an improved version of `parent`'s script.

    The parent's code, review and the warnings its run printed (`run_warnings`) come before
    `memory` (which changes every step), so repeated improves of one node share a cached prompt
    prefix up to the memory."""
    return prompts.render(
        "improve",
        code=parent.code.rstrip(),
        metric=f"{parent.metric:.6g}" if parent.metric is not None else "n/a",
        direction="lower is better" if lower_is_better else "higher is better",
        analysis=parent.review.strip(),
        warnings=run_warnings(parent.output),
        flag=parent.self_report_flag,
        memory=memory,
    )


UNCHANGED_STAGE = "unchanged"  # an improve answer that left the program as it was, asked again
AGAIN_ROLE = "coder-again"


class _Strip(ast.NodeTransformer):
    """Drops imports and bare strings (docstrings) from every block; an emptied block gets `pass`."""

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            stmts = getattr(node, field, None)
            if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
                kept = [st for st in stmts if not isinstance(st, (ast.Import, ast.ImportFrom))
                        and not (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant))]
                setattr(node, field, kept or [ast.Pass()])
        return node


def _program(code: str) -> str | None:
    """What a script computes, for comparison: its syntax tree without comments, blank lines,
    imports and bare strings (docstrings); None when it does not parse."""
    try:
        tree = parse(code)
    except (SyntaxError, ValueError):
        return None
    return ast.dump(_Strip().visit(tree))


def same_program(code: str, other: str) -> bool:
    """Whether two scripts compute the same thing: equal once comments, blank lines, imports and
    docstrings are set aside (an improve answer that only rewords a comment or repeats an import
    changes nothing a run can measure). False when either does not parse."""
    a = _program(code)
    return a is not None and a == _program(other)


UNCHANGED_NOTE = (
    "## Your previous answer changed nothing\n"
    "It gave back the current solution with only comments, blank lines or imports changed, so it "
    "would score exactly the same. Make ONE concrete change to what the script computes (a "
    "different model or its settings, a new feature, a preprocessing step), name it in the plan, "
    "and give the complete script.")


def improve_changed(
    llm: BaseChatModel,
    system: str,
    request: str,
    parent_code: str,
    *,
    system_prompt: bool = True,
    as_run: Callable[[Candidate], str] | None = None,
) -> tuple[Candidate, dict[str, Any] | None]:
    """An improve answer to `request` that changes the program of `parent_code`: when the first
    answer leaves it as it was (`same_program`), the request is asked once more with a note
    saying so (role `AGAIN_ROLE`). `as_run`: the script an answer would run as (a fragment put in
    the parent's script by the harness, `nodes.execute.parent_splice`; default the answer's
    own), so a fragment that rebuilds the parent counts as unchanged too. (The candidate, with
    the usage of both calls; a record of stage `UNCHANGED_STAGE` for the node's repairs, `fixed`
    saying whether the second answer changed the program, or None when the first one did.)"""
    def program(c: Candidate) -> str:
        return as_run(c) if as_run is not None else c.code

    first = ask_for_script(llm, system, request, system_prompt=system_prompt)
    if first.llm_error or not first.code or not same_program(parent_code, program(first)):
        return first, None
    again = ask_for_script(llm, system, f"{request.rstrip()}\n\n{UNCHANGED_NOTE}\n",
                           system_prompt=system_prompt, role=AGAIN_ROLE)
    usage = first.usage.model_copy(deep=True)
    usage.add(again.usage)
    changed = not again.llm_error and bool(again.code) and not same_program(parent_code, program(again))
    record: dict[str, Any] = {
        "stage": UNCHANGED_STAGE, "error": "the improve answer left the program unchanged", "line": None,
        "fixed": changed, "tokens": again.usage.tokens, "seconds": round(again.usage.llm_seconds, 3),
        "then": "changed the program" if changed else "kept the first answer: " + (
            again.llm_error or "the second one changed nothing either")}
    if not changed:  # the first answer stands, with what the second call cost
        return first.model_copy(update={"usage": usage}), record
    return again.model_copy(update={"usage": usage}), record


def improve(
    llm: BaseChatModel,
    system: str,
    parent: Node,
    memory: list[str],
    *,
    lower_is_better: bool,
    system_prompt: bool = True,
) -> Candidate:
    """Ask for an improved version of `parent`'s script."""
    text = improve_prompt(parent, memory, lower_is_better=lower_is_better)
    return ask_for_script(llm, system, text, system_prompt=system_prompt)


# ---------------------------------------------------------------- the debug prompt: fix a failing script


def tail(text: str, chars: int) -> str:
    """The end of a long output (where the error is), marked as cut."""
    text = text.strip()
    return "..." + text[-chars:] if len(text) > chars else text


def debug_prompt(
    parent: Node, earlier_errors: list[str], *, output_chars: int = 6000, known_errors: bool = True,
    facts: str = "", data: Path | str | None = None,
) -> str:
    """The request for a fixed version of the buggy `parent` (with the known remedy of its
    error unless `known_errors` is off: matched on the failure line first, then the output's end,
    and worded for the column that holds a value or key the error quotes when `data`, the folder
    the scripts read as ./input/, says which; and what the row counts of a shape error are, from
    the data facts' rows line in `facts`)."""
    output = tail(parent.output, output_chars)
    end = tail(parent.output, 2000)
    remedies = failure_remedies(parent.bug_reason, end, data=data) if known_errors else []
    imports = missing_imports(parent.bug_reason, end) if known_errors else []
    counts = count_note(table_rows(facts), parent.bug_reason, end) if known_errors else None
    return prompts.render(
        "debug",
        code=parent.code.rstrip(),
        failure=parent.bug_reason or "the run failed",
        output=output or "(no output)",
        earlier_errors=earlier_errors,
        remedies=remedies,
        counts=counts,
        imports=imports,
    )


def debug(
    llm: BaseChatModel,
    system: str,
    parent: Node,
    earlier_errors: list[str],
    *,
    output_chars: int = 6000,
    system_prompt: bool = True,
    known_errors: bool = True,
    data: Path | str | None = None,
) -> Candidate:
    """Ask for a fixed version of the buggy `parent` (`data`: the folder scripts read as ./input/)."""
    text = debug_prompt(parent, earlier_errors, output_chars=output_chars, known_errors=known_errors,
                        facts=system, data=data)
    return ask_for_script(llm, system, text, system_prompt=system_prompt)


# ---------------------------------------------------------------- asking for the script


NO_CODE = "no Python code block in the answer"
PLAN_PREVIEW_CHARS = 1000  # what is kept of an oversized answer, to show what it was


class Candidate(BaseModel):
    """A script proposed by an operator, before it is executed."""

    plan: str = ""
    code: str = ""
    reasoning: str = ""
    llm_error: str | None = None
    usage: Usage = Usage()
    remedies: list[str] = []  # a repair answer: the names of the known remedies its request carried


def candidate_from_reply(reply: LLMReply, usage: Usage) -> Candidate:
    """Plan and script out of one answer (reasoning kept apart, never parsed for code).

    An answer that cannot be run gets `llm_error` (and is not executed): no code block; a code
    block cut off (no closing fence) at the token limit or where what is left does not parse (the
    partial code is kept for the debug step); an answer longer than `MAX_ANSWER_CHARS`, which no
    server honouring the generation cap sends (only its beginning is kept, as the plan).
    """
    if reply.oversized_chars:
        size = f"{reply.oversized_chars:,} characters"
        plan = reply.text[:PLAN_PREVIEW_CHARS] + f"\n[... cut: the answer had {size}]"
        error = f"answer oversized: {size} (limit {MAX_ANSWER_CHARS:,}); not used"
        return Candidate(plan=plan, reasoning=reply.reasoning, llm_error=error, usage=usage)
    plan, code = extract_plan_and_code(reply.text)
    # the extractor takes an unterminated block up to the end of the answer: then the answer ends with it
    unterminated = bool(code) and reply.text.rstrip().endswith(code.rstrip())
    error = None
    if not code:
        cut = reply.finish_reason == "length"
        error = "answer cut off at the token limit before any code" if cut else NO_CODE
    elif unterminated and reply.finish_reason == "length":
        error = "answer truncated at the token limit (finish_reason=length, no closing fence)"
    elif unterminated and (problem := _syntax_problem(code)):
        error = f"answer truncated (no closing fence): the code does not parse ({problem})"
    return Candidate(plan=plan, code=code, reasoning=reply.reasoning, llm_error=error, usage=usage)


def _syntax_problem(code: str) -> str | None:
    try:
        compile(code, "<answer>", "exec")
    except SyntaxError as exc:
        return f"{exc.msg}, line {exc.lineno}"
    except ValueError as exc:
        return str(exc)
    return None


def with_script_format(task_prompt: str) -> str:
    """The request followed by the coder's reply format (a plan, then one code block); the run's
    stable prefix states no reply format, since the JSON roles share it."""
    return task_prompt.rstrip() + "\n\n" + prompts.render("script_reply")


def ask_for_script(
    llm: BaseChatModel, system: str, task_prompt: str, *, system_prompt: bool, role: str = "coder",
    **call_kwargs: object,
) -> Candidate:
    """One LLM call that should return a plan and a script; failures are recorded, not raised."""
    messages = build_messages(system, with_script_format(task_prompt), system_prompt=system_prompt)
    usage = Usage()
    try:
        reply = complete(llm, messages, **call_kwargs)
    except LLMCallError as exc:
        usage.add_error(role, exc)
        return Candidate(llm_error=f"LLM call failed: {exc}", usage=usage)
    usage.add_reply(reply, role)
    return candidate_from_reply(reply, usage)
