"""Draft operator: a fresh solution from the task alone."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

import prompts
from nodes.candidate import Candidate, ask_for_script


def draft_prompt(memory: list[str]) -> str:
    """The request for a new solution; `memory` lists one-line summaries of earlier attempts
    (`Tree.branch_memory(None)`: earlier drafts and the run's best nodes). The reply format is
    added by `ask_for_script`."""
    return prompts.render("draft", memory=memory)


def draft(
    llm: BaseChatModel, system: str, memory: list[str], *, system_prompt: bool = True
) -> Candidate:
    """Ask for a new solution."""
    return ask_for_script(llm, system, draft_prompt(memory), system_prompt=system_prompt)
