"""Reflect operator: a critique of a script and its run, and where the feedback should go."""

from __future__ import annotations

from typing import Literal

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

import prompts
from nodes.execute import Execution
from nodes.structured import StructuredOutputSupport, ask_json
from nodes.usage import Usage

ANSWER_TOKENS = 600  # the reflection's answer cap; a model that thinks gets its reasoning budget on top


class Reflection(BaseModel):
    """The reflector's judgement: accept the script, or what must change and who should change it."""

    accept: bool
    critique: str
    target: Literal["coder", "planner"] = "coder"


def reflect(
    llm: BaseChatModel,
    system: str,
    code: str,
    execution: Execution,
    support: StructuredOutputSupport,
    *,
    plan: str = "",
    with_planner: bool = False,
    system_prompt: bool = True,
    max_tokens: int = ANSWER_TOKENS,
) -> tuple[Reflection, Usage, str | None]:
    """Ask for a reflection. Facts win: a failed run is never accepted, and when the model
    gives no usable answer (cut at its cap, not JSON, a failed call) a fallback decides: a valid
    run is accepted, a failed one gets its failure as the critique; the error returned then
    starts with "reflector fallback" and says which."""
    text = prompts.render("reflect", code=code.rstrip(), feedback=execution.feedback(), plan=plan,
                          with_planner=with_planner)
    answer, usage, error = ask_json(llm, system, text, Reflection, support, name="reflection",
                                    role="reflector", system_prompt=system_prompt, max_tokens=max_tokens)
    if answer is None:
        answer = Reflection(accept=execution.valid,
                            critique=execution.failure or "no critique: keep the working script")
        decided = "the run is valid, accepted" if execution.valid else "the run's failure is the critique"
        error = f"reflector fallback ({decided}): {error or 'no usable answer'}"
    if not execution.valid and answer.accept:
        answer = answer.model_copy(update={"accept": False})
    if not with_planner and answer.target != "coder":
        answer = answer.model_copy(update={"target": "coder"})
    return answer, usage, error
