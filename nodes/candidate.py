"""A generated script and what it cost, shared by every operator that asks for a script."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

import prompts
from nodes.code_extract import extract_plan_and_code
from nodes.usage import Usage
from serving.llm import MAX_ANSWER_CHARS, LLMCallError, LLMReply, build_messages, complete

NO_CODE = "no Python code block in the answer"
PLAN_PREVIEW_CHARS = 1000  # what is kept of an oversized answer, to show what it was


class Candidate(BaseModel):
    """A script proposed by an operator, before it is executed."""

    plan: str = ""
    code: str = ""
    reasoning: str = ""
    llm_error: str | None = None
    usage: Usage = Usage()


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
