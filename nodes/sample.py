"""Sample operator: N independent scripts for one request (self-consistency's fan-out).

Endpoints that honour OpenAI's `n` (vLLM) answer all N in one request, computing the prompt
once; others (llama.cpp) ignore it or refuse it, and the N samples become N concurrent requests
with distinct seeds. `SamplingSupport` detects which, once per run, unless forced.
"""

from __future__ import annotations

import threading
from typing import Literal

from langchain_core.language_models import BaseChatModel

from nodes.operators import Candidate, ask_for_script, candidate_from_reply, with_script_format
from nodes.usage import Usage
from serving.llm import LLMCallError, build_messages, complete_choices

SamplingMode = Literal["auto", "n", "concurrent"]


class SamplingSupport:
    """Whether this run's endpoint answers `n` choices in one request (learned or forced)."""

    def __init__(self, mode: SamplingMode = "auto") -> None:
        if mode not in ("auto", "n", "concurrent"):
            raise ValueError(f"sampling mode must be auto, n or concurrent, not {mode!r}")
        self.mode = mode
        self._lock = threading.Lock()
        self.n_supported: bool | None = {"auto": None, "n": True, "concurrent": False}[mode]
        self.why: str = {"auto": "", "n": "forced", "concurrent": "forced"}[mode]

    def try_n(self) -> bool:
        """Whether the next fan-out should ask for all samples in one request."""
        with self._lock:
            return self.n_supported is not False

    def learn(self, supported: bool, why: str) -> None:
        """Record what the endpoint did (only in auto mode; a forced mode stays)."""
        with self._lock:
            if self.mode == "auto" and self.n_supported is None:
                self.n_supported = supported
                self.why = why


def sample_in_one_call(
    llm: BaseChatModel, system: str, text: str, n: int, support: SamplingSupport, *,
    system_prompt: bool, seed: int,
) -> tuple[list[Candidate], Usage]:
    """Ask for `n` scripts in one request; returns those that came back (maybe fewer than n).

    The request's usage is returned separately (it covers every choice once). In auto mode a
    refusal or a short answer teaches `support` to use concurrent requests from now on.
    """
    usage = Usage()
    messages = build_messages(system, with_script_format(text), system_prompt=system_prompt)
    try:
        replies = complete_choices(llm, messages, n, seed=seed)
    except LLMCallError as exc:
        usage.add_error("sampler", exc)
        if not exc.transient:  # a timeout or an overloaded server says nothing about `n`
            support.learn(False, f"the endpoint refused n={n}: {exc}"[:200])
        if support.mode == "n":
            return [Candidate(llm_error=f"LLM call failed: n={n} request: {exc}")] * n, usage
        return [], usage
    usage.add_reply(replies[0], "sampler", choices=len(replies),
                    cut_choices=sum(r.finish_reason == "length" for r in replies))
    if len(replies) >= n:
        support.learn(True, f"the endpoint answered n={n} in one request")
    else:
        support.learn(False, f"the endpoint returned {len(replies)} of n={n} choices")
    return [candidate_from_reply(r, Usage()) for r in replies[:n]], usage


def sample_one(
    llm: BaseChatModel, system: str, text: str, *, system_prompt: bool, seed: int
) -> Candidate:
    """One sample of its own (a concurrent fan-out branch); the seed keeps branches distinct."""
    return ask_for_script(llm, system, text, system_prompt=system_prompt, role="sampler", seed=seed)
