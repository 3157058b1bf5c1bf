"""Debug operator: fix a failing script, told which errors were already tried on its branch."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

import prompts
from nodes.candidate import Candidate, ask_for_script
from nodes.tree import Node


def tail(text: str, chars: int) -> str:
    """The end of a long output (where the error is), marked as cut."""
    text = text.strip()
    return "..." + text[-chars:] if len(text) > chars else text


def debug_prompt(parent: Node, earlier_errors: list[str], *, output_chars: int = 6000) -> str:
    """The request for a fixed version of the buggy `parent`."""
    return prompts.render(
        "debug",
        code=parent.code.rstrip(),
        failure=parent.bug_reason or "the run failed",
        output=tail(parent.output, output_chars) or "(no output)",
        earlier_errors=earlier_errors,
    )


def debug(
    llm: BaseChatModel,
    system: str,
    parent: Node,
    earlier_errors: list[str],
    *,
    output_chars: int = 6000,
    system_prompt: bool = True,
) -> Candidate:
    """Ask for a fixed version of the buggy `parent`."""
    text = debug_prompt(parent, earlier_errors, output_chars=output_chars)
    return ask_for_script(llm, system, text, system_prompt=system_prompt)
