"""What the three inference-time-scaling strategy graphs share: their runtime context, the live
services behind it, their input and output, and small helpers.

A strategy graph turns one *request* (a draft, improve or debug prompt; by default a first draft
of the task) into one executed candidate. The tree search calls it as its node-expansion
operator; Studio, notebooks and tests invoke it alone. Per-run settings travel in the runtime
context (`RunContext`, the run's settings, plain values Studio can send); the live objects built
from them (chat clients, the stable prompt prefix, the sandbox slots, the held split) are
`StrategyServices`, attached by the tree search or built by the CLI's own builder
(`graphs.services.strategy_services_for`).

Repairs inside a step apply to every executed candidate: one that fails the static check or
crashes within `repair_window_s` gets up to `repairs` quick repair calls (`nodes.execute`, role
`repairer`, on the coder) inside the node that executes it, before it is selected or reflected
on (`execute_with_repairs`). The repair settings are plain context values, so the CLI
(`graphs.services.strategy_context`, from the run's settings) and Studio set them alike.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.config import get_config
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from graphs.settings import RunContext
from nodes.execute import Execution, execute_script, run_with_repairs
from nodes.operators import Candidate, draft_prompt
from nodes.sample import SamplingSupport
from nodes.structured import StructuredOutputSupport
from nodes.usage import Usage
from sandbox.limits import Limits


@dataclass
class StrategyServices:
    """Live objects the strategy graphs use (never checkpointed)."""

    coder: BaseChatModel
    planner: BaseChatModel
    system_text: str
    coder_system_prompt: bool
    planner_system_prompt: bool
    public_dir: Path
    sample_submission: Path | None
    work_dir: Path
    exec_timeout: float
    sandbox: str
    lower_is_better: bool
    sampling: SamplingSupport
    exec_slots: threading.Semaphore
    structured: StructuredOutputSupport = field(default_factory=StructuredOutputSupport)
    planner_structured: StructuredOutputSupport = field(default_factory=StructuredOutputSupport)
    limits: Limits | None = None  # None: sandbox defaults
    held: Any = None  # tasks.holdout.HeldSplit: the harness scores held rows; None: self-report

    def execute(self, cand: Candidate, workspace: Path, *, concurrent: int = 1) -> Execution:
        """Check and run a candidate in `workspace` (bounded by the run's worker slots); with
        `concurrent` scripts of this expansion running at the same time, each gets its share of
        the run's limits (`Limits.shared`), so together they stay within them."""
        return execute_script(
            cand.code,
            workspace,
            public_dir=self.public_dir,
            sample_submission=self.sample_submission,
            timeout_s=self.exec_timeout,
            backend=self.sandbox,
            llm_error=cand.llm_error,
            slots=self.exec_slots,
            limits=(self.limits or Limits()).shared(concurrent),
            held=self.held,
        )


StrategyContext = RunContext  # the strategy graphs' context: the run's, as for the tree search


class StrategyInput(TypedDict, total=False):
    """What a strategy graph is asked: the request, a label naming its workspaces, a seed."""

    request: str
    label: str
    seed: int
    # the script a debug or improve request shows (the parent node's): a first answer that is a
    # fragment of it runs in its place (`nodes.execute.parent_splice`)
    parent_code: str


class StrategyOutput(TypedDict, total=False):
    """One executed candidate: `result` = {candidate, execution, details}."""

    result: dict


def services_of(runtime: Runtime[StrategyContext]) -> StrategyServices:
    """The live services of this run's context: the attached ones, else those the CLI's builder
    makes for the context's plain settings (once per thread and context; graphs.services)."""
    ctx = runtime.context if runtime.context is not None else StrategyContext()
    if ctx.services is not None:
        return ctx.services
    from graphs.services import strategy_services_for  # the builder imports the strategy graphs

    thread = (get_config().get("configurable") or {}).get("thread_id") or "solve"
    return strategy_services_for(ctx, safe_name(str(thread)))


def request_of(state: dict) -> str:
    """The request to answer; alone on a task, a first draft."""
    return state.get("request") or draft_prompt([])


def label_of(state: dict) -> str:
    """Names the workspaces of this expansion: the given label, else the thread (Studio)."""
    if state.get("label"):
        return str(state["label"])
    thread = (get_config().get("configurable") or {}).get("thread_id") or "solve"
    return safe_name(str(thread))


def safe_name(text: str) -> str:
    """`text` as a file name: letters, digits, '.', '_' and '-' only, at most 120 characters."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:120]


def seed_of(state: dict, *parts: object) -> int:
    """A deterministic per-call seed derived from the input seed (same on a replay)."""
    text = "|".join(str(p) for p in (state.get("seed", 0), *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def emit(runtime: Runtime[Any], **event: Any) -> None:
    """Send a progress event to the custom stream (shown by the CLI's progress display)."""
    if runtime.stream_writer is not None:
        runtime.stream_writer(event)


def execute_with_repairs(
    runtime: Runtime[StrategyContext], cand: Candidate, workspace: Path, *, concurrent: int = 1,
    parent: str = "", **where: Any
) -> tuple[Candidate, Execution, list[dict[str, Any]]]:
    """Execute `cand` in `workspace`, repairing a static failure or an early crash up to the
    context's `repairs` times: (the script kept, its execution, the repair records). The first
    run uses `workspace`, a rerun `workspace`-N beside it; the returned candidate's usage
    is `cand`'s plus the repair calls and the seconds of every execution. `parent`: the script
    the request showed, where a fragment answer is put (`run_with_repairs`). `concurrent`: how many
    scripts of the expansion may run at the same time (they share the run's limits). `where`
    (candidate/total or round/rounds) goes into the progress events."""
    svc = services_of(runtime)
    ctx = runtime.context if runtime.context is not None else StrategyContext()
    limit = max(0, ctx.repairs)

    def on_repair(attempt: int, need: Any) -> None:
        emit(runtime, kind="strategy", stage="repairing", attempt=attempt,
             detail=f"repair {attempt}/{limit}, {need.stage}: {need.summary}"[:200], **where)

    def run(c: Candidate, attempt: int) -> Execution:
        # a rerun gets a workspace of its own beside the first: a repair that is set aside
        # leaves the step with the earlier run, whose files (its submission) must stay
        where_to = workspace if attempt == 0 else workspace.with_name(f"{workspace.name}-{attempt}")
        return svc.execute(c, where_to, concurrent=concurrent)

    return run_with_repairs(cand, run, svc.coder, svc.system_text,
                            system_prompt=svc.coder_system_prompt, max_repairs=limit,
                            early_crash_s=ctx.repair_window_s, known=ctx.known_errors,
                            auto_imports=ctx.auto_imports, outline=ctx.outline_names,
                            revert=ctx.revert_repairs, splice=ctx.splice_fragments, on_repair=on_repair,
                            parent=parent, python=svc.limits.python if svc.limits is not None else None,
                            vectorize=svc.public_dir if ctx.vectorize_strings else None, data=svc.public_dir)


def result(candidate: Candidate, execution: Execution, usage: Usage, **details: Any) -> dict:
    """The output every strategy returns: the kept candidate carrying the whole expansion's cost."""
    kept = candidate.model_copy(update={"usage": usage})
    return {
        "result": {"candidate": kept.model_dump(), "execution": execution.model_dump(), "details": details}
    }
