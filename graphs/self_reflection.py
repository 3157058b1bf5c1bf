"""Self-reflection: coder -> executor -> reflector, refining one script from execution feedback.

    START -> start -> code -> execute -> reflect --(revise)--> code
                                               `--(stop)----> finish -> END

The reflector reads the script, the facts of its run and its output, and writes a critique the
coder acts on. Stopping rules and the returned script: see `graphs.refine`.
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command

from graphs import refine
from graphs.refine import RefineState
from graphs.strategy import StrategyContext, StrategyInput, StrategyOutput, emit, services_of
from nodes.code import revise
from nodes.execute import Execution
from nodes.operators import Candidate, ask_for_script
from nodes.reflect import Reflection


def start(state: RefineState) -> dict:
    """Begin a new loop."""
    return refine.start_state(state)


def code(state: RefineState, runtime: Runtime[StrategyContext]) -> dict:
    """Round 1 answers the request; later rounds revise the script after the critique."""
    svc = services_of(runtime)
    r = state.get("round", 0)
    emit(runtime, kind="strategy", stage="coding", round=r + 1, rounds=runtime.context.rounds)
    if state.get("candidate") is None:
        cand = ask_for_script(
            svc.coder, svc.system_text, state["resolved_request"], system_prompt=svc.coder_system_prompt
        )
    else:
        cand = revise(
            svc.coder,
            svc.system_text,
            state["resolved_request"],
            Candidate.model_validate(state["candidate"]),
            Execution.model_validate(state["execution"]),
            Reflection.model_validate(state["reflection"]).critique,
            system_prompt=svc.coder_system_prompt,
        )
    revising = state.get("candidate") is not None
    return {"candidate": cand.model_dump(), "shown": refine.shown_to_coder(state, revising),
            "usage": refine.add_usage(state, cand.usage)}


def reflect(state: RefineState, runtime: Runtime[StrategyContext]) -> Command[Literal["code", "finish"]]:
    """Critique the run, then revise or stop."""
    stop, update = refine.judge_round(state, runtime, with_planner=False)
    return Command(goto="finish" if stop else "code", update=update)


def finish(state: RefineState, runtime: Runtime[StrategyContext]) -> dict:
    """The loop's answer."""
    return refine.finish(state, runtime, "self_reflection")


def build_self_reflection_graph() -> StateGraph:
    """The uncompiled self-reflection graph."""
    graph = StateGraph(
        RefineState, context_schema=StrategyContext, input_schema=StrategyInput, output_schema=StrategyOutput
    )
    graph.add_node("start", start)
    graph.add_node("code", code)
    graph.add_node("execute", refine.execute)
    graph.add_node("reflect", reflect)
    graph.add_node("finish", finish)
    graph.add_edge(START, "start")
    graph.add_edge("start", "code")
    graph.add_edge("code", "execute")
    graph.add_edge("execute", "reflect")
    graph.add_edge("finish", END)
    return graph
