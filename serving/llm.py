"""Chat-model clients for OpenAI-compatible endpoints (vLLM, llama.cpp, others).

One factory builds every client the agent uses, with timeouts and bounded retries. Replies come
back as `LLMReply`: the answer text with any chain of thought split off (vLLM's `reasoning` /
`reasoning_content` field or inline `<think>` blocks), plus usage and latency, so callers can
record exact cost on the tree node and never feed reasoning into code extraction.

Faults: the openai SDK under ChatOpenAI retries timeouts, dropped connections, 408/409/429 and
5xx answers `max_retries` times, sleeping 0.5 s, 1 s, 2 s ... (up to 8 s, minus up to 25 % jitter)
or the server's `Retry-After` when it is 120 s or less (a longer one is not retried). Each attempt
is cut after `timeout_s` without an answer. Our HTTP client counts the attempts of every call and
refuses a response body over `max_response_bytes`; a call that fails for good raises
`LLMCallError` with a one-line reason ("HTTP 503 after 3 attempts: ...", "timeout (no answer
within 1 s) after 3 attempts", "malformed JSON response: ...", "no choices in the response").
Answers longer than `MAX_ANSWER_CHARS` are cut and flagged (`LLMReply.oversized_chars`).

Generation caps (`TokenBudget`, one per chat client, kept on the client as `token_budget`): a
caller asks for an *answer* cap (the coder: `LLMSettings.max_tokens`; the JSON roles their own
small ones); a reasoning model gets a reasoning budget on top (`LLMSettings.reasoning_budget`;
unset: `DEFAULT_REASONING_BUDGET` for a model that thinks, 0 for one that does not). A model is
known to think by its name (`is_reasoning_model`) or, failing that, from its first answer that
carries thinking (a `reasoning` / `reasoning_content` field, or `</think>` in the content): from
then on every call of that client gets the budget. Every cap is bounded by the server's context
length when known (vLLM reports `max_model_len` in `/v1/models`): at most the context minus the
prompt (estimated at `CHARS_PER_TOKEN` characters a token, which overestimates tokens for
English and code) minus `CONTEXT_MARGIN` tokens for the chat template.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatResult
from langchain_openai import ChatOpenAI

# The httpx flavour the installed openai SDK is built on (httpx2 for openai>=3); langchain-openai
# exports it for exactly this use: objects handed to the SDK's client.
from langchain_openai._compat import httpx as sdk_httpx
from pydantic import Field

DEFAULT_REASONING_BUDGET = 8192  # thinking tokens on top of the answer cap, for a model that thinks
CHARS_PER_TOKEN = 3  # prompt size estimate for the context bound (real tokens: ~3.5-4 characters)
CONTEXT_MARGIN = 64  # tokens kept free for the chat template and the estimate's error
MIN_CAP = 256  # a cap is never bounded below this (or the answer cap, if smaller)

_THINK_RE = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)
_R1_NAME_RE = re.compile(r"(deepseek[-_]?r1|r1[-_]distill|distill)", re.IGNORECASE)


class EndpointError(Exception):
    """The endpoint cannot be used at all (unreachable, no models): a user-facing one-liner."""


# An answer longer than this (about 50k tokens, beyond any generation cap we ask for) is cut to
# it and flagged: nothing downstream (node store, tree.json, later prompts) gets more.
MAX_ANSWER_CHARS = 200_000
# HTTP statuses of an overloaded or restarting server: worth asking again later. Not 500, which
# llama.cpp also answers to a request it cannot serve (e.g. a JSON schema it cannot compile).
TRANSIENT_STATUSES = frozenset({408, 409, 429, 502, 503, 504})


class LLMCallError(Exception):
    """One LLM call failed after its bounded retries; recorded on the node, the run goes on.

    `kind`: http, timeout, connection, malformed, no_choices, too_large or other; `status` the
    HTTP status of an http failure; `attempts` the requests sent (0: not counted, e.g. a fake
    model); `seconds` the time the call took, retries and backoff included.
    """

    def __init__(self, message: str, *, kind: str = "other", status: int | None = None,
                 attempts: int = 0, seconds: float = 0.0) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.attempts = attempts
        self.seconds = seconds

    @property
    def transient(self) -> bool:
        """A fault of the transport or an overloaded server, not the server refusing the request."""
        if self.kind == "http":
            return self.status in TRANSIENT_STATUSES
        return self.kind in ("timeout", "connection")


class ResponseTooLarge(Exception):
    """The response body is larger than the client accepts (raised while reading it)."""


class MalformedResponse(Exception):
    """A 200 answer that is not a chat completion."""


class NoChoices(Exception):
    """A chat completion with an empty or null `choices` list."""


@dataclass(frozen=True)
class LLMSettings:
    """How to reach and sample one model."""

    base_url: str
    model: str
    api_key: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int = 4096  # the answer cap of a call that names none (the coder's)
    reasoning_budget: int | None = None  # thinking tokens on top; None: by model (see TokenBudget)
    context_len: int | None = None  # the server's context length (None: unknown, caps not bounded)
    timeout_s: float = 600.0  # per attempt: no answer within it -> the attempt is cut
    max_retries: int = 2  # attempts = max_retries + 1 for timeouts, dropped connections, 429, 5xx
    system_prompt: bool | None = None  # None: decided by the model family
    max_response_bytes: int = 16 * 2**20  # a larger response body is refused, not read

    def resolved(self) -> LLMSettings:
        """Fill unset sampling settings from the model family's recommended defaults."""
        profile = model_profile(self.model)
        return replace(
            self,
            temperature=profile["temperature"] if self.temperature is None else self.temperature,
            top_p=profile["top_p"] if self.top_p is None else self.top_p,
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


class TokenBudget:
    """The generation caps of one chat client (see the module docstring), and whether its model
    thinks: known by name or detected from an answer. Shared by the threads of a run."""

    def __init__(self, *, model: str = "", reasoning_budget: int | None = None,
                 context_len: int | None = None, on_detect: Any = None) -> None:
        if reasoning_budget is not None and reasoning_budget < 0:
            raise ValueError(f"reasoning_budget must be 0 or more, not {reasoning_budget}")
        self.reasoning_budget = reasoning_budget
        self.context_len = context_len if context_len and context_len > 0 else None
        self._lock = threading.Lock()
        # a reasoning budget set by hand says the model thinks, whatever its name
        self.reasoning = is_reasoning_model(model) or bool(reasoning_budget)
        self.known_by = ("model name" if is_reasoning_model(model)
                         else "the reasoning budget set" if reasoning_budget else "")
        self._on_detect = on_detect  # called once with a line saying how the model was found to think

    def thinking_tokens(self) -> int:
        """Tokens allowed for thinking on top of an answer cap."""
        if self.reasoning_budget is not None:
            return self.reasoning_budget
        return DEFAULT_REASONING_BUDGET if self.reasoning else 0

    def room(self, prompt_chars: int) -> int | None:
        """Tokens the context leaves for the output after this prompt (None: context unknown)."""
        if self.context_len is None:
            return None
        return self.context_len - -(-prompt_chars // CHARS_PER_TOKEN) - CONTEXT_MARGIN

    def cap(self, answer_tokens: int, prompt_chars: int) -> int:
        """The `max_tokens` to send for an answer of `answer_tokens` after this prompt."""
        want = answer_tokens + self.thinking_tokens()
        room = self.room(prompt_chars)
        if room is None:
            return want
        return max(min(want, room), min(want, MIN_CAP))

    def larger(self, cap: int, prompt_chars: int) -> int | None:
        """Twice `cap`, bounded by the context; None when the context leaves nothing larger."""
        room = self.room(prompt_chars)
        bigger = 2 * cap if room is None else min(2 * cap, room)
        return bigger if bigger > cap else None

    def observe(self, reply: LLMReply) -> None:
        """Learn from an answer: thinking in it means the model reasons (later calls get budgets)."""
        if not reply.reasoning:
            return
        with self._lock:
            if self.reasoning:
                return
            self.reasoning = True
            self.known_by = f"its answer ({reply.extra.get('reasoning_delivery', 'thinking')})"
        reply.extra["reasoning_detected"] = True
        if self._on_detect is not None:
            self._on_detect(f"the model thinks (found in {self.known_by}): later calls get a reasoning "
                            f"budget of {self.thinking_tokens()} tokens on top of their answer caps")


def token_budget(model: Any) -> TokenBudget | None:
    """The budget a chat client carries (clients from `make_chat_model`); None for others."""
    budget = getattr(model, "token_budget", None)
    return budget if isinstance(budget, TokenBudget) else None


def prompt_chars(messages: Sequence[BaseMessage]) -> int:
    """Characters of the messages' content (the prompt estimate's input)."""
    return sum(len(m.content) if isinstance(m.content, str) else len(str(m.content)) for m in messages)


def larger_cap(model: Any, cap: int | None, messages: Sequence[BaseMessage]) -> int | None:
    """The cap to ask again with after an answer cut at `cap`: twice it, bounded by the context;
    None when no larger cap fits (or `cap` is unknown)."""
    if not cap:
        return None
    budget = token_budget(model)
    return budget.larger(cap, prompt_chars(messages)) if budget is not None else 2 * cap


class ReasoningChatOpenAI(ChatOpenAI):
    """ChatOpenAI for self-hosted servers: keeps the separate reasoning field vLLM's reasoning
    parser returns, and sends the generation cap as `max_tokens`.

    ChatOpenAI sends `max_completion_tokens`, which llama-cpp-python's server ignores (measured:
    an "n=2, max 900 tokens" request ran to 5,920 tokens); vLLM and llama.cpp both honour
    `max_tokens`.

    `token_budget` holds the client's caps and whether its model thinks (`complete` reads it).
    """

    token_budget: Any = Field(default=None, exclude=True)

    def _get_request_payload(self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any) -> dict:
        payload = super()._get_request_payload(input_, stop=stop, **kwargs)
        if "max_completion_tokens" in payload:
            payload["max_tokens"] = payload.pop("max_completion_tokens")
        return payload

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        try:
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
        except openai.LengthFinishReasonError as exc:
            # With `response_format` ChatOpenAI takes the SDK's parse path, which raises on an
            # answer cut at the cap instead of returning it: it is an answer (finish_reason
            # "length"), and the caller decides what a cut answer is worth.
            return self._create_chat_result(exc.completion)

    def _create_chat_result(
        self, response: Any, generation_info: dict | None = None
    ) -> ChatResult:
        if not isinstance(response, dict | openai.BaseModel):  # the SDK hands back a non-JSON body as text
            raise MalformedResponse(f"malformed response: not JSON ({_preview(str(response))})")
        raw = response if isinstance(response, dict) else response.model_dump(warnings=False)
        if not raw.get("error"):  # an error object is reported by ChatOpenAI itself
            if "choices" not in raw:
                raise MalformedResponse(f"malformed response: no 'choices' field (keys: {sorted(raw)[:8]})")
            if not raw["choices"]:
                raise NoChoices("no choices in the response")
        result = super()._create_chat_result(response, generation_info)
        for gen, choice in zip(result.generations, raw.get("choices") or [], strict=False):
            message = choice.get("message") or {}
            reasoning = message.get("reasoning_content") or message.get("reasoning")
            if reasoning:
                gen.message.additional_kwargs["reasoning_content"] = reasoning
                gen.message.additional_kwargs["reasoning_field"] = (
                    "reasoning_content" if message.get("reasoning_content") else "reasoning")
            usage = raw.get("usage") or {}
            gen.message.response_metadata.setdefault("raw_usage", usage)
        return result


class _Attempts:
    """Requests sent for the call in flight (one per SDK attempt)."""

    def __init__(self) -> None:
        self.count = 0


_CALL: ContextVar[_Attempts | None] = ContextVar("its_mle_llm_call", default=None)


class _CappedStream(sdk_httpx.SyncByteStream):
    """A response body that raises `ResponseTooLarge` once it passes `limit` bytes."""

    def __init__(self, inner: Any, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    def __iter__(self) -> Any:
        seen = 0
        for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseTooLarge(f"response too large: over {_size(self._limit)}, not read further")
            yield chunk

    def close(self) -> None:
        self._inner.close()


class _GuardedHttpClient(openai.DefaultHttpxClient):
    """The SDK's default HTTP client (env proxies kept), counting each call's attempts and
    refusing response bodies over `limit` bytes before they fill memory."""

    def __init__(self, limit: int) -> None:
        def on_request(_request: Any) -> None:
            attempts = _CALL.get()
            if attempts is not None:
                attempts.count += 1

        def on_response(response: Any) -> None:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                response.close()
                raise ResponseTooLarge(f"response too large: {_size(int(declared))} announced, "
                                       f"the limit is {_size(limit)}")
            response.stream = _CappedStream(response.stream, limit)

        super().__init__(event_hooks={"request": [on_request], "response": [on_response]})

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass


def make_chat_model(settings: LLMSettings, *, on_detect: Any = None) -> BaseChatModel:
    """Build a chat client with timeouts and bounded retries (backoff, Retry-After honoured).

    Its `token_budget` sets every call's cap; `on_detect(line)` is called once if the model turns
    out to think without its name saying so."""
    s = settings.resolved()
    budget = TokenBudget(model=s.model, reasoning_budget=s.reasoning_budget, context_len=s.context_len,
                         on_detect=on_detect)
    return ReasoningChatOpenAI(
        base_url=s.base_url,
        model=s.model,
        api_key=s.api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
        timeout=s.timeout_s,
        max_retries=s.max_retries,
        http_client=_GuardedHttpClient(s.max_response_bytes),
        token_budget=budget,
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
    max_tokens: int | None = None  # the generation cap the request sent (None: the client's default)
    attempts: int = 1  # requests sent for it (more than 1: retried after a fault)
    oversized_chars: int = 0  # the answer's length when it was cut to MAX_ANSWER_CHARS, else 0
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
        "reported_reasoning_tokens": int(
            out_details.get("reasoning")
            or (raw.get("completion_tokens_details") or {}).get("reasoning_tokens")
            or 0
        ),
    }


def reply_from_message(message: AIMessage, seconds: float, *, thinks: bool = False) -> LLMReply:
    """Turn a chat answer into an `LLMReply`, separating reasoning from the answer.

    `thinks`: the model is known to reason. Then an answer cut at the cap with no think tag and
    no reasoning field is a thought cut short (the R1 template opened `<think>` in the prompt): it
    becomes the reasoning and the answer is empty, so no thinking is ever read as code or JSON.
    An answer or reasoning longer than `MAX_ANSWER_CHARS` is cut to it; a cut answer is flagged
    with its full length in `oversized_chars`.
    """
    content = message.content if isinstance(message.content, str) else str(message.content or "")
    finish_reason = (message.response_metadata or {}).get("finish_reason")
    field_reasoning = message.additional_kwargs.get("reasoning_content") or ""
    answer, inline_reasoning = split_reasoning(content)
    delivery = ""
    if field_reasoning:
        delivery = f"the '{message.additional_kwargs.get('reasoning_field', 'reasoning')}' field"
    elif inline_reasoning:
        delivery = "<think> tags" if "<think>" in content else "a closing </think> tag"
    elif thinks and finish_reason == "length" and "</think>" not in content and content.strip():
        answer, inline_reasoning = "", content.strip()
        delivery = "an unclosed thought cut at the cap"
    reasoning = field_reasoning or inline_reasoning
    nums = _usage_numbers(message)
    reasoning_tokens = nums["reported_reasoning_tokens"]
    if not reasoning_tokens and reasoning and nums["completion_tokens"]:
        # Servers rarely report reasoning tokens: apportion completion tokens by characters.
        share = len(reasoning) / max(1, len(reasoning) + len(answer))
        reasoning_tokens = round(nums["completion_tokens"] * share)
    oversized = len(answer) if len(answer) > MAX_ANSWER_CHARS else 0
    if oversized:
        answer = answer[:MAX_ANSWER_CHARS]
    if len(reasoning) > MAX_ANSWER_CHARS:
        cut = f"\n[... reasoning cut: {len(reasoning):,} characters in all]"
        reasoning = reasoning[:MAX_ANSWER_CHARS] + cut
    return LLMReply(
        text=answer,
        reasoning=reasoning,
        oversized_chars=oversized,
        prompt_tokens=nums["prompt_tokens"],
        completion_tokens=nums["completion_tokens"],
        reasoning_tokens=reasoning_tokens,
        cached_tokens=nums["cached_tokens"],
        seconds=seconds,
        finish_reason=finish_reason,
        extra={"reasoning_delivery": delivery} if delivery else {},
    )


def _with_cap(model: BaseChatModel, messages: Sequence[BaseMessage], answer_tokens: int | None,
              kwargs: dict[str, Any]) -> TokenBudget | None:
    """Put the call's `max_tokens` in `kwargs` (an explicit one is sent as it is)."""
    budget = token_budget(model)
    if "max_tokens" in kwargs:
        return budget
    if budget is not None:
        answer = answer_tokens or getattr(model, "max_tokens", None) or LLMSettings.max_tokens
        kwargs["max_tokens"] = budget.cap(int(answer), prompt_chars(messages))
    elif answer_tokens is not None:
        kwargs["max_tokens"] = answer_tokens
    return budget


def complete(
    model: BaseChatModel, messages: Sequence[BaseMessage], *, answer_tokens: int | None = None,
    **bind_kwargs: Any,
) -> LLMReply:
    """Ask once (the client retries transport errors itself) and measure the call.

    `answer_tokens`: the answer's cap (default: the client's `max_tokens`); a client from
    `make_chat_model` adds its reasoning budget and bounds it by the context. A `max_tokens`
    keyword is sent as it is. Raises LLMCallError with a one-line reason when the call fails for good.
    """
    budget = _with_cap(model, messages, answer_tokens, bind_kwargs)
    runnable = model.bind(**bind_kwargs) if bind_kwargs else model
    attempts = _Attempts()
    token = _CALL.set(attempts)
    start = time.monotonic()
    try:
        message = runnable.invoke(list(messages))
    except Exception as exc:  # noqa: BLE001 - any client failure is recorded, not raised
        raise call_error(exc, attempts.count, _timeout_of(model), time.monotonic() - start) from exc
    finally:
        _CALL.reset(token)
    seconds = time.monotonic() - start
    if not isinstance(message, AIMessage):
        raise LLMCallError(f"unexpected reply type {type(message).__name__}")
    reply = reply_from_message(message, seconds, thinks=budget is not None and budget.reasoning)
    reply.attempts = max(1, attempts.count)
    reply.max_tokens = bind_kwargs.get("max_tokens")
    if budget is not None:
        budget.observe(reply)
    return reply


def complete_choices(
    model: BaseChatModel, messages: Sequence[BaseMessage], n: int, *, answer_tokens: int | None = None,
    **call_kwargs: Any,
) -> list[LLMReply]:
    """Ask for `n` samples in one request (OpenAI `n`; vLLM computes the prompt once).

    Servers that ignore `n` return fewer choices: the caller sees how many came back. The
    response's usage covers all choices, so it is put on the first reply only (never counted
    n times); the others carry their text with zero tokens. Caps as in `complete`. Raises
    LLMCallError on failure.
    """
    budget = _with_cap(model, messages, answer_tokens, call_kwargs)
    attempts = _Attempts()
    token = _CALL.set(attempts)
    start = time.monotonic()
    try:
        result = model.generate([list(messages)], n=n, **call_kwargs)
    except Exception as exc:  # noqa: BLE001 - any client failure is recorded, not raised
        raise call_error(exc, attempts.count, _timeout_of(model), time.monotonic() - start) from exc
    finally:
        _CALL.reset(token)
    seconds = time.monotonic() - start
    replies = []
    for i, gen in enumerate(result.generations[0] if result.generations else []):
        message = getattr(gen, "message", None)
        if not isinstance(message, AIMessage):
            raise LLMCallError(f"unexpected reply type {type(message).__name__}")
        reply = reply_from_message(message, seconds if i == 0 else 0.0,
                                   thinks=budget is not None and budget.reasoning)
        reply.attempts = max(1, attempts.count)
        reply.max_tokens = call_kwargs.get("max_tokens")
        if budget is not None:
            budget.observe(reply)
        if i > 0:
            reply.prompt_tokens = reply.completion_tokens = reply.cached_tokens = 0
            reply.reasoning_tokens = 0
        replies.append(reply)
    if not replies:
        raise LLMCallError("no choices in the response", kind="no_choices", attempts=attempts.count,
                           seconds=seconds)
    return replies


def call_error(exc: BaseException, attempts: int, timeout_s: float | None, seconds: float) -> LLMCallError:
    """The `LLMCallError` for a call that raised `exc` after `attempts` requests, with a clear reason."""
    after = f" after {attempts} attempt{'' if attempts == 1 else 's'}" if attempts else ""
    common: dict[str, Any] = {"attempts": attempts, "seconds": seconds}
    if isinstance(exc, openai.APIStatusError):
        retry_after = exc.response.headers.get("retry-after")
        wait = f" (Retry-After {retry_after} s)" if retry_after else ""
        return LLMCallError(f"HTTP {exc.status_code}{after}{wait}: {_server_message(exc)}",
                            kind="http", status=exc.status_code, **common)
    if isinstance(exc, openai.APITimeoutError):
        within = f"{timeout_s:g} s" if timeout_s else "the client timeout"
        return LLMCallError(f"timeout (no answer within {within}){after}", kind="timeout", **common)
    if isinstance(exc, openai.APIConnectionError):
        cause: BaseException = exc
        while isinstance(cause, openai.APIConnectionError) and cause.__cause__ is not None:
            cause = cause.__cause__  # ChatOpenAI's and the SDK's wrappers around the httpx error
        return LLMCallError(f"connection error{after}: {_one_line(cause)}", kind="connection", **common)
    if isinstance(exc, json.JSONDecodeError):
        return LLMCallError(f"malformed JSON response: {exc}", kind="malformed", **common)
    if isinstance(exc, MalformedResponse):
        return LLMCallError(str(exc), kind="malformed", **common)
    if isinstance(exc, NoChoices):
        return LLMCallError(str(exc), kind="no_choices", **common)
    if isinstance(exc, ResponseTooLarge):
        return LLMCallError(str(exc), kind="too_large", **common)
    return LLMCallError(_one_line(exc), **common)


def _server_message(exc: Any) -> str:
    body = exc.body if isinstance(getattr(exc, "body", None), dict) else {}
    error = body.get("error", body)
    message = error.get("message") if isinstance(error, dict) else None
    return _preview(str(message or exc.message or "no message"))


def _timeout_of(model: BaseChatModel) -> float | None:
    timeout = getattr(model, "request_timeout", None)
    return float(timeout) if isinstance(timeout, int | float) else None


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n:,} bytes"


def _preview(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]


def list_endpoint_models(base_url: str, api_key: str | None = None, timeout_s: float = 10) -> list[str]:
    """Model ids the endpoint serves; EndpointError when it cannot be reached."""
    return [str(m["id"]) for m in endpoint_model_entries(base_url, api_key, timeout_s) if "id" in m]


def endpoint_context_length(base_url: str, model: str, api_key: str | None = None,
                            timeout_s: float = 10) -> int | None:
    """The context length the endpoint reports for `model` (vLLM's `max_model_len` in
    `/v1/models`); None when it reports none (llama.cpp) or cannot be asked."""
    try:
        entries = endpoint_model_entries(base_url, api_key, timeout_s)
    except EndpointError:
        return None
    match = [m for m in entries if str(m.get("id")) == model] or (entries if len(entries) == 1 else [])
    value = match[0].get("max_model_len") if match else None
    return value if isinstance(value, int) and value > 0 else None


def endpoint_model_entries(base_url: str, api_key: str | None = None, timeout_s: float = 10) -> list[dict]:
    """The endpoint's `/v1/models` entries; EndpointError when it cannot be reached."""
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
        if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
            raise TypeError("'data' is not a list of objects")
        return data
    except (ValueError, AttributeError, TypeError) as exc:
        raise EndpointError(f"LLM endpoint {base_url} returned a malformed model list") from exc
