"""The AIDE-style tree search as a LangGraph StateGraph.

One step = choose -> generate -> execute [-> repair -> execute]* -> review -> record, each a
superstep with its own checkpoint, so a crash mid-execution resumes without asking the model
again. A step's logic lives in four files:

- graphs/search.py (this file): the wiring, the state between supersteps, and `record`;
- nodes/operators.py: choose and write (the search policy, the draft / improve / debug prompts,
  asking the model for a script);
- nodes/execute.py: run and repair (the static check and the sandboxed run, and the quick repair
  calls inside the step for a script that fails the static check, crashes early or runs without
  its outputs);
- nodes/review.py: the facts of the run and the LLM's verdict.

`record` stores the step as a node in the tree store (nodes/tree.py: `Node`, `Tree`, the run's
`NodeStore`); the node records the script kept (the last one, or the one before a repair that
got less far: `nodes.execute.kept_before`) and every repair attempt. With a strategy
other than `aide`, `generate` runs that strategy's graph as the expansion operator (a subgraph
sharing this graph's checkpointer, so a killed fan-out or loop resumes inside itself) and
`execute` only keeps the submission of the candidate it returned. The state holds
the step in flight and the branch's newest node id (`head`): constant size. The nodes themselves
live in the run's NodeStore, append-only and linked per branch, so forking from any checkpoint
(Studio, `update_state`, a replay) gives an independent branch that sees only its own past, and
every file a step writes (workspace, submission, node row) is named by a claim of the task that
writes it: a crash replay reuses the name, a fork gets a new one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import RunnableLambda
from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime, get_runtime
from langgraph.types import Command
from typing_extensions import TypedDict

from graphs.settings import RunServices, SearchContext
from graphs.strategy import safe_name
from nodes.budget import budget_stop, describe_stop
from nodes.execute import (
    Execution,
    apply_repair,
    ask_for_repair,
    close_record,
    execute_script,
    harness_fixes,
    keep_or_set_aside,
    llm_repairs,
    metric_text,
    parent_splice,
    repair_need,
)
from nodes.files import submission_path
from nodes.operators import (
    Candidate,
    ask_for_script,
    choose_action,
    debug_prompt,
    draft_prompt,
    improve_changed,
    improve_prompt,
    step_rng,
)
from nodes.outline import outline_from_prompt
from nodes.review import llm_verdict
from nodes.tree import Node, Tree
from nodes.usage import Usage


class SearchState(TypedDict, total=False):
    """What flows between the supersteps of one step; never the whole tree."""

    step: int
    action: dict | None
    candidate: dict | None
    execution: dict | None
    details: dict | None  # what a strategy graph reports about its expansion
    repairs: list[dict] | None  # the repair attempts of this step (nodes.execute)
    script_seconds: float | None  # seconds of the scripts `execute` ran this step, a repair's too
    # the script a repair replaced, its execution and where the repair's records start: `execute`
    # goes back to it when the repaired script gets less far (nodes.execute.kept_before)
    before: dict | None
    verdict: dict | None
    head: str | None  # the branch's newest node (NodeStore.branch reads the branch from it)
    best_id: str | None
    best_metric: float | None
    last: str | None
    # why the search ended ({"by": "steps" | "budget", "step", ...}); None while it runs
    stopped: dict | None


def branch_tree(svc: RunServices, state: SearchState) -> Tree:
    """The tree of the branch the state names: the services' cached tree when it is that
    branch, else read from the store (after a fork, a replay or a resume)."""
    head = state.get("head")
    key = (head, 0 if head else state.get("step", 0))  # no head after step 0: a run from before
    if svc.tree_key != key:
        nodes = svc.store.branch(head, legacy_steps=key[1])
        svc.tree = svc.store.load_tree(svc.lower_is_better, nodes)
        svc.tree_key = key
    return svc.tree


def claimed(svc: RunServices, runtime: Runtime[Any], kind: str, step: int) -> str:
    """The name this task writes under (`NodeStore.claim`): its own after a crash replay, a
    fresh one in a fork. A call outside a graph run claims as "direct"."""
    info = getattr(runtime, "execution_info", None)
    owner = info.task_id if info is not None else f"direct-{step}"
    return svc.store.claim(kind, f"{step:05d}", owner)


def _services(runtime: Runtime[SearchContext]) -> RunServices:
    """The attached services (the CLI's), else those built for the context's plain settings
    (Studio, notebooks: `graphs.services.services_for`, the run named after the thread)."""
    ctx = runtime.context if runtime.context is not None else SearchContext()
    if ctx.services is not None:
        return ctx.services
    from graphs.services import services_for  # the builder imports the strategy graphs

    thread = str((get_config().get("configurable") or {}).get("thread_id") or "studio")
    return services_for(ctx, safe_name(thread))


def _emit(runtime: Runtime[SearchContext], **event: Any) -> None:
    writer = runtime.stream_writer
    if writer is not None:
        writer(event)


def memory_lines(tree: Tree, k: int, parent_id: str | None = None, *, branch: bool = True) -> list[str]:
    """Bounded memory for draft and improve prompts: the attempts on the parent's lineage and the
    run's best nodes (`Tree.branch_memory`, O(depth)), or with `branch=False`
    (`--no-branch-memory`) one line per node for the last `k` nodes of the whole run."""
    if branch:
        return tree.branch_memory(parent_id, max_entries=k)
    lines = []
    for n in tree.recent(k):
        outcome = "failed" if n.is_buggy else metric_text(n.metric, "metric")
        lines.append(f"{n.stage} (step {n.step}): {outcome}. {n.note}".strip())
    return lines


def choose(state: SearchState, runtime: Runtime[SearchContext]) -> dict:
    """Pick the next action with the search policy; no action when the steps are done or the
    next step would pass the run's compute budget (`nodes.budget.budget_stop`, on the use of
    this branch's nodes), and `stopped` says which."""
    svc = _services(runtime)
    step = state.get("step", 0)
    if step >= svc.settings.steps:
        return {"action": None, "stopped": {"by": "steps", "step": step}}
    tree = branch_tree(svc, state)
    over = budget_stop(svc.settings.budget(), tree.spent, tree.largest_step)
    if over is not None:
        stopped = {"by": "budget", "step": step, **over.as_dict()}
        _emit(runtime, kind="info", message=describe_stop(stopped, step))
        return {"action": None, "stopped": stopped}
    action = choose_action(tree, svc.settings.policy(), step_rng(svc.settings.seed, step))
    _emit(runtime, kind="step", step=step, total=svc.settings.steps, stage=action.stage,
          parent=action.parent_id)
    return {"action": {"stage": action.stage, "parent_id": action.parent_id}, "stopped": None}


def after_choose(state: SearchState) -> Literal["generate", "__end__"]:
    """An edge, not a `Command`: a state edited as if `choose` wrote it (Studio's fork, or
    `update_state(..., as_node="choose")`) goes on to `generate` the same way, and a run whose
    steps or budget are spent ends here however it was started (CLI, Studio, a resume)."""
    return "generate" if state.get("action") else END


def stage_request(svc: RunServices, action: dict, tree: Tree) -> str:
    """The prompt of the action's operator (draft, improve or debug), without the stable prefix;
    its memory is of `tree`, the step's branch (`branch_tree`)."""
    stage = action["stage"]
    memory = memory_lines(tree, svc.settings.memory_size, action.get("parent_id"),
                          branch=svc.settings.branch_memory)
    if stage == "draft":
        return draft_prompt(memory)
    parent = svc.store.get(action["parent_id"])
    if stage == "improve":
        return improve_prompt(parent, memory, lower_is_better=svc.lower_is_better)
    earlier = [n.note for n in list(tree.ancestors(parent.id, limit=8))[1:] if n.is_buggy]
    return debug_prompt(parent, earlier, known_errors=svc.settings.known_errors, facts=svc.system_text,
                        data=svc.competition.public_dir)


def generate(state: SearchState) -> dict:
    """Expand the chosen node: one script from the operator (AIDE), or one executed candidate
    from the strategy graph (self-consistency, self-reflection, planner -> coder)."""
    runtime = get_runtime(SearchContext)
    svc = _services(runtime)
    request = stage_request(svc, state["action"] or {}, branch_tree(svc, state))
    if svc.expander is None:
        return _generated(runtime, state, _ask(svc, state["action"] or {}, request))
    out = svc.expander.invoke(_expansion_input(svc, runtime, state, request), context=svc.strategy_context)
    return _generated(runtime, state, out["result"])


async def agenerate(state: SearchState) -> dict:
    """`generate` for async runs (the LangGraph API server): the strategy graph then runs on the
    server's async checkpointer, which has no synchronous methods."""
    runtime = get_runtime(SearchContext)
    svc = await asyncio.to_thread(_services, runtime)
    tree = await asyncio.to_thread(branch_tree, svc, state)
    request = await asyncio.to_thread(stage_request, svc, state["action"] or {}, tree)
    if svc.expander is None:
        return _generated(runtime, state, await asyncio.to_thread(_ask, svc, state["action"] or {}, request))
    label = await asyncio.to_thread(claimed, svc, runtime, "workspace", state.get("step", 0))
    # the input reads the parent's script from the store: off the event loop too
    given = await asyncio.to_thread(_expansion_input, svc, runtime, state, request, label)
    out = await svc.expander.ainvoke(given, context=svc.strategy_context)
    return _generated(runtime, state, out["result"])


def _ask(svc: RunServices, action: dict, request: str) -> dict:
    """The operator's one script (AIDE): an improve answer that leaves its parent's program as it
    was is asked for once more (`improve_changed`, unless `improve_again` is off), recorded
    among the step's repairs."""
    if action.get("stage") == "improve" and svc.settings.improve_again:
        parent_code = svc.store.get(action["parent_id"]).code

        def as_run(c: Candidate) -> str:  # a fragment runs in its parent's script (`execute`)
            if not svc.settings.splice_fragments:
                return c.code
            spliced = parent_splice(parent_code, c, python=svc.settings.python,
                                    imports=svc.settings.auto_imports)
            return spliced[0].code if spliced is not None else c.code

        cand, record = improve_changed(svc.llm, svc.system_text, request, parent_code,
                                       system_prompt=svc.use_system_prompt, as_run=as_run)
        return {"candidate": cand.model_dump(), **({"repairs": [record]} if record else {})}
    cand = ask_for_script(svc.llm, svc.system_text, request, system_prompt=svc.use_system_prompt)
    return {"candidate": cand.model_dump()}


def _expansion_input(svc: RunServices, runtime: Runtime[Any], state: SearchState, request: str,
                     label: str | None = None) -> dict:
    """The strategy graph's input; its workspaces go under `label`, claimed by this task."""
    step = state.get("step", 0)
    label = label or claimed(svc, runtime, "workspace", step)
    parent_id = (state.get("action") or {}).get("parent_id")
    parent = svc.store.get(parent_id).code if parent_id and svc.settings.splice_fragments else ""
    return {"request": request, "label": label, "seed": svc.settings.seed * 1_000_003 + step,
            "parent_code": parent}


def _generated(runtime: Runtime[SearchContext], state: SearchState, out: dict) -> dict:
    cand = Candidate.model_validate(out["candidate"])
    _emit(runtime, kind="generated", step=state.get("step", 0), tokens=cand.usage.completion_tokens,
          seconds=cand.usage.llm_seconds, error=cand.llm_error)
    # an expansion without an execution (AIDE) clears any earlier one: `execute` runs the script
    # (a strategy's executions are counted in its candidate's usage)
    return {"execution": None, "details": None, "script_seconds": None,
            **{k: out[k] for k in ("candidate", "execution", "details", "repairs") if k in out}}


def execute(state: SearchState, runtime: Runtime[SearchContext]) -> Command[Literal["repair", "review"]]:
    """Run the script in a fresh sandboxed workspace (a strategy has already run its own); send
    a static failure, an early crash or a run without its outputs to `repair` while repairs are
    left, else keep a
    well-formed submission under the node's id and go on to review."""
    svc = _services(runtime)
    step = state.get("step", 0)
    repairs = list(state.get("repairs") or [])
    if state.get("execution") is not None:
        ex = Execution.model_validate(state["execution"])
        return Command(goto="review", update={"execution": ex.model_dump()})
    cand = Candidate.model_validate(state["candidate"])
    _emit(runtime, kind="executing", step=step)
    # every execution (a repair's too) runs in a workspace of its own, claimed by this task
    workspace = svc.run_dir / "workspaces" / claimed(svc, runtime, "workspace", step)

    def run(code: str) -> Execution:
        return execute_script(code, workspace, public_dir=svc.competition.public_dir,
                              sample_submission=svc.competition.sample_submission,
                              timeout_s=svc.settings.exec_timeout, backend=svc.settings.sandbox,
                              llm_error=cand.llm_error, limits=svc.settings.limits(), held=svc.held)

    window = svc.settings.repair_window_s
    seconds = state.get("script_seconds") or 0.0

    fixes = harness_fixes(imports=svc.settings.auto_imports,
                          outline=outline_from_prompt(svc.system_text) if svc.settings.outline_names else (),
                          vectorize=svc.competition.public_dir if svc.settings.vectorize_strings else None,
                          data=svc.competition.public_dir)

    def attempt(c: Candidate) -> tuple[Candidate, Execution]:
        # run `c`, closing the record of the repair that wrote it (the open one, if any), then
        # once more after each thing the harness adds to a script the static check failed
        nonlocal seconds
        ex = run(c.code)
        seconds += ex.seconds
        if repairs and repairs[-1].get("fixed") is None:
            repairs[-1] = close_record(repairs[-1], ex, early_crash_s=window)
        for fixer in fixes:
            fix = fixer(c, ex)
            if fix is not None:
                c, record = fix
                ex = run(c.code)
                seconds += ex.seconds
                repairs.append(close_record(record, ex, early_crash_s=window))
        return c, ex

    def reattempt(c: Candidate, opened: dict[str, Any]) -> tuple[Candidate, Execution]:
        repairs.append(opened)  # `attempt` closes the open record
        return attempt(c)

    answer = cand.code
    before = state.get("before")
    parent_id = (state.get("action") or {}).get("parent_id")
    spliced = None
    if before is None and parent_id and svc.settings.splice_fragments:  # a debug or improve answer
        spliced = parent_splice(svc.store.get(parent_id).code, cand, python=svc.settings.python,
                                imports=svc.settings.auto_imports)
    cand, ex = reattempt(*spliced) if spliced is not None else attempt(cand)
    if before is not None and svc.settings.revert_repairs:
        cand, ex = keep_or_set_aside(Candidate.model_validate(before["candidate"]),
                                     Execution.model_validate(before["execution"]), answer, cand, ex,
                                     repairs, int(before["at"]), reattempt,
                                     splice=svc.settings.splice_fragments)
    update: dict[str, Any] = {"candidate": cand.model_dump(), "execution": ex.model_dump(),
                              "repairs": repairs, "script_seconds": seconds, "before": None}
    need = repair_need(cand, ex, early_crash_s=window)
    if llm_repairs(repairs) < svc.settings.repairs and need is not None:
        return Command(goto="repair", update=update)
    return Command(goto="review", update=update)


def repair(state: SearchState, runtime: Runtime[SearchContext]) -> Command[Literal["execute", "review"]]:
    """One quick repair call for a script that failed the static check, crashed early or ran
    without its outputs; the
    repaired script goes back to `execute` (an answer without a script: on to review)."""
    svc = _services(runtime)
    step = state.get("step", 0)
    cand = Candidate.model_validate(state["candidate"])
    ex = Execution.model_validate(state["execution"])
    repairs = list(state.get("repairs") or [])
    need = repair_need(cand, ex, early_crash_s=svc.settings.repair_window_s)
    if need is None:  # only reached when execute found something to repair
        return Command(goto="review")
    _emit(runtime, kind="repairing", step=step, attempt=llm_repairs(repairs) + 1, total=svc.settings.repairs,
          stage=need.stage, error=need.summary)
    answer = ask_for_repair(svc.llm, svc.system_text, cand.code, need, system_prompt=svc.use_system_prompt,
                            known=svc.settings.known_errors)
    cand, record, runnable = apply_repair(cand, answer, need)
    update = {"candidate": cand.model_dump(), "repairs": [*repairs, record]}
    if not runnable:  # the script stays as it was, with its execution
        return Command(goto="review", update=update)
    before = {"candidate": state["candidate"], "execution": state["execution"], "at": len(repairs)}
    return Command(goto="execute", update={**update, "execution": None, "before": before})


def _keep_submission(svc: RunServices, node_id: str, ex: dict) -> None:
    """Copy a well-formed submission under the node's id (for the hidden grader and exports)."""
    sub = ex.get("submission_file")
    if sub and Path(sub).is_file():
        _save_atomically(Path(sub), submission_path(svc.run_dir, node_id))


def _workspace_of(svc: RunServices, ex: dict) -> str:
    """Where the execution ran, relative to the run directory ("" when it never ran)."""
    where = ex.get("workspace")
    if not where:
        return ""
    try:
        return str(Path(where).resolve().relative_to(svc.run_dir.resolve()))
    except ValueError:
        return str(where)


def _save_atomically(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def review(state: SearchState, runtime: Runtime[SearchContext]) -> dict:
    """Take the facts of the run and ask the LLM for its analysis."""
    svc = _services(runtime)
    ex = Execution.model_validate(state["execution"])
    if ex.skipped:
        return {"verdict": {"failure": ex.skipped, "metric": None, "summary": ex.skipped}}
    facts = ex.facts()
    verdict: dict[str, Any] = {"failure": facts.failure, "metric": facts.metric, "summary": "",
                               "says_bug": None, "usage": Usage().model_dump(), "error": None}
    # A run the facts already call failed gets no LLM review (it would re-read script and output
    # for a verdict that changes nothing); its failure is the node's review.
    if svc.settings.llm_review and (facts.failure is None or not svc.settings.skip_failed_review):
        cand = Candidate.model_validate(state["candidate"])
        _emit(runtime, kind="reviewing", step=state.get("step", 0))
        v, usage, err = llm_verdict(svc.llm, svc.system_text, cand.code, ex.output, facts,
                                    svc.structured, system_prompt=svc.use_system_prompt)
        verdict.update(usage=usage.model_dump(), error=err)
        if v is not None:
            verdict.update(summary=v.summary, says_bug=v.is_bug)
    if not verdict["summary"]:
        verdict["summary"] = facts.failure or (f"ran cleanly, validation metric {facts.metric}"
                                               if facts.metric is not None else
                                               "ran cleanly and wrote its submission; printed no METRIC line")
    return {"verdict": verdict}


def record(state: SearchState, runtime: Runtime[SearchContext]) -> dict:
    """Append the node to the branch under an id claimed by this task (a crash replay writes the
    same row again, a fork a new one), and move to the next step."""
    svc = _services(runtime)
    step = state.get("step", 0)
    tree = branch_tree(svc, state)
    action = state["action"] or {}
    cand = Candidate.model_validate(state["candidate"])
    ex = state["execution"] or {}
    details = state.get("details") or {}
    repairs = state.get("repairs") or []
    verdict = state["verdict"] or {}
    usage = cand.usage.model_copy()
    usage.add(Usage.model_validate(verdict.get("usage") or {}))
    usage.add_execution(state.get("script_seconds") or 0.0)
    parent_id = action.get("parent_id")
    parent_depth = tree.get(parent_id).debug_depth if parent_id else 0
    node = Node(
        id=claimed(svc, runtime, "node", step),
        step=step,
        parent_id=parent_id,
        prev_id=state.get("head"),
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
        has_submission=bool(ex.get("submission_file")),
        debug_depth=parent_depth + 1 if action["stage"] == "debug" else 0,
        reasoning=cand.reasoning,
        llm_error=cand.llm_error or verdict.get("error"),
        workspace=_workspace_of(svc, ex),
        created_at=time.time(),
        extra=_extra(details, repairs, ex.get("notes") or []),
        by_holdout=bool(ex.get("by_holdout")),
        holdout_score=ex.get("holdout_score"),
        holdout_note=ex.get("holdout_note"),
        self_report_flag=ex.get("self_report_flag") if verdict.get("failure") is None else None,
        **usage.model_dump(),
    )
    _keep_submission(svc, node.id, ex)
    if svc.hidden_grader is not None and node.has_submission:
        node = node.model_copy(update=_hidden_grade(svc, node.id))
    svc.store.put(node)
    tree.add(node)
    svc.tree_key = (node.id, 0)
    best = tree.best()
    outcome = f"buggy: {node.bug_reason}" if node.is_buggy else metric_text(node.metric, "metric")
    _emit(runtime, kind="recorded", step=step, node_id=node.id, stage=node.stage,
          buggy=node.is_buggy, metric=node.metric, outcome=outcome,
          best_metric=best.metric if best else None, tokens=node.prompt_tokens + node.completion_tokens,
          llm_seconds=node.llm_seconds, exec_seconds=node.exec_seconds)
    return {
        "step": step + 1,
        "action": None,
        "candidate": None,
        "execution": None,
        "details": None,
        "repairs": None,
        "script_seconds": None,
        "before": None,
        "verdict": None,
        "head": node.id,
        "best_id": best.id if best else None,
        "best_metric": best.metric if best else None,
        "last": f"{node.id} {node.stage}: {outcome}"[:300],
    }


def _extra(details: dict, repairs: list[dict], notes: list[str]) -> dict[str, Any]:
    """The node's `extra`: what a strategy reported, the step's repairs, checks not done."""
    extra: dict[str, Any] = {}
    if details:
        extra["strategy"] = details
    if repairs:
        extra["repairs"] = repairs
    if notes:
        extra["notes"] = notes
    return extra


def _hidden_grade(svc: RunServices, node_id: str) -> dict[str, Any]:
    """Grade a node's saved submission on the private answers; a grader failure is recorded."""
    path = submission_path(svc.run_dir, node_id)
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
    # both flavours: the CLI streams synchronously, the LangGraph API server asynchronously
    graph.add_node("generate", RunnableLambda(generate, afunc=agenerate, name="generate"))
    graph.add_node("execute", execute)
    graph.add_node("repair", repair)
    graph.add_node("review", review)
    graph.add_node("record", record)
    graph.add_edge(START, "choose")
    graph.add_conditional_edges("choose", after_choose)
    graph.add_edge("generate", "execute")
    graph.add_edge("review", "record")
    graph.add_edge("record", "choose")
    return graph
