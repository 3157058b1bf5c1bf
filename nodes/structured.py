"""Ask for a JSON object matching a pydantic model, without tool calling.

The first call uses `response_format: json_schema` (vLLM, llama.cpp); when the server refuses it
the run remembers that and asks for plain JSON from then on. Answers wrapped in prose or fences,
or written with Python-style booleans, are still read.

Caps: `max_tokens` is the role's *answer* cap; the chat client adds its reasoning budget when
the model thinks and bounds the cap by the context (`serving.llm.TokenBudget`). Only the answer
(`LLMReply.text`, thinking split off) is parsed. An answer cut at its cap (finish_reason
"length") is asked again once with twice the cap, bounded by the context; still cut, it is
recorded as cut (`LLMCall.cut`) and the role gets an error saying so, never a half-read answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from pydantic import BaseModel, ValidationError

from nodes.usage import Usage
from serving.llm import LLMCallError, LLMReply, build_messages, complete, larger_cap

JSON_OBJECT_RE = re.compile(r"\{.*\}", re.DOTALL)
M = TypeVar("M", bound=BaseModel)


class StructuredOutputSupport:
    """Remembers, per run, whether the server accepted JSON-schema response formats."""

    def __init__(self) -> None:
        self.supported: bool | None = None


def response_format(model: type[BaseModel], name: str) -> dict:
    """The OpenAI `response_format` asking for `model`'s JSON schema."""
    return {"type": "json_schema",
            "json_schema": {"name": name, "strict": True, "schema": model.model_json_schema()}}


def parse_json_answer(text: str, model: type[M]) -> M | None:
    """`model` from a JSON answer, tolerating prose or fences around the object."""
    for candidate in (text, *(m.group(0) for m in JSON_OBJECT_RE.finditer(text))):
        try:
            return model.model_validate_json(candidate.strip())
        except ValidationError:
            continue
    match = JSON_OBJECT_RE.search(text)
    if match is None:
        return None
    try:  # a model that wrote Python-style literals
        raw = match.group(0).replace("True", "true").replace("False", "false").replace("None", "null")
        return model.model_validate(json.loads(raw))
    except (ValueError, ValidationError):
        return None


def complete_capped(
    llm: BaseChatModel, messages: Sequence[BaseMessage], usage: Usage, role: str, *, answer_tokens: int,
    **kwargs: Any,
) -> LLMReply:
    """One answer of a role with a small answer cap, asked again once when it is cut at the cap.

    Every reply is recorded on `usage` (a cut one as retried, or as cut when no retry fixed it);
    the answer returned is the last one. Raises LLMCallError (not recorded) when the first call
    fails; a failed retry is recorded and the cut first answer is returned.
    """
    reply = complete(llm, messages, answer_tokens=answer_tokens, **kwargs)
    if reply.finish_reason != "length":
        usage.add_reply(reply, role)
        return reply
    bigger = larger_cap(llm, reply.max_tokens, messages)
    if bigger is None:  # the context leaves no room for more
        usage.add_reply(reply, role)
        return reply
    try:
        again = complete(llm, messages, max_tokens=bigger, **kwargs)
    except LLMCallError as exc:
        usage.add_reply(reply, role)
        usage.add_error(role, exc)
        reply.extra["retry_error"] = str(exc)
        return reply
    usage.add_reply(reply, role, retried=True)
    usage.add_reply(again, role)
    again.extra["retried_cut"] = reply.max_tokens
    return again


def context_exceeded(exc: LLMCallError) -> bool:
    """The server refused the request as too long for its context (vLLM's HTTP 400)."""
    return exc.status == 400 and "context length" in str(exc)


def cut_error(name: str, reply: LLMReply) -> str:
    """The error line of an answer that stayed cut at its cap."""
    cap = f"{reply.max_tokens} tokens" if reply.max_tokens else "the token limit"
    thought = " while still thinking" if reply.reasoning and not reply.text.strip() else ""
    if reply.extra.get("retried_cut"):
        retry = f", after a first answer cut at {reply.extra['retried_cut']}"
    elif reply.extra.get("retry_error"):
        retry = f"; the retry with a larger cap failed: {reply.extra['retry_error']}"
    else:
        retry = "; the context leaves no room for a larger cap"
    return f"the {name} answer was cut at the token cap ({cap}{thought}{retry})"


def ask_json(
    llm: BaseChatModel,
    system: str,
    text: str,
    model: type[M],
    support: StructuredOutputSupport,
    *,
    name: str,
    role: str = "reviewer",
    system_prompt: bool = True,
    max_tokens: int = 600,
) -> tuple[M | None, Usage, str | None]:
    """One structured answer: (object or None, usage, one-line error or None). Never raises.

    `max_tokens` is the answer cap (see the module docstring)."""
    messages = build_messages(system, text, system_prompt=system_prompt)
    usage = Usage()
    reply = None
    error = None
    if support.supported is not False:
        try:
            reply = complete_capped(llm, messages, usage, role, answer_tokens=max_tokens,
                                    response_format=response_format(model, name))
            support.supported = True
        except LLMCallError as exc:
            error = str(exc)
            usage.add_error(role, exc)
            # a refusal of the first structured call: plain JSON from now on; a timeout, a dropped
            # connection, an overloaded server or a prompt too long for the context says nothing
            # about support (asked again next time)
            if support.supported is None and not exc.transient and not context_exceeded(exc):
                support.supported = False
    if reply is None and support.supported is False:
        try:
            reply = complete_capped(llm, messages, usage, role, answer_tokens=max_tokens)
            error = None
        except LLMCallError as exc:
            error = str(exc)
            usage.add_error(role, exc)
    if reply is None:  # every call made is on `usage` with its reason
        return None, usage, error
    if reply.finish_reason == "length":
        return None, usage, cut_error(name, reply)
    if reply.oversized_chars:
        return None, usage, f"the {name} answer was oversized ({reply.oversized_chars:,} characters)"
    obj = parse_json_answer(reply.text, model)
    if obj is None:
        return None, usage, f"the {name} answer was not the requested JSON"
    return obj, usage, None
