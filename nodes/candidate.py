"""A generated script and what it cost, shared by the draft / improve / debug operators."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

from nodes.code_extract import extract_plan_and_code
from serving.llm import LLMCallError, LLMReply, build_messages, complete


class Usage(BaseModel):
    """Tokens and seconds of the LLM calls behind one node."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    llm_seconds: float = 0.0
    llm_calls: int = 0

    def add_reply(self, reply: LLMReply) -> None:
        """Count one answered call."""
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        self.reasoning_tokens += reply.reasoning_tokens
        self.cached_tokens += reply.cached_tokens
        self.llm_seconds += reply.seconds
        self.llm_calls += 1


class Candidate(BaseModel):
    """A script proposed by an operator, before it is executed."""

    plan: str = ""
    code: str = ""
    reasoning: str = ""
    llm_error: str | None = None
    usage: Usage = Usage()


def ask_for_script(
    llm: BaseChatModel, system: str, task_prompt: str, *, system_prompt: bool
) -> Candidate:
    """One LLM call that should return a plan and a script; failures are recorded, not raised."""
    messages = build_messages(system, task_prompt, system_prompt=system_prompt)
    try:
        reply = complete(llm, messages)
    except LLMCallError as exc:
        return Candidate(llm_error=str(exc))
    usage = Usage()
    usage.add_reply(reply)
    plan, code = extract_plan_and_code(reply.text)
    error = None
    if reply.finish_reason == "length" and not code:
        error = "answer cut off at the token limit before any code"
    return Candidate(plan=plan, code=code, reasoning=reply.reasoning, llm_error=error, usage=usage)
