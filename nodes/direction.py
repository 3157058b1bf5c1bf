"""Ask once, at the start of a run on an ungraded folder, which way the metric goes."""

from __future__ import annotations

from pathlib import Path

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, ValidationError

import prompts
from nodes.structured import JSON_OBJECT_RE, complete_capped
from nodes.task_context import build_task_context
from nodes.usage import Usage
from serving.llm import LLMCallError, build_messages

ANSWER_TOKENS = 200  # the answer's cap; a model that thinks gets its reasoning budget on top


class MetricDirection(BaseModel):
    """The task's metric and whether lower values are better."""

    metric: str
    lower_is_better: bool


DIRECTION_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "metric_direction",
        "strict": True,
        "schema": MetricDirection.model_json_schema(),
    },
}


def ask_metric_direction(
    llm: BaseChatModel, system: str, *, system_prompt: bool = True
) -> tuple[MetricDirection | None, Usage]:
    """The model's reading of the metric direction; None when it gives no usable answer.

    Asked with JSON schema, then in plain text; only the answer (thinking split off) is read, and
    an answer cut at its cap is asked again once with a larger cap (`complete_capped`)."""
    messages = build_messages(system, prompts.render("direction"), system_prompt=system_prompt)
    usage = Usage()
    # a verdict is short: cap it, since grammar-constrained decoding is slow on CPU servers
    for kwargs in ({"response_format": DIRECTION_FORMAT}, {}):
        try:
            reply = complete_capped(llm, messages, usage, "direction", answer_tokens=ANSWER_TOKENS, **kwargs)
        except LLMCallError as exc:
            usage.add_error("direction", exc)
            continue
        if reply.finish_reason == "length":  # cut for good: recorded as cut on `usage`
            continue
        for text in (reply.text, *(m.group(0) for m in JSON_OBJECT_RE.finditer(reply.text))):
            try:
                return MetricDirection.model_validate_json(text), usage
            except ValidationError:
                continue
    return None, usage


def decide_direction(
    llm: BaseChatModel, description: str, public_dir: Path, *, time_limit_s: float, metric_name: str | None,
    sample_submission: Path | None, system_prompt: bool,
) -> tuple[bool | None, str | None]:
    """Ask from the task's own prompt which way its metric goes: (lower_is_better or None, metric)."""
    probe = build_task_context(description, public_dir, time_limit_s=time_limit_s, metric_name=metric_name,
                               lower_is_better=None, sample_submission=sample_submission)
    answer, _ = ask_metric_direction(llm, probe.system_prompt(), system_prompt=system_prompt)
    if answer is None:
        return None, metric_name
    return answer.lower_is_better, metric_name or answer.metric
