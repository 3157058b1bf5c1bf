"""Plan operator: a structured plan a coder implements (planner -> coder decomposition)."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, Field

import prompts
from nodes.structured import StructuredOutputSupport, ask_json
from nodes.usage import Usage

ANSWER_TOKENS = 1000  # the plan's answer cap; a model that thinks gets its reasoning budget on top


class Plan(BaseModel):
    """What the planner fixes before any code is written."""

    approach: str
    libraries: list[str] = Field(default_factory=list)
    feature_steps: list[str] = Field(default_factory=list)
    validation_scheme: str = ""

    def render(self) -> str:
        """The plan as text for the coder's and reflector's prompts."""
        lines = [f"Approach: {self.approach}"]
        if self.libraries:
            lines.append("Libraries: " + ", ".join(self.libraries))
        if self.feature_steps:
            lines.append("Steps:")
            lines += [f"{i}. {s}" for i, s in enumerate(self.feature_steps, 1)]
        if self.validation_scheme:
            lines.append(f"Validation: {self.validation_scheme}")
        return "\n".join(lines)


def make_plan(
    llm: BaseChatModel,
    system: str,
    request: str,
    support: StructuredOutputSupport,
    *,
    previous: Plan | None = None,
    critique: str = "",
    system_prompt: bool = True,
    max_tokens: int = ANSWER_TOKENS,
) -> tuple[Plan | None, Usage, str | None]:
    """Ask the planner for a plan (or a changed one, given why the previous plan failed); None
    with the error line when the answer is unusable (cut at its cap, not JSON, a failed call)."""
    text = prompts.render("plan", request=request.strip(),
                          previous_plan=previous.render() if previous else "", critique=critique)
    return ask_json(llm, system, text, Plan, support, name="plan", role="planner",
                    system_prompt=system_prompt, max_tokens=max_tokens)
