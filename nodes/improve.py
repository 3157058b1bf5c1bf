"""Improve operator: one atomic change to a working solution."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

import prompts
from nodes.candidate import Candidate, ask_for_script
from nodes.tree import Node


def improve_prompt(parent: Node, memory: list[str], *, lower_is_better: bool) -> str:
    """The request for an improved version of `parent`'s script.

    The parent's code and review come before `memory` (which changes every step), so repeated
    improves of one node share a cached prompt prefix up to the memory."""
    return prompts.render(
        "improve",
        code=parent.code.rstrip(),
        metric=f"{parent.metric:.6g}" if parent.metric is not None else "n/a",
        direction="lower is better" if lower_is_better else "higher is better",
        analysis=parent.review.strip(),
        flag=parent.self_report_flag,
        memory=memory,
    )


def improve(
    llm: BaseChatModel,
    system: str,
    parent: Node,
    memory: list[str],
    *,
    lower_is_better: bool,
    system_prompt: bool = True,
) -> Candidate:
    """Ask for an improved version of `parent`'s script."""
    text = improve_prompt(parent, memory, lower_is_better=lower_is_better)
    return ask_for_script(llm, system, text, system_prompt=system_prompt)
