"""Debug operator: fix a failing script, told which errors were already tried on its branch."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

import prompts
from nodes.candidate import Candidate, ask_for_script
from nodes.tree import Node


def last_error_line(node: Node) -> str:
    """The most telling line of a failure: the exception line, else the recorded reason."""
    for line in reversed(node.output.strip().splitlines()):
        line = line.strip()
        if line and ("Error" in line or "Exception" in line) and not line.startswith("File "):
            return line[:300]
    return (node.bug_reason or "unknown failure")[:300]


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
    output = parent.output.strip()
    if len(output) > output_chars:
        output = "..." + output[-output_chars:]
    text = prompts.render(
        "debug",
        code=parent.code.rstrip(),
        failure=parent.bug_reason or "the run failed",
        output=output or "(no output)",
        earlier_errors=earlier_errors,
    )
    return ask_for_script(llm, system, text, system_prompt=system_prompt)
