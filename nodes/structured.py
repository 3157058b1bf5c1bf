"""Ask for a JSON object matching a pydantic model, without tool calling.

The first call uses `response_format: json_schema` (vLLM, llama.cpp); when the server refuses it
the run remembers that and asks for plain JSON from then on. Answers wrapped in prose or fences,
or written with Python-style booleans, are still read.
"""

from __future__ import annotations

import json
import re
from typing import TypeVar

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, ValidationError

from nodes.usage import Usage
from serving.llm import LLMCallError, build_messages, complete

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
    """One structured answer: (object or None, usage, one-line error or None). Never raises."""
    messages = build_messages(system, text, system_prompt=system_prompt)
    usage = Usage()
    reply = None
    error = None
    if support.supported is not False:
        try:
            reply = complete(llm, messages, response_format=response_format(model, name),
                             max_tokens=max_tokens)
            support.supported = True
        except LLMCallError as exc:
            error = str(exc)
            usage.add_error(role, exc)
            # a refusal of the first structured call: plain JSON from now on; a timeout, a dropped
            # connection or an overloaded server says nothing about support (asked again next time)
            if support.supported is None and not exc.transient:
                support.supported = False
    if reply is None and support.supported is False:
        try:
            reply = complete(llm, messages, max_tokens=max_tokens)
            error = None
        except LLMCallError as exc:
            error = str(exc)
            usage.add_error(role, exc)
    if reply is None:  # every call made is on `usage` with its reason
        return None, usage, error
    usage.add_reply(reply, role)
    if reply.oversized_chars:
        return None, usage, f"the {name} answer was oversized ({reply.oversized_chars:,} characters)"
    obj = parse_json_answer(reply.text, model)
    if obj is None:
        return None, usage, f"the {name} answer was not the requested JSON"
    return obj, usage, None
