"""The AIDE-style tree search as a LangGraph StateGraph.

One step = choose -> generate -> execute -> review -> record, each a superstep with its own
checkpoint, so a crash mid-execution resumes without asking the model again. The state holds
only the step in flight (constant size); the tree itself lives in the run's NodeStore.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command

from graphs.settings import RunServices, SearchContext
from nodes.candidate import Candidate
from nodes.debug import debug
from nodes.draft import draft
from nodes.improve import improve
from nodes.policy import choose_action, step_rng
from nodes.review import check_submission, establish_facts, llm_verdict
from nodes.static_check import static_problems
from nodes.tree import Node, Tree, node_id_for
from nodes.usage import Usage
from sandbox import create_workspace, run_script


class SearchState(TypedDict, total=False):
    """What flows between the supersteps of one step; never the whole tree."""

    step: int
    action: dict | None
    candidate: dict | None
    execution: dict | None
    verdict: dict | None
    best_id: str | None
    best_metric: float | None
    last: str | None


def _services(runtime: Runtime[SearchContext]) -> RunServices:
    return runtime.context.services


def _emit(runtime: Runtime[SearchContext], **event: Any) -> None:
    writer = runtime.stream_writer
    if writer is not None:
        writer(event)


def memory_lines(tree: Tree, k: int) -> list[str]:
    """One line per recent node: bounded memory for draft and improve prompts."""
    lines = []
    for n in tree.recent(k):
        outcome = "failed" if n.is_buggy else f"metric {n.metric:.6g}"
        lines.append(f"{n.stage} (step {n.step}): {outcome}. {n.note}".strip())
    return lines


def choose(state: SearchState, runtime: Runtime[SearchContext]) -> Command[Literal["generate", "__end__"]]:
    """Pick the next action with the search policy, or finish."""
    svc = _services(runtime)
    step = state.get("step", 0)
    if step >= svc.settings.steps:
        return Command(goto=END)
    action = choose_action(svc.tree, svc.settings.policy(), step_rng(svc.settings.seed, step))
    _emit(runtime, kind="step", step=step, total=svc.settings.steps, stage=action.stage,
          parent=action.parent_id)
    return Command(goto="generate", update={"action": {"stage": action.stage, "parent_id": action.parent_id}})


def generate(state: SearchState, runtime: Runtime[SearchContext]) -> dict:
    """Run the operator the action names and return its candidate script."""
    svc = _services(runtime)
    action = state["action"] or {}
    stage = action["stage"]
    sys_flag = svc.use_system_prompt
    if stage == "draft":
        cand = draft(svc.llm, svc.system_text, memory_lines(svc.tree, svc.settings.memory_size),
                     system_prompt=sys_flag)
    else:
        parent = svc.store.get(action["parent_id"])
        if stage == "improve":
            cand = improve(svc.llm, svc.system_text, parent,
                           memory_lines(svc.tree, svc.settings.memory_size),
                           lower_is_better=svc.lower_is_better, system_prompt=sys_flag)
        else:
            earlier = [n.note for n in list(svc.tree.ancestors(parent.id, limit=8))[1:] if n.is_buggy]
            cand = debug(svc.llm, svc.system_text, parent, earlier, system_prompt=sys_flag)
    _emit(runtime, kind="generated", step=state.get("step", 0), tokens=cand.usage.completion_tokens,
          seconds=cand.usage.llm_seconds, error=cand.llm_error)
    return {"candidate": cand.model_dump()}


def execute(state: SearchState, runtime: Runtime[SearchContext]) -> dict:
    """Statically check the script, then run it in a fresh sandboxed workspace."""
    svc = _services(runtime)
    step = state.get("step", 0)
    cand = Candidate.model_validate(state["candidate"])
    if not cand.code:
        reason = (f"LLM call failed: {cand.llm_error}" if cand.llm_error
                  else "no Python code block in the answer")
        return {"execution": {"skipped": reason}}
    problems = static_problems(cand.code)
    if problems:
        return {"execution": {"skipped": "static check: " + "; ".join(problems[:5])}}
    node_id = node_id_for(step)
    _emit(runtime, kind="executing", step=step)
    workspace = create_workspace(svc.run_dir / "workspaces" / node_id, svc.competition.public_dir)
    result = run_script(cand.code, workspace, timeout_s=svc.settings.exec_timeout,
                        backend=svc.settings.sandbox)
    sub_path = workspace.submission_dir / "submission.csv"
    problem = check_submission(sub_path, svc.competition.sample_submission)
    if problem is None:
        _save_atomically(sub_path, svc.run_dir / "submissions" / f"{node_id}.csv")
    return {
        "execution": {
            "exit_code": result.exit_code,
            "timed_out": result.timed_out,
            "killed_reason": result.killed_reason,
            "seconds": result.seconds,
            # host paths out of the log: shorter prompts, identical across runs and resumes
            "output": result.output.replace(f"{workspace.root}/", ""),
            "submission_problem": problem,
        }
    }


def _save_atomically(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def review(state: SearchState, runtime: Runtime[SearchContext]) -> dict:
    """Establish the facts of the run and ask the LLM for its analysis."""
    svc = _services(runtime)
    ex = state["execution"] or {}
    if "skipped" in ex:
        return {"verdict": {"failure": ex["skipped"], "metric": None, "summary": ex["skipped"]}}
    output = ex.get("output", "")
    facts = establish_facts(
        exit_code=ex.get("exit_code"), timed_out=ex.get("timed_out", False),
        killed_reason=ex.get("killed_reason"), output=output,
        submission_problem=ex.get("submission_problem"),
        last_error=_last_error(output), timeout_s=svc.settings.exec_timeout,
    )
    verdict: dict[str, Any] = {"failure": facts.failure, "metric": facts.metric, "summary": "",
                               "says_bug": None, "usage": Usage().model_dump(), "error": None}
    if svc.settings.llm_review:
        cand = Candidate.model_validate(state["candidate"])
        _emit(runtime, kind="reviewing", step=state.get("step", 0))
        v, usage, err = llm_verdict(svc.llm, svc.system_text, cand.code, output, facts,
                                    svc.structured, system_prompt=svc.use_system_prompt)
        verdict.update(usage=usage.model_dump(), error=err)
        if v is not None:
            verdict.update(summary=v.summary, says_bug=v.is_bug)
    if not verdict["summary"]:
        verdict["summary"] = facts.failure or f"ran cleanly, validation metric {facts.metric}"
    return {"verdict": verdict}


def _last_error(output: str) -> str:
    for line in reversed(output.strip().splitlines()):
        s = line.strip()
        if s and ("Error" in s or "Exception" in s):
            return s[:300]
    return "see output"


def record(state: SearchState, runtime: Runtime[SearchContext]) -> Command[Literal["choose"]]:
    """Append the node to the tree (idempotent by node id) and move to the next step."""
    svc = _services(runtime)
    step = state.get("step", 0)
    action = state["action"] or {}
    cand = Candidate.model_validate(state["candidate"])
    ex = state["execution"] or {}
    verdict = state["verdict"] or {}
    usage = cand.usage.model_copy()
    usage.add(Usage.model_validate(verdict.get("usage") or {}))
    parent_id = action.get("parent_id")
    parent_depth = svc.tree.get(parent_id).debug_depth if parent_id else 0
    node = Node(
        id=node_id_for(step),
        step=step,
        parent_id=parent_id,
        stage=action["stage"],
        strategy=svc.settings.strategy,
        plan=cand.plan,
        code=cand.code,
        output=ex.get("output", ""),
        exit_code=ex.get("exit_code"),
        timed_out=bool(ex.get("timed_out", False)),
        exec_seconds=float(ex.get("seconds", 0.0)),
        metric=verdict.get("metric"),
        is_buggy=verdict.get("failure") is not None,
        bug_reason=verdict.get("failure"),
        review=verdict.get("summary", ""),
        review_says_bug=verdict.get("says_bug"),
        has_submission=ex.get("submission_problem") is None and "skipped" not in ex,
        debug_depth=parent_depth + 1 if action["stage"] == "debug" else 0,
        reasoning=cand.reasoning,
        llm_error=cand.llm_error or verdict.get("error"),
        created_at=time.time(),
        **usage.model_dump(),
    )
    if svc.hidden_grader is not None and node.has_submission:
        node = node.model_copy(update=_hidden_grade(svc, node.id))
    svc.store.put(node)
    svc.tree.add(node)
    best = svc.tree.best()
    outcome = f"buggy: {node.bug_reason}" if node.is_buggy else f"metric {node.metric:.6g}"
    _emit(runtime, kind="recorded", step=step, node_id=node.id, stage=node.stage,
          buggy=node.is_buggy, metric=node.metric, outcome=outcome,
          best_metric=best.metric if best else None, tokens=node.prompt_tokens + node.completion_tokens,
          llm_seconds=node.llm_seconds, exec_seconds=node.exec_seconds)
    return Command(
        goto="choose",
        update={
            "step": step + 1,
            "action": None,
            "candidate": None,
            "execution": None,
            "verdict": None,
            "best_id": best.id if best else None,
            "best_metric": best.metric if best else None,
            "last": f"{node.id} {node.stage}: {outcome}"[:300],
        },
    )


def _hidden_grade(svc: RunServices, node_id: str) -> dict[str, Any]:
    """Grade a node's saved submission on the private answers; a grader failure is recorded."""
    path = svc.run_dir / "submissions" / f"{node_id}.csv"
    try:
        grade = svc.hidden_grader(path)  # type: ignore[misc]
    except Exception as exc:  # noqa: BLE001 - grading must never stop the search
        return {"test_score": None, "test_valid": False,
                "test_reason": f"grader failed: {type(exc).__name__}: {exc}"[:300]}
    return {"test_score": grade.score, "test_valid": grade.valid, "test_reason": grade.reason}


def build_search_graph() -> StateGraph:
    """The uncompiled tree-search graph (compile it with a checkpointer)."""
    graph = StateGraph(SearchState, context_schema=SearchContext)
    graph.add_node("choose", choose)
    graph.add_node("generate", generate)
    graph.add_node("execute", execute)
    graph.add_node("review", review)
    graph.add_node("record", record)
    graph.add_edge(START, "choose")
    graph.add_edge("generate", "execute")
    graph.add_edge("execute", "review")
    graph.add_edge("review", "record")
    return graph
