"""Building a run's live services from its settings: the chat clients, the stable prompt prefix,
the node store's index, the hidden grader and, for a strategy other than `aide`, the compiled
expansion graph with its runtime context. One builder (`build_run_services`) for every way a run
starts: the CLI calls it, and a graph given plain settings (Studio, notebooks) gets it through
`services_for` / `strategy_services_for`, cached per thread and settings, closed when evicted."""

from __future__ import annotations

import atexit
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from grading.hidden import HiddenGrader, grading_plan, hidden_grader_for
from graphs.persistence import HELD_FILES, keep_run_files, live_url, open_node_store, restore_run_files
from graphs.registry import strategy_builder
from graphs.settings import RunContext, RunServices, RunSettings
from graphs.strategy import StrategyServices
from nodes.direction import decide_direction
from nodes.sample import SamplingSupport
from nodes.structured import StructuredOutputSupport
from nodes.task_context import build_task_context
from nodes.tree import BaseNodeStore, Tree
from serving.llm import (
    EndpointError,
    LLMSettings,
    endpoint_context_length,
    list_endpoint_models,
    make_chat_model,
    token_budget,
)
from tasks.competition import Competition, CompetitionError, load_competition
from tasks.holdout import (
    HOLDOUT_DIR,
    HeldSplit,
    HoldoutPlan,
    Unsplittable,
    give_up,
    prepare_split,
    read_table,
)


def build_run_services(
    settings: RunSettings, comp: Competition, run_path: Path, store: BaseNodeStore, base_url: str, model: str,
    say: Callable[[str], None],
) -> RunServices:
    """Everything the search graph's nodes use; `services.settings` has the model and metric filled in."""
    if settings.model != model:
        settings = settings.model_copy(update={"model": model})
    llm_settings = LLMSettings(
        base_url=base_url, model=model, temperature=settings.temperature, top_p=settings.top_p,
        max_tokens=settings.max_tokens, timeout_s=settings.llm_timeout,
        max_retries=settings.llm_retries, system_prompt=settings.system_prompt,
        reasoning_budget=settings.reasoning_budget,
        context_len=settings.context_length or endpoint_context_length(base_url, model)).resolved()
    llm = make_chat_model(llm_settings, on_detect=say)
    say_caps(llm, say)
    use_system = bool(llm_settings.system_prompt)
    plan = planned_split(settings, comp, run_path, store)
    settings = decide_metric(settings, agent_competition(comp, plan, run_path), llm, use_system, say)
    lower = bool(settings.lower_is_better)
    held, agent_comp, selection = held_split_for(settings, comp, run_path, plan)
    keep_run_files(store, run_path, *HELD_FILES)  # before the prefix marks the run as begun
    system_text = stable_prefix(settings, agent_comp, store)
    say(selection["line"])
    services = RunServices(
        settings=settings, run_dir=run_path, competition=agent_comp, llm=llm,
        system_text=system_text, use_system_prompt=use_system, store=store,
        tree=Tree(lower), lower_is_better=lower,
        structured=StructuredOutputSupport(), hidden_grader=hidden_grader_for(comp, say),
        held=held, selection=selection,
    )
    builder = strategy_builder(settings.strategy)
    if builder is not None:
        services.expander = builder().compile()  # inherits the search's checkpointer
        services.strategy_context = strategy_context(settings, services, base_url, model)
    return services


def planned_split(settings: RunSettings, comp: Competition, run_path: Path,
                  store: BaseNodeStore) -> HoldoutPlan | Unsplittable:
    """The run's held split (tasks.holdout), stored so a resume reuses it; made only before the
    prompt prefix exists (a new run)."""
    if not settings.holdout:
        return Unsplittable(reason="switched off with --no-holdout")
    fresh = not isinstance(store.get_meta("system_text"), str)
    return prepare_split(comp.public_dir, comp.sample_submission, run_path / HOLDOUT_DIR, seed=settings.seed,
                         fraction=settings.holdout_fraction, may_create=fresh)


def held_split_for(
    settings: RunSettings, comp: Competition, run_path: Path, plan: HoldoutPlan | Unsplittable,
) -> tuple[HeldSplit | None, Competition, dict[str, Any]]:
    """(the run's live held split or None, the task as the agent sees it, the selection record
    for summary.json with its one line for the user). The held rows are scored with the task's
    grader, or for a task that names none, ours of the metric the run uses; that grader must
    score the held rows' own labels, or the run records that it selects by the self-report."""
    root = run_path / HOLDOUT_DIR
    grader, why, line = None, plan.reason if isinstance(plan, Unsplittable) else "", ""
    if isinstance(plan, HoldoutPlan):
        named = comp if comp.grader else comp.model_copy(update={"grader": settings.metric_name})
        grader, line = grading_plan(named, root / "answers.csv")
        problem = "the task's grader is not available here" if grader is None else _self_check(grader, root)
        if problem is not None:
            why = give_up(root, problem).reason
            grader = None
    if isinstance(plan, HoldoutPlan) and grader is not None:
        held = HeldSplit(plan=plan, root=root,
                         real_sample=read_table(comp.sample_submission),  # type: ignore[arg-type]
                         grade=grader, grader_name=line, lower_is_better=bool(settings.lower_is_better))
        return held, agent_competition(comp, plan, run_path), {
            "by": "holdout", "rows": plan.rows, "line": held.describe()}
    return None, comp, {"by": "self_report", "reason": why, "line": (
        f"no held validation split ({why}): selection uses the scripts' own METRIC lines")}


def _self_check(grader: HiddenGrader, root: Path) -> str | None:
    """None when the grader scores the held rows' labels submitted as predictions, else why not."""
    try:
        check = grader(root / "answers.csv")
    except Exception as exc:  # noqa: BLE001 - a grader that cannot score them means no split
        return f"the task's grader cannot score held training rows: {type(exc).__name__}: {exc}"[:300]
    if check.valid and check.score is not None:
        return None
    return f"the task's grader cannot score held training rows: {check.reason or 'not gradable'}"[:300]


def agent_competition(comp: Competition, plan: HoldoutPlan | Unsplittable, run_path: Path) -> Competition:
    """The task as the agent sees it: the held split's view instead of the public files."""
    view = run_path / HOLDOUT_DIR / "view"
    if not isinstance(plan, HoldoutPlan) or not view.is_dir():
        return comp
    return comp.model_copy(update={"public_dir": view, "sample_submission": view / plan.sample_table})


def say_caps(llm: Any, say: Callable[[str], None]) -> None:
    """One line on the generation caps when the model is known to think (by name or budget)."""
    budget = token_budget(llm)
    if budget is None or not budget.reasoning:
        return
    context = (f"bounded by the context of {budget.context_len} tokens" if budget.context_len
               else "not bounded by a context length (the endpoint reports none; see --context-length)")
    say(f"reasoning model ({budget.known_by}): every answer cap gets {budget.thinking_tokens()} "
        f"thinking tokens on top, {context}")


def check_model(base_url: str, model: str | None) -> list[str]:
    served = list_endpoint_models(base_url)
    if model and served and model not in served:
        raise EndpointError(
            f"model '{model}' is not served by {base_url} (it serves: {', '.join(served[:5])})")
    return served


def strategy_context(settings: RunSettings, svc: RunServices, base_url: str, model: str) -> RunContext:
    """The strategy graphs' runtime context for this run: its settings, with the live services
    attached."""
    planner, planner_system = svc.llm, svc.use_system_prompt
    if settings.planner_base_url or settings.planner_model or settings.planner_temperature is not None:
        p_url = settings.planner_base_url or base_url
        p_model = settings.planner_model or (model if p_url == base_url else check_model(p_url, None)[0])
        same_server = p_url == base_url and p_model == model
        p_settings = LLMSettings(
            base_url=p_url, model=p_model, temperature=settings.planner_temperature, top_p=settings.top_p,
            max_tokens=settings.max_tokens, timeout_s=settings.llm_timeout, max_retries=settings.llm_retries,
            system_prompt=settings.system_prompt if p_model == model else None,
            reasoning_budget=settings.reasoning_budget,
            context_len=(settings.context_length if same_server else None)
            or endpoint_context_length(p_url, p_model)).resolved()
        planner = make_chat_model(p_settings)
        planner_system = bool(p_settings.system_prompt)
    services = StrategyServices(
        coder=svc.llm, planner=planner, system_text=svc.system_text,
        coder_system_prompt=svc.use_system_prompt, planner_system_prompt=planner_system,
        public_dir=svc.competition.public_dir, sample_submission=svc.competition.sample_submission,
        work_dir=svc.run_dir / "workspaces", exec_timeout=settings.exec_timeout, sandbox=settings.sandbox,
        lower_is_better=svc.lower_is_better, sampling=sampling_support(settings),
        exec_slots=threading.BoundedSemaphore(settings.workers), structured=svc.structured,
        limits=settings.limits(), held=svc.held,
    )
    return attached_context(svc, services)


def attached_context(svc: RunServices, services: Any = None) -> RunContext:
    """A graph's runtime context for a run whose services are built: its settings (the same
    model Studio sends) with `services` (default: the run's own) attached."""
    return RunContext(**svc.settings.model_dump(), run_dir=str(svc.run_dir.parent),
                      services=svc if services is None else services)


def sampling_support(settings: RunSettings) -> SamplingSupport:
    """How self-consistency samples on this run's endpoint; the embedded server is known to
    ignore `n` (one choice comes back), so it is not probed."""
    support = SamplingSupport(settings.sampling)
    if not settings.base_url and not settings.vllm_model:  # a vLLM server is probed like any endpoint
        support.learn(False, "the embedded llama-cpp-python server ignores n")
    return support


def check_task_files(comp: Competition) -> None:
    """Refuse a task the run could not use: unreadable CSVs. Raises CompetitionError (one line).
    A grader name we do not know is not bad input: the run goes on (see `hidden_grader_for`)."""
    for role, path in (("sample submission", comp.sample_submission), ("answers", comp.answers)):
        if path is None:
            continue
        try:
            pd.read_csv(path, nrows=5)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CompetitionError(f"{role} file {path} cannot be read as CSV: {reason}") from exc


def decide_metric(
    settings: RunSettings, comp: Competition, llm: Any, use_system: bool, say: Any,
) -> RunSettings:
    """Settings with the metric's name and direction: as given, as the task says, or as the model
    reads them off the description (asked once; run.json keeps the answer for a resume)."""
    lower = settings.lower_is_better if settings.lower_is_better is not None else comp.lower_is_better
    metric = settings.metric_name or comp.grader
    if lower is None:
        lower, metric = decide_direction(llm, comp.description, comp.public_dir,
                                         time_limit_s=settings.exec_timeout, metric_name=metric,
                                         sample_submission=comp.sample_submission, system_prompt=use_system)
        if lower is None:
            lower = False
            say("could not tell the metric direction from the description; assuming higher is better")
        else:
            say(f"metric: {metric}, {'lower' if lower else 'higher'} is better (asked the model)")
    return settings.model_copy(update={"lower_is_better": lower, "metric_name": metric})


def stable_prefix(settings: RunSettings, comp: Competition, store: BaseNodeStore) -> str:
    """The run's stable prompt prefix (stored, so a resume reuses it byte for byte)."""
    system_text = store.get_meta("system_text")
    if not isinstance(system_text, str):
        lower = bool(settings.lower_is_better)
        ctx = build_task_context(comp.description, comp.public_dir, time_limit_s=settings.exec_timeout,
                                 metric_name=settings.metric_name, lower_is_better=lower,
                                 sample_submission=comp.sample_submission, python=settings.python,
                                 gpus=settings.gpus, data_facts=settings.data_facts)
        system_text = ctx.system_prompt()
        store.set_meta("system_text", system_text)
    return system_text


_CACHED = 8  # plain-context services kept at most; the oldest is closed when a ninth is built
_BUILT: OrderedDict[str, RunServices] = OrderedDict()
_BUILT_LOCK = threading.Lock()


def services_for(ctx: RunContext, thread: str) -> RunServices:
    """The run services of a graph given plain settings (Studio, notebooks): built once per
    thread and settings with `build_run_services`, the run kept under `ctx.run_dir/<run id>/`
    (the run id: `ctx.run_id`, else the thread), the endpoint `ctx.base_url` or $ITS_MLE_BASE_URL,
    the model `ctx.model` or the first one it serves; its nodes in `nodes.sqlite` there, or with
    `ctx.checkpointer` in that Postgres database (the password from $ITS_MLE_CHECKPOINTER,
    `graphs.persistence.live_url`). No endpoint is started here."""
    settings = ctx.run_settings(thread)
    key = f"{thread}|{Path(ctx.run_dir).expanduser().resolve()}|{settings.model_dump_json()}"
    with _BUILT_LOCK:
        if key in _BUILT:
            _BUILT.move_to_end(key)
            return _BUILT[key]
        services = _build_for(settings, Path(ctx.run_dir))
        _BUILT[key] = services
        while len(_BUILT) > _CACHED:
            _key, old = _BUILT.popitem(last=False)
            old.store.close()
        return services


def strategy_services_for(ctx: RunContext, thread: str) -> StrategyServices:
    """A strategy graph's services for plain settings: the run's (`services_for`), as the tree
    search would hand them to its expansion."""
    svc = services_for(ctx, thread)
    if svc.strategy_context is None:
        svc.strategy_context = strategy_context(svc.settings, svc, svc.settings.base_url or "",
                                                svc.settings.model or "")
    return svc.strategy_context.services


def close_services() -> None:
    """Close every cached plain-context run (their node stores); later calls build afresh."""
    with _BUILT_LOCK:
        while _BUILT:
            _key, old = _BUILT.popitem(last=False)
            old.store.close()


atexit.register(close_services)


def _build_for(settings: RunSettings, run_dir: Path) -> RunServices:
    base_url = settings.base_url or os.environ.get("ITS_MLE_BASE_URL", "")
    if not settings.task_dir or not base_url:
        raise ValueError("the run context needs task_dir and base_url (or set ITS_MLE_BASE_URL)")
    model = settings.model or (list_endpoint_models(base_url) or [""])[0]
    comp = load_competition(settings.task_dir)
    settings = settings.model_copy(update={"task_dir": str(comp.root), "base_url": base_url, "model": model})
    run_path = run_dir.expanduser().resolve() / settings.run_id
    run_path.mkdir(parents=True, exist_ok=True)
    store = open_node_store(run_path, live_url(settings.checkpointer), settings.run_id)
    restore_run_files(store, run_path)
    return build_run_services(settings, comp, run_path, store, base_url, model, lambda _msg: None)
