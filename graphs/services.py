"""Building a run's live services from its settings: the chat clients, the stable prompt prefix,
the node store's index, the hidden grader and, for a strategy other than `aide`, the compiled
expansion graph with its runtime context. Shared by the CLI and the Studio entry points."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.graders import grade_submission, resolve_grader
from benchmark.medals import medal_thresholds, read_leaderboard, report_for
from benchmark.task_grader import TaskGrader
from graphs.registry import strategy_builder
from graphs.settings import HiddenGrade, HiddenGrader, RunServices, RunSettings
from graphs.strategy import StrategyContext, StrategyServices
from nodes.direction import decide_direction
from nodes.sample import SamplingSupport
from nodes.structured import StructuredOutputSupport
from nodes.task_context import build_task_context
from nodes.tree import NodeStore
from serving.llm import (
    EndpointError,
    LLMSettings,
    endpoint_context_length,
    list_endpoint_models,
    make_chat_model,
    token_budget,
)
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
        max_retries=settings.llm_retries, system_prompt=settings.system_prompt,
        reasoning_budget=settings.reasoning_budget,
        context_len=settings.context_length or endpoint_context_length(base_url, model)).resolved()
    llm = make_chat_model(llm_settings, on_detect=say)
    say_caps(llm, say)
    use_system = bool(llm_settings.system_prompt)
    settings, system_text = _prepare_prompts(settings, comp, store, llm, use_system, say)
    lower = bool(settings.lower_is_better)
    services = RunServices(
        settings=settings, run_dir=run_path, competition=comp, llm=llm,
        system_text=system_text, use_system_prompt=use_system, store=store,
        tree=store.load_tree(lower), lower_is_better=lower,
        structured=StructuredOutputSupport(), hidden_grader=hidden_grader_for(comp, say),
    )
    builder = strategy_builder(settings.strategy)
    if builder is not None:
        services.expander = builder().compile()  # inherits the search's checkpointer
        services.strategy_context = strategy_context(settings, services, base_url, model)
    return services


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


def strategy_context(settings: RunSettings, svc: RunServices, base_url: str, model: str) -> StrategyContext:
    """The strategy graphs' runtime context for this run, with its live services attached."""
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
        limits=settings.limits(),
    )
    return StrategyContext(samples=settings.samples, rounds=settings.rounds, workers=settings.workers,
                           sampling=settings.sampling, judge=settings.judge, repairs=settings.repairs,
                           repair_window_s=settings.repair_window_s, known_errors=settings.known_errors,
                           services=services)


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


def hidden_grader_for(comp: Competition, say: Callable[[str], None] | None = None) -> HiddenGrader | None:
    """Grades submissions on the task's private answers, out of the agent's sight. In order:
    MLE-bench's `grade_csv` when the `mlebench` package knows the competition; the task's own
    `grade.py` (or its config's `grade_fn`) in a separate process when it loads here; our grader
    of the same name (MLE-bench's names mapped by `resolve_grader`). None, with one warning line
    through `say`, when none applies: the run goes on without hidden grading."""
    grader, how = hidden_grading_plan(comp)
    if say is not None and comp.answers is not None:
        say(f"hidden grading: {how}")
    return grader


def hidden_grading_plan(comp: Competition) -> tuple[HiddenGrader | None, str]:
    """(the hidden grader or None, one line saying which grader it is or why there is none)."""
    if comp.answers is None:
        return None, "none (the task has no answers)"
    official = mlebench_grader_for(comp)
    if official is not None:
        return official, f"MLE-bench's grader for '{comp.id}'"
    own_failure = None
    for task_grader in _own_graders(comp):
        own_failure = task_grader.check()
        if own_failure is None:
            answers = Path(comp.answers)

            def grade_own(path: Path, g: TaskGrader = task_grader) -> HiddenGrade:
                result = g.grade(Path(path), answers)
                return HiddenGrade(score=result.score, valid=result.valid, reason=result.reason)

            return grade_own, f"the task's own grader ({task_grader.label}, in a separate process)"
    ours, _lower = resolve_grader(comp.grader)
    if ours is not None:
        answers_df = pd.read_csv(comp.answers)

        def grade(path: Path) -> HiddenGrade:
            result = grade_submission(ours, path, answers_df)
            return HiddenGrade(score=result.score, valid=result.valid, reason=result.reason)

        named = f"'{comp.grader}' as our '{ours}'" if ours != comp.grader else f"'{ours}'"
        extra = f" (the task's own grader does not load here: {own_failure})" if own_failure else ""
        return grade, f"grader {named}{extra}"
    why = (f"warning: grader '{comp.grader}' is unknown here" if comp.grader
           else "warning: the task names no grader")
    if own_failure:
        why += f" and the task's own grader does not load here ({own_failure})"
    return None, why + "; the run goes on without hidden grading"


def _own_graders(comp: Competition) -> list[TaskGrader]:
    graders = []
    if comp.grade_py is not None:
        graders.append(TaskGrader(grade_py=comp.grade_py))
    if comp.grade_fn:
        graders.append(TaskGrader(grade_fn=comp.grade_fn))
    return graders


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
                                 sample_submission=comp.sample_submission, python=settings.python,
                                 gpus=settings.gpus, data_facts=settings.data_facts)
        system_text = ctx.system_prompt()
        store.set_meta("system_text", system_text)
    return settings, system_text


