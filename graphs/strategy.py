"""What the three inference-time-scaling strategy graphs share: their runtime context, the live
services behind it, their input and output, and small helpers.

A strategy graph turns one *request* (a draft, improve or debug prompt; by default a first draft
of the task) into one executed candidate. The tree search calls it as its node-expansion
operator; Studio, notebooks and tests invoke it alone. Per-run settings travel in the runtime
context (`StrategyContext`, plain values Studio can send); the live objects built from them
(chat clients, the stable prompt prefix, the sandbox slots) are `StrategyServices`, attached by
the CLI or built once per distinct context.

Repairs inside a step apply to every executed candidate: one that fails the static check or
crashes within `repair_window_s` gets up to `repairs` quick repair calls (`nodes.repair`, role
`repairer`, on the coder) inside the node that executes it, before it is selected or reflected
on (`execute_with_repairs`). The repair settings are plain context values, so the CLI
(`graphs.services.strategy_context`, from the run's settings) and Studio set them alike.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.config import get_config
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from nodes.candidate import Candidate
from nodes.direction import decide_direction
from nodes.draft import draft_prompt
from nodes.execute import Execution, execute_script
from nodes.repair import DEFAULT_REPAIRS, EARLY_CRASH_S, run_with_repairs
from nodes.sample import SamplingSupport
from nodes.structured import StructuredOutputSupport
from nodes.task_context import build_task_context
from nodes.usage import Usage
from sandbox.limits import Limits
from serving.llm import (
    LLMSettings,
    endpoint_context_length,
    list_endpoint_models,
    make_chat_model,
    model_profile,
)
from tasks.competition import load_competition


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

    def execute(self, cand: Candidate, workspace: Path) -> Execution:
        """Check and run a candidate in `workspace` (bounded by the run's worker slots)."""
        return execute_script(
            cand.code,
            workspace,
            public_dir=self.public_dir,
            sample_submission=self.sample_submission,
            timeout_s=self.exec_timeout,
            backend=self.sandbox,
            llm_error=cand.llm_error,
            slots=self.exec_slots,
            limits=self.limits,
            held=self.held,
        )


@dataclass
class StrategyContext:
    """Runtime context of the strategy graphs (LangGraph `context_schema`).

    The first group sets the strategies; the second says where the task and the models are
    when no live services are attached (Studio, notebooks): `base_url` defaults to the
    ITS_MLE_BASE_URL environment variable, `model` to the first model the endpoint serves,
    and the planner to the coder's endpoint and model.
    """

    samples: int = 4  # self-consistency: N
    rounds: int = 3  # self-reflection / planner-coder: executions per expansion at most
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # scripts run at once
    sampling: str = "auto"  # "n": one request with n choices, "concurrent", or "auto"-detect
    judge: bool = True  # let an LLM judge settle selections the metric cannot
    repairs: int = DEFAULT_REPAIRS  # quick repair calls per executed candidate (0: none)
    repair_window_s: float = EARLY_CRASH_S  # a crash within this many seconds counts as early
    known_errors: bool = True  # repair prompts name the usual remedy of a known error
    temperature: float | None = None  # None: the model family's default (R1: 0.6)
    planner_temperature: float | None = None
    task_dir: str = ""
    base_url: str = ""
    model: str = ""
    planner_base_url: str = ""
    planner_model: str = ""
    max_tokens: int = 4096  # the coder's answer cap
    reasoning_budget: int | None = None  # thinking tokens on top of answer caps (None: by model)
    llm_timeout: float = 900.0
    exec_timeout: float = 600.0
    sandbox: str = "auto"
    work_dir: str = "runs/studio"
    services: Any = None  # StrategyServices (typed Any so Studio can derive a schema)


class StrategyInput(TypedDict, total=False):
    """What a strategy graph is asked: the request, a label naming its workspaces, a seed."""

    request: str
    label: str
    seed: int


class StrategyOutput(TypedDict, total=False):
    """One executed candidate: `result` = {candidate, execution, details}."""

    result: dict


def services_of(runtime: Runtime[StrategyContext]) -> StrategyServices:
    """The live services for this run's context (built once per distinct context)."""
    ctx = runtime.context if runtime.context is not None else StrategyContext()
    if ctx.services is not None:
        return ctx.services
    key = tuple((f.name, getattr(ctx, f.name)) for f in fields(ctx) if f.name != "services")
    with _CACHE_LOCK:
        if key not in _SERVICES:
            _SERVICES[key] = build_services(ctx)
        return _SERVICES[key]


_SERVICES: dict[tuple, StrategyServices] = {}
_CACHE_LOCK = threading.Lock()


def _client(
    base_url: str, model: str, temperature: float | None, ctx: StrategyContext
) -> tuple[BaseChatModel, bool]:
    llm = make_chat_model(
        LLMSettings(
            base_url=base_url,
            model=model,
            temperature=temperature,
            max_tokens=ctx.max_tokens,
            reasoning_budget=ctx.reasoning_budget,
            context_len=endpoint_context_length(base_url, model),
            timeout_s=ctx.llm_timeout,
        )
    )
    return llm, bool(model_profile(model)["system_prompt"])


def build_services(ctx: StrategyContext) -> StrategyServices:
    """Services from the context's plain settings (the path Studio and notebooks take)."""
    if not ctx.task_dir:
        raise ValueError("the run context needs task_dir (a competition directory)")
    base_url = ctx.base_url or os.environ.get("ITS_MLE_BASE_URL", "")
    if not base_url:
        raise ValueError("the run context needs base_url (or set ITS_MLE_BASE_URL)")
    model = ctx.model or (list_endpoint_models(base_url) or [""])[0]
    coder, coder_sys = _client(base_url, model, ctx.temperature, ctx)
    p_url = ctx.planner_base_url or base_url
    p_model = ctx.planner_model or (model if p_url == base_url else (list_endpoint_models(p_url) or [""])[0])
    planner, planner_sys = _client(p_url, p_model, ctx.planner_temperature, ctx)
    comp = load_competition(ctx.task_dir)
    lower = comp.lower_is_better
    if lower is None:
        lower, _ = decide_direction(coder, comp.description, comp.public_dir, time_limit_s=ctx.exec_timeout,
                                    metric_name=comp.grader, sample_submission=comp.sample_submission,
                                    system_prompt=coder_sys)
    text = build_task_context(
        comp.description,
        comp.public_dir,
        time_limit_s=ctx.exec_timeout,
        metric_name=comp.grader,
        lower_is_better=lower,
        sample_submission=comp.sample_submission,
    ).system_prompt()
    return StrategyServices(
        coder=coder,
        planner=planner,
        system_text=text,
        coder_system_prompt=coder_sys,
        planner_system_prompt=planner_sys,
        public_dir=comp.public_dir,
        sample_submission=comp.sample_submission,
        work_dir=Path(ctx.work_dir).expanduser().resolve(),
        exec_timeout=ctx.exec_timeout,
        sandbox=ctx.sandbox,
        lower_is_better=bool(lower),
        sampling=SamplingSupport(ctx.sampling),  # type: ignore[arg-type]
        exec_slots=threading.BoundedSemaphore(max(1, ctx.workers)),
    )


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
    runtime: Runtime[StrategyContext], cand: Candidate, workspace: Path, **where: Any
) -> tuple[Candidate, Execution, list[dict[str, Any]]]:
    """Execute `cand` in `workspace`, repairing a static failure or an early crash up to the
    context's `repairs` times: (the last script, its execution, the repair records). Every run
    uses the same workspace (each execution starts it afresh); the returned candidate's usage
    is `cand`'s plus the repair calls. `where` (candidate/total or round/rounds) goes into the
    progress events."""
    svc = services_of(runtime)
    ctx = runtime.context if runtime.context is not None else StrategyContext()
    limit = max(0, ctx.repairs)

    def on_repair(attempt: int, need: Any) -> None:
        emit(runtime, kind="strategy", stage="repairing", attempt=attempt,
             detail=f"repair {attempt}/{limit}, {need.stage}: {need.summary}"[:200], **where)

    return run_with_repairs(cand, lambda c, _attempt: svc.execute(c, workspace), svc.coder, svc.system_text,
                            system_prompt=svc.coder_system_prompt, max_repairs=limit,
                            early_crash_s=ctx.repair_window_s, known=ctx.known_errors, on_repair=on_repair)


def result(candidate: Candidate, execution: Execution, usage: Usage, **details: Any) -> dict:
    """The output every strategy returns: the kept candidate carrying the whole expansion's cost."""
    kept = candidate.model_copy(update={"usage": usage})
    return {
        "result": {"candidate": kept.model_dump(), "execution": execution.model_dump(), "details": details}
    }
