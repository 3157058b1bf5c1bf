"""Debug operator: fix a failing script, told which errors were already tried on its branch and,
when the error is a known one (prompts/known_errors.yaml), its usual remedy."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

import prompts
from nodes.candidate import Candidate, ask_for_script
from nodes.import_hints import missing_imports
from nodes.repair import known_remedy
from nodes.tree import Node


def tail(text: str, chars: int) -> str:
    """The end of a long output (where the error is), marked as cut."""
    text = text.strip()
    return "..." + text[-chars:] if len(text) > chars else text


def debug_prompt(
    parent: Node, earlier_errors: list[str], *, output_chars: int = 6000, known_errors: bool = True
) -> str:
    """The request for a fixed version of the buggy `parent` (with the known remedy of its
    error unless `known_errors` is off: matched on the failure line first, then the output's end)."""
    output = tail(parent.output, output_chars)
    remedy = known_remedy(parent.bug_reason, tail(parent.output, 2000)) if known_errors else None
    imports = missing_imports(parent.bug_reason, tail(parent.output, 2000)) if known_errors else []
    return prompts.render(
        "debug",
        code=parent.code.rstrip(),
        failure=parent.bug_reason or "the run failed",
        output=output or "(no output)",
        earlier_errors=earlier_errors,
        remedy=remedy,
        imports=imports,
    )


def debug(
    llm: BaseChatModel,
    system: str,
    parent: Node,
    earlier_errors: list[str],
    *,
    output_chars: int = 6000,
    system_prompt: bool = True,
    known_errors: bool = True,
) -> Candidate:
    """Ask for a fixed version of the buggy `parent`."""
    text = debug_prompt(parent, earlier_errors, output_chars=output_chars, known_errors=known_errors)
    return ask_for_script(llm, system, text, system_prompt=system_prompt)
