"""Tokens and seconds spent on LLM calls: the cost recorded on every node."""

from __future__ import annotations

from pydantic import BaseModel

from serving.llm import LLMReply


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

    def add(self, other: Usage) -> None:
        """Add another tally to this one."""
        for name in Usage.model_fields:
            setattr(self, name, getattr(self, name) + getattr(other, name))
