"""Building a run's live services from its settings: the chat clients, the stable prompt prefix,
the node store's index, the hidden grader and, for a strategy other than `aide`, the compiled
expansion graph with its runtime context. Shared by the CLI and the Studio entry points."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.graders import GRADERS, grade_submission
from benchmark.medals import medal_thresholds, read_leaderboard, report_for
from graphs.registry import strategy_builder
from graphs.settings import HiddenGrade, HiddenGrader, RunServices, RunSettings
from graphs.strategy import StrategyContext, StrategyServices
from nodes.direction import decide_direction
from nodes.sample import SamplingSupport
from nodes.structured import StructuredOutputSupport
from nodes.task_context import build_task_context
from nodes.tree import NodeStore
from serving.llm import EndpointError, LLMSettings, list_endpoint_models, make_chat_model
from tasks.competition import Competition, CompetitionError


def build_run_services(
    settings: RunSettings, comp: Competition, run_path: Path, store: NodeStore, base_url: str, model: str,
    say: Callable[[str], None],
) -> RunServices:
    """Everything the search graph's nodes use; `services.settings` has the model and metric filled in."""
    if settings.model != model:
        settings = settings.model_copy(update={"model": model})
    llm_settings = LLMSettings(
        base_url=base_url, model=model, temperature=settings.temperature, top_p=settings.top_p,
        max_tokens=settings.max_tokens, timeout_s=settings.llm_timeout,
        max_retries=settings.llm_retries, system_prompt=settings.system_prompt).resolved()
    llm = make_chat_model(llm_settings)
    use_system = bool(llm_settings.system_prompt)
    settings, system_text = _prepare_prompts(settings, comp, store, llm, use_system, say)
    lower = bool(settings.lower_is_better)
    services = RunServices(
        settings=settings, run_dir=run_path, competition=comp, llm=llm,
        system_text=system_text, use_system_prompt=use_system, store=store,
        tree=store.load_tree(lower), lower_is_better=lower,
        structured=StructuredOutputSupport(), hidden_grader=hidden_grader_for(comp),
    )
    builder = strategy_builder(settings.strategy)
    if builder is not None:
        services.expander = builder().compile()  # inherits the search's checkpointer
        services.strategy_context = strategy_context(settings, services, base_url, model)
    return services


def check_model(base_url: str, model: str | None) -> list[str]:
    served = list_endpoint_models(base_url)
    if model and served and model not in served:
        raise EndpointError(
            f"model '{model}' is not served by {base_url} (it serves: {', '.join(served[:5])})")
    return served


def strategy_context(settings: RunSettings, svc: RunServices, base_url: str, model: str) -> StrategyContext:
    """The strategy graphs' runtime context for this run, with its live services attached."""
    planner, planner_system = svc.llm, svc.use_system_prompt
    if settings.planner_base_url or settings.planner_model or settings.planner_temperature is not None:
        p_url = settings.planner_base_url or base_url
        p_model = settings.planner_model or (model if p_url == base_url else check_model(p_url, None)[0])
        p_settings = LLMSettings(
            base_url=p_url, model=p_model, temperature=settings.planner_temperature, top_p=settings.top_p,
            max_tokens=settings.max_tokens, timeout_s=settings.llm_timeout, max_retries=settings.llm_retries,
            system_prompt=settings.system_prompt if p_model == model else None).resolved()
        planner = make_chat_model(p_settings)
        planner_system = bool(p_settings.system_prompt)
    services = StrategyServices(
        coder=svc.llm, planner=planner, system_text=svc.system_text,
        coder_system_prompt=svc.use_system_prompt, planner_system_prompt=planner_system,
        public_dir=svc.competition.public_dir, sample_submission=svc.competition.sample_submission,
        work_dir=svc.run_dir / "workspaces", exec_timeout=settings.exec_timeout, sandbox=settings.sandbox,
        lower_is_better=svc.lower_is_better, sampling=sampling_support(settings),
        exec_slots=threading.BoundedSemaphore(settings.workers), structured=svc.structured,
        limits=settings.limits(),
    )
    return StrategyContext(samples=settings.samples, rounds=settings.rounds, workers=settings.workers,
                           sampling=settings.sampling, judge=settings.judge, services=services)


def sampling_support(settings: RunSettings) -> SamplingSupport:
    """How self-consistency samples on this run's endpoint; the embedded server is known to
    ignore `n` (one choice comes back), so it is not probed."""
    support = SamplingSupport(settings.sampling)
    if not settings.base_url:
        support.learn(False, "the embedded llama-cpp-python server ignores n")
    return support


def check_task_files(comp: Competition) -> None:
    """Refuse a task the run could not use or grade: unreadable CSVs, a grader nobody knows.
    Raises CompetitionError (one line)."""
    for role, path in (("sample submission", comp.sample_submission), ("answers", comp.answers)):
        if path is None:
            continue
        try:
            pd.read_csv(path, nrows=5)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CompetitionError(f"{role} file {path} cannot be read as CSV: {reason}") from exc
    if comp.grader and comp.grader not in GRADERS and mlebench_grader_for(comp) is None:
        raise CompetitionError(
            f"task {comp.root}: unknown grader '{comp.grader}' (known: {', '.join(sorted(GRADERS))}; "
            "MLE-bench's own graders need the mlebench package)")


def hidden_grader_for(comp: Competition) -> HiddenGrader | None:
    """Grades submissions on the task's private answers: with MLE-bench's own grader when the
    `mlebench` package is installed and knows the competition, else with ours when the task has
    answers and a grader we know."""
    official = mlebench_grader_for(comp)
    if official is not None:
        return official
    if comp.answers is None or comp.grader not in GRADERS:
        return None
    answers = pd.read_csv(comp.answers)

    def grade(path: Path) -> HiddenGrade:
        result = grade_submission(comp.grader, path, answers)  # type: ignore[arg-type]
        return HiddenGrade(score=result.score, valid=result.valid, reason=result.reason)

    return grade


def mlebench_grader_for(comp: Competition) -> HiddenGrader | None:
    """MLE-bench's `grade_csv` for a competition in its data dir (`<data dir>/<id>/prepared/`);
    None when the package is not installed or does not know the competition."""
    try:
        from mlebench.grade import grade_csv
        from mlebench.registry import registry
    except ImportError:
        return None
    try:
        competition = registry.set_data_dir(comp.root.parent).get_competition(comp.id)
    except Exception:  # noqa: BLE001 - an unknown id is simply not an MLE-bench competition
        return None

    def grade(path: Path) -> HiddenGrade:
        report = grade_csv(Path(path), competition)
        valid = bool(report.valid_submission)
        return HiddenGrade(score=report.score if valid else None, valid=valid,
                           reason=None if valid else "mlebench: the submission could not be graded")

    return grade


def medal_reporter_for(comp: Competition, lower_is_better: bool) -> Any:
    """MLE-bench's report (thresholds, medals, above median) for a test score, given a leaderboard."""
    if comp.leaderboard is None or comp.answers is None:
        return None
    thresholds = medal_thresholds(read_leaderboard(comp.leaderboard), lower_is_better)

    def report(score: float | None) -> dict[str, Any]:
        return report_for(comp.id, score, thresholds).model_dump()

    return report


def _prepare_prompts(
    settings: RunSettings, comp: Competition, store: NodeStore, llm: Any, use_system: bool, say: Any
) -> tuple[RunSettings, str]:
    """The run's stable prompt prefix (stored, so a resume reuses it byte for byte)."""
    system_text = store.get_meta("system_text")
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
    settings = settings.model_copy(update={"lower_is_better": lower, "metric_name": metric})
    if not isinstance(system_text, str):
        ctx = build_task_context(comp.description, comp.public_dir, time_limit_s=settings.exec_timeout,
                                 metric_name=metric, lower_is_better=lower,
                                 sample_submission=comp.sample_submission)
        system_text = ctx.system_prompt()
        store.set_meta("system_text", system_text)
    return settings, system_text


