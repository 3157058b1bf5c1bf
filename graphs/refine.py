"""The loop self-reflection and planner -> coder share: execute the current script, reflect on
it, then stop or send the critique on. Stops when the reflector accepts a valid result, when
the metric stops improving, or after `rounds` executions (the context's bound; LangGraph's
recursion limit is not relied on). The best valid script seen is what the loop returns.

`execute` repairs a script that fails the static check or crashes early (up to the context's
`repairs` calls, inside the node: a resumed node redoes them as a unit), so the reflector sees
the repaired script and its run; the round's record lists the repairs.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from graphs.strategy import (
    StrategyContext,
    StrategyInput,
    emit,
    execute_with_repairs,
    label_of,
    request_of,
    result,
    services_of,
)
from nodes.execute import Execution
from nodes.operators import Candidate
from nodes.reflect import reflect
from nodes.usage import Usage


class RefineState(StrategyInput, total=False):
    """The loop in flight (its own keys)."""

    resolved_request: str
    resolved_label: str
    round: int  # executions done
    candidate: dict | None
    shown: str  # the script the coder was shown this round (the parent's, or the one it revised)
    execution: dict | None
    repairs: list[dict] | None  # the repair attempts of this round's execution
    reflection: dict | None
    best: dict | None  # {"round", "candidate", "execution"} of the best valid execution
    history: list[dict]  # one short record per round
    usage: dict
    result: dict


def start_state(state: RefineState) -> dict[str, Any]:
    """A fresh loop (a Studio thread may hold an earlier one)."""
    return {
        "resolved_request": request_of(state),
        "resolved_label": label_of(state),
        "round": 0,
        "candidate": None,
        "shown": "",
        "execution": None,
        "repairs": None,
        "reflection": None,
        "best": None,
        "history": [],
        "usage": Usage().model_dump(),
    }


def shown_to_coder(state: RefineState, revising: bool) -> str:
    """The script a coder's answer may be a fragment of: the one it revises, else the parent's
    script the request showed (a debug or improve step), else none."""
    if revising:
        return str((state.get("candidate") or {}).get("code") or "")
    return state.get("parent_code") or ""


def add_usage(state: RefineState, *more: Usage) -> dict:
    """The running cost with more calls added."""
    total = Usage.model_validate(state.get("usage") or {})
    for u in more:
        total.add(u)
    return total.model_dump()


def execute(state: RefineState, runtime: Runtime[StrategyContext]) -> dict:
    """Run the current script in this round's workspace, repairing it when it fails early; the
    repaired script replaces the round's candidate, and its calls and executions join the loop's
    cost. An answer that is a fragment of the script the coder was shown runs in its place."""
    svc = services_of(runtime)
    r = state.get("round", 0)
    emit(runtime, kind="strategy", stage="executing", round=r + 1, rounds=runtime.context.rounds)
    cand = Candidate.model_validate(state["candidate"])
    # repaired with an empty tally, so that only the repair calls and the executions are added to
    # the loop's cost (the coder's call is in it already)
    last, ex, repairs = execute_with_repairs(runtime, cand.model_copy(update={"usage": Usage()}),
                                             svc.work_dir / state["resolved_label"] / f"r{r}",
                                             parent=state.get("shown") or "", round=r + 1,
                                             rounds=runtime.context.rounds)
    # `last.usage` holds the repair calls and the seconds of every execution of the round
    usage = cand.usage.model_copy(deep=True)
    usage.add(last.usage)
    return {"execution": ex.model_dump(), "repairs": repairs,
            "candidate": last.model_copy(update={"usage": usage}).model_dump(),
            "usage": add_usage(state, last.usage)}


def judge_round(
    state: RefineState, runtime: Runtime[StrategyContext], *, with_planner: bool, plan_text: str = ""
) -> tuple[bool, dict[str, Any]]:
    """Reflect on this round and decide: (stop, state update)."""
    svc = services_of(runtime)
    r = state.get("round", 0)
    rounds = max(1, runtime.context.rounds)
    cand = Candidate.model_validate(state["candidate"])
    ex = Execution.model_validate(state["execution"])
    best = state.get("best")
    # compared by score: the holdout score in a run that holds a split, else the metric
    best_score = Execution.model_validate(best["execution"]).score if best is not None else None
    improved = ex.score is not None and (
        best_score is None or _better(ex.score, best_score, svc.lower_is_better)
    )
    new_best = (
        {"round": r, "candidate": cand.model_dump(), "execution": ex.model_dump()} if improved else best
    )
    record: dict[str, Any] = {"round": r + 1, "metric": ex.metric, "failure": ex.failure}
    if state.get("repairs"):
        record["repairs"] = state["repairs"]
    update: dict[str, Any] = {"round": r + 1, "best": new_best}
    usage = Usage()
    if best is not None and not improved:
        stop, why = True, "the metric stopped improving"
    elif r + 1 >= rounds:
        stop, why = True, f"reached {rounds} rounds"
    else:
        emit(runtime, kind="strategy", stage="reflecting", round=r + 1, rounds=rounds)
        ref, usage, err = reflect(
            svc.coder,
            svc.system_text,
            cand.code,
            ex,
            svc.structured,
            plan=plan_text,
            with_planner=with_planner,
            system_prompt=svc.coder_system_prompt,
        )
        update["reflection"] = ref.model_dump()
        # err is set exactly when the reflector gave no usable answer and its fallback decided
        record.update(accept=ref.accept, target=ref.target, critique=ref.critique[:300], error=err,
                      fallback=err is not None)
        stop, why = (True, "the reflector accepted it") if ref.accept else (False, "")
    record["stop"] = why or None
    update["history"] = [*(state.get("history") or []), record]
    update["usage"] = add_usage(state, usage)
    return stop, update


def _better(a: float, b: float, lower_is_better: bool) -> bool:
    return a < b if lower_is_better else a > b


def finish(state: RefineState, runtime: Runtime[StrategyContext], strategy: str) -> dict:
    """Return the best valid script seen, else the last one, with the whole loop's cost."""
    best = state.get("best")
    chosen = best or {
        "round": state.get("round", 1) - 1,
        "candidate": state["candidate"],
        "execution": state["execution"],
    }
    history = state.get("history") or []
    emit(
        runtime,
        kind="strategy",
        stage="finished",
        round=chosen["round"] + 1,
        rounds=len(history),
        detail=(history[-1].get("stop") if history else None),
    )
    return result(
        Candidate.model_validate(chosen["candidate"]),
        Execution.model_validate(chosen["execution"]),
        Usage.model_validate(state.get("usage") or {}),
        strategy=strategy,
        kept_round=chosen["round"] + 1,
        rounds=history,
    )
