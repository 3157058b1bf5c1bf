"""Planner -> coder decomposition: a planner fixes the approach, a coder implements it, an
executor runs it, and a reflector sends feedback to whichever should change.

    START -> start -> plan -> code -> execute -> reflect --(coder: implementation bug)--> code
                       ^                                 `--(planner: approach wrong)--> plan
                       |__________________________________`--(stop)--> finish -> END

The plan is structured (`nodes.plan.Plan`). Planner and coder may be different models on
different endpoints (the context's planner_base_url / planner_model). Stopping rules and the
returned script: see `graphs.refine`; every round is one execution, so plan revisions are
bounded by the same `rounds`.
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command

from graphs import refine
from graphs.refine import RefineState
from graphs.strategy import StrategyContext, StrategyInput, StrategyOutput, emit, services_of
from nodes.code import implement_plan
from nodes.execute import Execution
from nodes.operators import Candidate
from nodes.plan import Plan, make_plan
from nodes.reflect import Reflection

NO_PLAN = "(The planner gave no usable plan: choose a solid, simple approach yourself.)"


class PlannerCoderState(RefineState, total=False):
    """The loop's state plus the current plan."""

    plan: dict | None
    plan_text: str
    plans_made: int
    plan_fallbacks: list[str]  # why a plan was unusable (the coder then chose the approach)


def start(state: PlannerCoderState) -> dict:
    """Begin a new loop."""
    return {**refine.start_state(state), "plan": None, "plan_text": "", "plans_made": 0, "plan_fallbacks": []}


def plan(state: PlannerCoderState, runtime: Runtime[StrategyContext]) -> dict:
    """Write the plan, or a changed plan when the reflector says the approach is wrong."""
    svc = services_of(runtime)
    previous = Plan.model_validate(state["plan"]) if state.get("plan") else None
    critique = Reflection.model_validate(state["reflection"]).critique if state.get("reflection") else ""
    emit(
        runtime,
        kind="strategy",
        stage="planning",
        round=state.get("round", 0) + 1,
        rounds=runtime.context.rounds,
    )
    new, usage, err = make_plan(
        svc.planner,
        svc.system_text,
        state["resolved_request"],
        svc.planner_structured,
        previous=previous,
        critique=critique,
        system_prompt=svc.planner_system_prompt,
    )
    text = new.render() if new is not None else NO_PLAN
    fallbacks = list(state.get("plan_fallbacks") or [])
    if new is None:
        why = err or "no answer"
        fallbacks.append(f"planner fallback (no plan: the coder chooses the approach): {why}"[:300])
    return {
        "plan_fallbacks": fallbacks,
        "plan": new.model_dump() if new else None,
        "plan_text": text,
        "plans_made": state.get("plans_made", 0) + 1,
        # a new plan starts a new implementation
        "candidate": None,
        "execution": None,
        "reflection": None,
        "usage": refine.add_usage(state, usage),
    }


def code(state: PlannerCoderState, runtime: Runtime[StrategyContext]) -> dict:
    """Implement the plan; after a coder-directed critique, fix the implementation."""
    svc = services_of(runtime)
    emit(
        runtime,
        kind="strategy",
        stage="coding",
        round=state.get("round", 0) + 1,
        rounds=runtime.context.rounds,
    )
    fixing = state.get("candidate") is not None
    cand = implement_plan(
        svc.coder,
        svc.system_text,
        state["resolved_request"],
        state["plan_text"],
        previous=Candidate.model_validate(state["candidate"]) if fixing else None,
        execution=Execution.model_validate(state["execution"]) if fixing else None,
        critique=Reflection.model_validate(state["reflection"]).critique if fixing else "",
        system_prompt=svc.coder_system_prompt,
    )
    if not cand.plan:
        cand = cand.model_copy(update={"plan": state["plan_text"]})
    return {"candidate": cand.model_dump(), "shown": refine.shown_to_coder(state, fixing),
            "usage": refine.add_usage(state, cand.usage)}


def reflect(
    state: PlannerCoderState, runtime: Runtime[StrategyContext]
) -> Command[Literal["code", "plan", "finish"]]:
    """Critique the run and route it: to the coder, to the planner, or stop."""
    stop, update = refine.judge_round(state, runtime, with_planner=True, plan_text=state.get("plan_text", ""))
    if stop:
        return Command(goto="finish", update=update)
    target = (update.get("reflection") or {}).get("target", "coder")
    return Command(goto="plan" if target == "planner" else "code", update=update)


def finish(state: PlannerCoderState, runtime: Runtime[StrategyContext]) -> dict:
    """The loop's answer."""
    out = refine.finish(state, runtime, "planner_coder")
    out["result"]["details"]["plans_made"] = state.get("plans_made", 0)
    out["result"]["details"]["plan_fallbacks"] = state.get("plan_fallbacks") or []
    return out


def build_planner_coder_graph() -> StateGraph:
    """The uncompiled planner -> coder graph."""
    graph = StateGraph(
        PlannerCoderState,
        context_schema=StrategyContext,
        input_schema=StrategyInput,
        output_schema=StrategyOutput,
    )
    graph.add_node("start", start)
    graph.add_node("plan", plan)
    graph.add_node("code", code)
    graph.add_node("execute", refine.execute)
    graph.add_node("reflect", reflect)
    graph.add_node("finish", finish)
    graph.add_edge(START, "start")
    graph.add_edge("start", "plan")
    graph.add_edge("plan", "code")
    graph.add_edge("code", "execute")
    graph.add_edge("execute", "reflect")
    graph.add_edge("finish", END)
    return graph
