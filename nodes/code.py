"""Code operators: implement a given plan, or revise a script following a critique."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

import prompts
from nodes.execute import Execution
from nodes.operators import Candidate, ask_for_script


def implement_plan(
    llm: BaseChatModel,
    system: str,
    request: str,
    plan_text: str,
    *,
    previous: Candidate | None = None,
    execution: Execution | None = None,
    critique: str = "",
    system_prompt: bool = True,
) -> Candidate:
    """A script implementing `plan_text`; with `previous`, a fix of that implementation."""
    text = prompts.render(
        "code_plan", request=request.strip(), plan=plan_text,
        code=previous.code.rstrip() if previous else "",
        feedback=execution.feedback() if execution else "", critique=critique,
    )
    return ask_for_script(llm, system, text, system_prompt=system_prompt, role="coder")


def revise(
    llm: BaseChatModel,
    system: str,
    request: str,
    previous: Candidate,
    execution: Execution,
    critique: str,
    *,
    system_prompt: bool = True,
) -> Candidate:
    """A complete revised script that acts on the critique of `previous` and its run."""
    text = prompts.render("revise", request=request.strip(), code=previous.code.rstrip(),
                          feedback=execution.feedback(), critique=critique)
    return ask_for_script(llm, system, text, system_prompt=system_prompt, role="coder")
