"""Self-consistency: sample N scripts for one request, execute all, keep the best.

    START -> sample --Send x N--> attempt (sample if needed, execute) -> select -> END

`sample` asks for all N in one request when the endpoint honours `n` (vLLM; detected once per
run, or forced by the context's `sampling`); otherwise each `attempt` branch makes its own
request with its own seed, so the N requests run concurrently. Executions are bounded by the
context's `workers`, and the K = min(N, workers) that may run at the same time share the run's
memory limit (each gets 1/K of it: `sandbox.limits.Limits.shared`) instead of each taking all
of it. The `Send` branches are checkpointed one by one: after a crash only the
unfinished branches run again. A candidate that fails the static check or crashes early is
repaired inside its branch (`graphs.strategy.execute_with_repairs`: repair calls and reruns in
the branch's one task, so a resumed branch redoes them as a unit) before `select` applies the
rule in `nodes.select` to the last script of each branch; the attempts list its repairs.
"""

from __future__ import annotations

from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from typing_extensions import TypedDict

from graphs.strategy import (
    StrategyContext,
    StrategyInput,
    StrategyOutput,
    emit,
    execute_with_repairs,
    label_of,
    request_of,
    result,
    seed_of,
    services_of,
)
from nodes.operators import Candidate
from nodes.sample import sample_in_one_call, sample_one
from nodes.select import Attempt, llm_judge, select_best
from nodes.usage import Usage


def add_or_reset(old: list | None, new: list | None) -> list:
    """Reducer: branches append their attempt; `None` starts a new fan-out."""
    return [] if new is None else [*(old or []), *new]


class SCState(StrategyInput, total=False):
    """The fan-out in flight (its own keys: nothing is shared with a parent graph)."""

    n: int
    resolved_request: str
    resolved_label: str
    samples: list[dict]
    sample_usage: dict
    sampling: str
    attempts: Annotated[list[dict], add_or_reset]
    result: dict


class AttemptTask(TypedDict):
    """What one `Send` branch gets."""

    index: int
    total: int
    candidate: dict | None
    request: str
    label: str
    seed: int
    parent: str  # the script the request showed: a sample that is a fragment of it runs in its place


def sample(state: SCState, runtime: Runtime[StrategyContext]) -> dict:
    """Start a fan-out; ask for all N samples in one request when the endpoint can."""
    svc = services_of(runtime)
    n = max(1, runtime.context.samples)
    request = request_of(state)
    update: dict[str, Any] = {
        "n": n,
        "resolved_request": request,
        "resolved_label": label_of(state),
        "attempts": None,
        "samples": [],
        "sample_usage": Usage().model_dump(),
        "sampling": "concurrent",
    }
    if n > 1 and svc.sampling.try_n():
        emit(runtime, kind="strategy", stage="sampling", detail=f"{n} samples in one request")
        cands, usage = sample_in_one_call(
            svc.coder,
            svc.system_text,
            request,
            n,
            svc.sampling,
            system_prompt=svc.coder_system_prompt,
            seed=seed_of(state, "n"),
        )
        update.update(
            samples=[c.model_dump() for c in cands],
            sample_usage=usage.model_dump(),
            sampling="n" if len(cands) >= n else f"n returned {len(cands)}; rest concurrent",
        )
    return update


def fan_out(state: SCState) -> list[Send]:
    """One branch per sample; branches without a sample make their own request."""
    got = state.get("samples") or []
    return [
        Send(
            "attempt",
            AttemptTask(
                index=i,
                total=state["n"],
                candidate=got[i] if i < len(got) else None,
                request=state["resolved_request"],
                label=state["resolved_label"],
                seed=seed_of(state, "sample", i),
                parent=state.get("parent_code") or "",
            ),
        )
        for i in range(state["n"])
    ]


def attempt(task: AttemptTask, runtime: Runtime[StrategyContext]) -> dict:
    """Sample (if needed) and execute candidate i, repairing it when it fails early."""
    svc = services_of(runtime)
    i, total = task["index"], task["total"]
    if task["candidate"] is None:
        emit(runtime, kind="strategy", stage="sampling", candidate=i + 1, total=total)
        cand = sample_one(
            svc.coder,
            svc.system_text,
            task["request"],
            system_prompt=svc.coder_system_prompt,
            seed=task["seed"],
        )
    else:
        cand = Candidate.model_validate(task["candidate"])
    emit(runtime, kind="strategy", stage="executing", candidate=i + 1, total=total)
    cand, ex, repairs = execute_with_repairs(runtime, cand, svc.work_dir / task["label"] / f"s{i}",
                                             concurrent=concurrent_runs(total, runtime.context.workers),
                                             parent=task.get("parent") or "", candidate=i + 1, total=total)
    emit(
        runtime,
        kind="strategy",
        stage="executed",
        candidate=i + 1,
        total=total,
        metric=ex.metric,
        failure=ex.failure,
    )
    return {"attempts": [{**Attempt(index=i, candidate=cand, execution=ex).model_dump(), "repairs": repairs}]}


def concurrent_runs(samples: int, workers: int) -> int:
    """How many of a fan-out's scripts may run at the same time: one per sample, at most the
    run's `workers` (the executor's slots)."""
    return max(1, min(samples, workers))


def select(state: SCState, runtime: Runtime[StrategyContext]) -> dict:
    """Keep the best attempt; the kept candidate carries the cost of the whole fan-out."""
    svc = services_of(runtime)
    by_index, repairs = {}, {}
    for raw in state.get("attempts") or []:  # values may come back as lists after a resume
        a = Attempt.model_validate(raw)
        by_index[a.index] = a
        repairs[a.index] = list(raw.get("repairs") or [])
    attempts = [by_index[i] for i in sorted(by_index)]
    judge = (
        llm_judge(svc.coder, svc.system_text, svc.structured, system_prompt=svc.coder_system_prompt)
        if runtime.context.judge
        else None
    )
    chosen = select_best(attempts, lower_is_better=svc.lower_is_better, judge=judge)
    usage = Usage.model_validate(state.get("sample_usage") or {})
    for a in attempts:
        usage.add(a.candidate.usage)
    usage.add(chosen.usage)
    kept = by_index[chosen.index]
    emit(
        runtime,
        kind="strategy",
        stage="selected",
        candidate=chosen.index + 1,
        total=len(attempts),
        detail=chosen.rule,
    )
    return result(
        kept.candidate,
        kept.execution,
        usage,
        strategy="self_consistency",
        kept=chosen.index,
        rule=chosen.rule,
        sampling=state.get("sampling", "concurrent"),
        attempts=[
            {
                "index": a.index,
                "metric": a.execution.metric,
                **({"holdout": a.execution.holdout_score} if a.execution.by_holdout else {}),
                "failure": (a.execution.failure or "")[:200] or None,
                "tokens": a.candidate.usage.prompt_tokens + a.candidate.usage.completion_tokens,
                "script_seconds": round(a.candidate.usage.script_seconds, 3),  # its runs, repairs' too
                **({"repairs": repairs[a.index]} if repairs[a.index] else {}),
            }
            for a in attempts
        ],
    )


def build_self_consistency_graph() -> StateGraph:
    """The uncompiled self-consistency graph."""
    graph = StateGraph(
        SCState, context_schema=StrategyContext, input_schema=StrategyInput, output_schema=StrategyOutput
    )
    graph.add_node("sample", sample)
    graph.add_node("attempt", attempt)
    graph.add_node("select", select)
    graph.add_edge(START, "sample")
    graph.add_conditional_edges("sample", fan_out, ["attempt"])
    graph.add_edge("attempt", "select")
    graph.add_edge("select", END)
    return graph
