"""Tokens and seconds spent on LLM calls, call by call, and the seconds of the script executions
behind them: the cost recorded on every node."""

from __future__ import annotations

from pydantic import BaseModel, Field

from serving.llm import LLMCallError, LLMReply


class LLMCall(BaseModel):
    """One LLM call behind a node: who asked (its role in the strategy) and what it cost."""

    role: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    seconds: float = 0.0
    choices: int = 1
    attempts: int = 1  # requests sent (more than 1: the client retried after a fault)
    error: str | None = None  # why the call failed for good (no answer came back)
    max_tokens: int | None = None  # the generation cap sent (answer + reasoning budget, bounded)
    finish_reason: str | None = None
    # the answer was cut at the cap and not asked again: the role's result is cut (with choices > 1:
    # at least one of them; cut_choices says how many)
    cut: bool = False
    cut_choices: int = 0
    retried: bool = False  # cut at the cap and asked again with a larger one (the next call)

    @property
    def answers_cut(self) -> int:
        """Answers of this call lost to the cap."""
        return max(self.cut_choices, 1) if self.cut else 0


_TOTALS = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")


class Usage(BaseModel):
    """Tokens and seconds of the LLM calls behind one node, with the list of calls, and the
    seconds of every script execution behind it (repairs' reruns, a strategy's candidates and
    rounds; `Node.exec_seconds` is the kept run's alone)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    llm_seconds: float = 0.0
    llm_calls: int = 0
    calls: list[LLMCall] = Field(default_factory=list)
    script_seconds: float = 0.0

    @property
    def tokens(self) -> int:
        """Prompt + completion tokens: what a token budget counts."""
        return self.prompt_tokens + self.completion_tokens

    def add_execution(self, seconds: float) -> None:
        """Count one script execution's seconds."""
        self.script_seconds += seconds

    def add_reply(self, reply: LLMReply, role: str = "coder", *, choices: int = 1, retried: bool = False,
                  cut_choices: int | None = None) -> None:
        """Count one answered call (a call with `choices` > 1 is counted once, as its usage is).

        An answer that stopped at the cap (finish_reason "length") is recorded as cut unless
        `retried` (asked again with a larger cap); `cut_choices`: how many of `choices` were cut
        (default: this reply's own finish reason)."""
        at_cap = reply.finish_reason == "length"
        n_cut = (1 if at_cap else 0) if cut_choices is None else cut_choices
        call = LLMCall(role=role, seconds=reply.seconds, choices=choices, attempts=max(1, reply.attempts),
                       max_tokens=reply.max_tokens, finish_reason=reply.finish_reason,
                       cut=n_cut > 0 and not retried, cut_choices=0 if retried else n_cut,
                       retried=retried and at_cap, **{k: getattr(reply, k) for k in _TOTALS})
        self.add_call(call)

    def add_failure(self, role: str, error: str, seconds: float = 0.0, attempts: int = 1) -> None:
        """Record a call that failed for good (no tokens known)."""
        self.add_call(LLMCall(role=role, seconds=seconds, attempts=max(1, attempts), error=error[:300]))

    def add_error(self, role: str, exc: LLMCallError) -> None:
        """Record a call that raised `exc` (its reason, time and attempts)."""
        self.add_failure(role, str(exc), seconds=exc.seconds, attempts=exc.attempts)

    def add_call(self, call: LLMCall) -> None:
        """Add one call to the totals and the list."""
        for k in _TOTALS:
            setattr(self, k, getattr(self, k) + getattr(call, k))
        self.llm_seconds += call.seconds
        self.llm_calls += 1
        self.calls.append(call)

    def add(self, other: Usage) -> None:
        """Add another tally (its calls and executions) to this one."""
        self.script_seconds += other.script_seconds
        for call in other.calls:
            self.add_call(call.model_copy())
        if not other.calls:  # a tally without a call list (older nodes): add the totals
            for k in (*_TOTALS, "llm_seconds", "llm_calls"):
                setattr(self, k, getattr(self, k) + getattr(other, k))
