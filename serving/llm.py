"""Chat-model clients for OpenAI-compatible endpoints (vLLM, llama.cpp, others).

One factory builds every client the agent uses, with timeouts and bounded retries. Replies come
back as `LLMReply`: the answer text with any chain of thought split off (vLLM's `reasoning` /
`reasoning_content` field or inline `<think>` blocks), plus usage and latency, so callers can
record exact cost on the tree node and never feed reasoning into code extraction.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatResult
from langchain_openai import ChatOpenAI

_THINK_RE = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)
_R1_NAME_RE = re.compile(r"(deepseek[-_]?r1|r1[-_]distill|distill)", re.IGNORECASE)


class EndpointError(Exception):
    """The endpoint cannot be used at all (unreachable, no models): a user-facing one-liner."""


class LLMCallError(Exception):
    """One LLM call failed after its bounded retries; recorded on the node, the run goes on."""


@dataclass(frozen=True)
class LLMSettings:
    """How to reach and sample one model."""

    base_url: str
    model: str
    api_key: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int = 4096
    timeout_s: float = 600.0
    max_retries: int = 2
    system_prompt: bool | None = None  # None: decided by the model family

    def resolved(self) -> LLMSettings:
        """Fill unset sampling settings from the model family's recommended defaults."""
        profile = model_profile(self.model)
        return LLMSettings(
            base_url=self.base_url,
            model=self.model,
            api_key=self.api_key,
            temperature=profile["temperature"] if self.temperature is None else self.temperature,
            top_p=profile["top_p"] if self.top_p is None else self.top_p,
            max_tokens=self.max_tokens,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            system_prompt=(
                profile["system_prompt"] if self.system_prompt is None else self.system_prompt
            ),
        )


def is_reasoning_model(model: str) -> bool:
    """True for DeepSeek-R1 and its distills, judged by the served model's name."""
    return bool(_R1_NAME_RE.search(model))


def model_profile(model: str) -> dict[str, Any]:
    """Recommended sampling for a model family (R1 distills: model-card settings)."""
    if is_reasoning_model(model):
        return {"temperature": 0.6, "top_p": 0.95, "system_prompt": False}
    return {"temperature": 0.7, "top_p": 0.95, "system_prompt": True}


class ReasoningChatOpenAI(ChatOpenAI):
    """ChatOpenAI for self-hosted servers: keeps the separate reasoning field vLLM's reasoning
    parser returns, and sends the generation cap as `max_tokens`.

    ChatOpenAI sends `max_completion_tokens`, which llama-cpp-python's server ignores (measured:
    an "n=2, max 900 tokens" request ran to 5,920 tokens); vLLM and llama.cpp both honour
    `max_tokens`.
    """

    def _get_request_payload(self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any) -> dict:
        payload = super()._get_request_payload(input_, stop=stop, **kwargs)
        if "max_completion_tokens" in payload:
            payload["max_tokens"] = payload.pop("max_completion_tokens")
        return payload

    def _create_chat_result(
        self, response: Any, generation_info: dict | None = None
    ) -> ChatResult:
        result = super()._create_chat_result(response, generation_info)
        raw = response if isinstance(response, dict) else response.model_dump()
        for gen, choice in zip(result.generations, raw.get("choices") or [], strict=False):
            message = choice.get("message") or {}
            reasoning = message.get("reasoning_content") or message.get("reasoning")
            if reasoning:
                gen.message.additional_kwargs["reasoning_content"] = reasoning
            usage = raw.get("usage") or {}
            gen.message.response_metadata.setdefault("raw_usage", usage)
        return result


def make_chat_model(settings: LLMSettings) -> BaseChatModel:
    """Build a chat client with timeouts and bounded retries (backoff, Retry-After honoured)."""
    s = settings.resolved()
    return ReasoningChatOpenAI(
        base_url=s.base_url,
        model=s.model,
        api_key=s.api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
        timeout=s.timeout_s,
        max_retries=s.max_retries,
    )


@dataclass
class LLMReply:
    """One answer with its cost."""

    text: str
    reasoning: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    seconds: float = 0.0
    finish_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def split_reasoning(text: str) -> tuple[str, str]:
    """Split inline `<think>...</think>` blocks off an answer: (answer, reasoning)."""
    if "<think>" not in text and "</think>" not in text:
        return text, ""
    # R1 templates often open <think> in the prompt, so the answer may start mid-thought.
    if "</think>" in text and "<think>" not in text.split("</think>", 1)[0]:
        head, tail = text.split("</think>", 1)
        reasoning_parts = [head]
        text = tail
    else:
        reasoning_parts = []
    reasoning_parts += [m.group(1) for m in _THINK_RE.finditer(text)]
    answer = _THINK_RE.sub("", text)
    return answer.strip(), "\n".join(p.strip() for p in reasoning_parts if p.strip())


def build_messages(stable: str, varying: str, *, system_prompt: bool) -> list[BaseMessage]:
    """Messages with the run-stable part first so servers reuse their prefix cache.

    Models that want no system prompt (R1 distills) get both parts in one user message, stable
    part first, so the prefix is still byte-identical across calls.
    """
    if system_prompt:
        return [SystemMessage(content=stable), HumanMessage(content=varying)]
    return [HumanMessage(content=f"{stable}\n\n{varying}")]


def _usage_numbers(message: AIMessage) -> dict[str, int]:
    usage = message.usage_metadata or {}
    raw = message.response_metadata.get("raw_usage") or {}
    in_details = usage.get("input_token_details") or {}
    out_details = usage.get("output_token_details") or {}
    return {
        "prompt_tokens": int(usage.get("input_tokens") or 0),
        "completion_tokens": int(usage.get("output_tokens") or 0),
        "cached_tokens": int(
            in_details.get("cache_read")
            or (raw.get("prompt_tokens_details") or {}).get("cached_tokens")
            or 0
        ),
        "reported_reasoning_tokens": int(out_details.get("reasoning") or 0),
    }


def reply_from_message(message: AIMessage, seconds: float) -> LLMReply:
    """Turn a chat answer into an `LLMReply`, separating reasoning from the answer."""
    content = message.content if isinstance(message.content, str) else str(message.content)
    answer, inline_reasoning = split_reasoning(content)
    reasoning = message.additional_kwargs.get("reasoning_content") or inline_reasoning
    nums = _usage_numbers(message)
    reasoning_tokens = nums["reported_reasoning_tokens"]
    if not reasoning_tokens and reasoning and nums["completion_tokens"]:
        # Servers rarely report reasoning tokens: apportion completion tokens by characters.
        share = len(reasoning) / max(1, len(reasoning) + len(answer))
        reasoning_tokens = round(nums["completion_tokens"] * share)
    return LLMReply(
        text=answer,
        reasoning=reasoning,
        prompt_tokens=nums["prompt_tokens"],
        completion_tokens=nums["completion_tokens"],
        reasoning_tokens=reasoning_tokens,
        cached_tokens=nums["cached_tokens"],
        seconds=seconds,
        finish_reason=(message.response_metadata or {}).get("finish_reason"),
    )


def complete(
    model: BaseChatModel, messages: Sequence[BaseMessage], **bind_kwargs: Any
) -> LLMReply:
    """Ask once (the client retries transport errors itself) and measure the call.

    Raises LLMCallError with a one-line reason when the call fails for good.
    """
    runnable = model.bind(**bind_kwargs) if bind_kwargs else model
    start = time.monotonic()
    try:
        message = runnable.invoke(list(messages))
    except Exception as exc:  # noqa: BLE001 - any client failure is recorded, not raised
        raise LLMCallError(_one_line(exc)) from exc
    seconds = time.monotonic() - start
    if not isinstance(message, AIMessage):
        raise LLMCallError(f"unexpected reply type {type(message).__name__}")
    return reply_from_message(message, seconds)


def complete_choices(
    model: BaseChatModel, messages: Sequence[BaseMessage], n: int, **call_kwargs: Any
) -> list[LLMReply]:
    """Ask for `n` samples in one request (OpenAI `n`; vLLM computes the prompt once).

    Servers that ignore `n` return fewer choices: the caller sees how many came back. The
    response's usage covers all choices, so it is put on the first reply only (never counted
    n times); the others carry their text with zero tokens. Raises LLMCallError on failure.
    """
    start = time.monotonic()
    try:
        result = model.generate([list(messages)], n=n, **call_kwargs)
    except Exception as exc:  # noqa: BLE001 - any client failure is recorded, not raised
        raise LLMCallError(_one_line(exc)) from exc
    seconds = time.monotonic() - start
    replies = []
    for i, gen in enumerate(result.generations[0] if result.generations else []):
        message = getattr(gen, "message", None)
        if not isinstance(message, AIMessage):
            raise LLMCallError(f"unexpected reply type {type(message).__name__}")
        reply = reply_from_message(message, seconds if i == 0 else 0.0)
        if i > 0:
            reply.prompt_tokens = reply.completion_tokens = reply.cached_tokens = 0
            reply.reasoning_tokens = 0
        replies.append(reply)
    if not replies:
        raise LLMCallError("the server returned no choices")
    return replies


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]


def list_endpoint_models(base_url: str, api_key: str | None = None, timeout_s: float = 10) -> list[str]:
    """Model ids the endpoint serves; EndpointError when it cannot be reached."""
    key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
    url = base_url.rstrip("/") + "/models"
    try:
        resp = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise EndpointError(f"cannot reach the LLM endpoint {base_url}: {_one_line(exc)}") from exc
    if resp.status_code != 200:
        raise EndpointError(
            f"LLM endpoint {base_url} answered {resp.status_code} to GET /models"
        )
    try:
        data = resp.json().get("data") or []
        return [str(m["id"]) for m in data if "id" in m]
    except (ValueError, AttributeError, TypeError) as exc:
        raise EndpointError(f"LLM endpoint {base_url} returned a malformed model list") from exc
