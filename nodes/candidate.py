"""A generated script and what it cost, shared by every operator that asks for a script."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

from nodes.code_extract import extract_plan_and_code
from nodes.usage import Usage
from serving.llm import LLMCallError, LLMReply, build_messages, complete


class Candidate(BaseModel):
    """A script proposed by an operator, before it is executed."""

    plan: str = ""
    code: str = ""
    reasoning: str = ""
    llm_error: str | None = None
    usage: Usage = Usage()


def candidate_from_reply(reply: LLMReply, usage: Usage) -> Candidate:
    """Plan and script out of one answer (reasoning kept apart, never parsed for code)."""
    plan, code = extract_plan_and_code(reply.text)
    error = None
    if reply.finish_reason == "length" and not code:
        error = "answer cut off at the token limit before any code"
    return Candidate(plan=plan, code=code, reasoning=reply.reasoning, llm_error=error, usage=usage)


def ask_for_script(
    llm: BaseChatModel, system: str, task_prompt: str, *, system_prompt: bool, role: str = "coder",
    **call_kwargs: object,
) -> Candidate:
    """One LLM call that should return a plan and a script; failures are recorded, not raised."""
    messages = build_messages(system, task_prompt, system_prompt=system_prompt)
    usage = Usage()
    try:
        reply = complete(llm, messages, **call_kwargs)
    except LLMCallError as exc:
        usage.add_failure(role, str(exc))
        return Candidate(llm_error=str(exc), usage=usage)
    usage.add_reply(reply, role)
    return candidate_from_reply(reply, usage)
