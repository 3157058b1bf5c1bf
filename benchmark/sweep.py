"""Command line: run a grid of tree searches and aggregate their results.

    python -m benchmark.sweep --tasks DIR [DIR ...] --strategies aide [...] --models SPEC [SPEC ...]
        --seeds K --steps N [--out DIR (default sweeps/latest)] [--exec-timeout SECONDS]
        [--executor local|ray] [--workers N] [--ray-address ADDR] [--checkpointer postgresql://...]
        [--budget-tokens N] [--budget-seconds S] [-- GRAPHS.RUN ARGS FOR EVERY CELL]
    python -m benchmark.sweep --config sweep.yaml [flags that override it]

Model SPEC: ``local:0.5b`` / ``local:1.5b`` (the embedded llama.cpp server), ``NAME@BASE_URL``
(an OpenAI-compatible endpoint serving NAME) or ``vllm:NAME`` (a vLLM server for the Hugging Face
model NAME, started by the sweep once for all the cells of that model and stopped after them;
see `serving.vllm`; ``--tensor-parallel-size`` / ``--max-model-len`` apply to it; its log is
``<out>/logs/vllm-<label>.log``). The grid is tasks x strategies x models x seeds
(seeds 0..K-1); a sweep file (`benchmark.sweep_config`) also gives each strategy and model its own
settings (any `graphs.run` flag) and is saved as ``<out>/sweep.yaml``. Each cell is one
`graphs.run` run under ``<out>/runs/<run id>`` with a deterministic run id, so the sweep can be run
again to continue: a cell with ``summary.json`` is skipped, one with only ``run.json`` is resumed,
others are started. A failing cell is recorded and the sweep goes on. Each cell's output is also
kept in ``<out>/logs/<run id>.log``.

Where cells run (`benchmark.executors`): one after another in this process (default), N at once
in child processes (``--workers N``), or as Ray tasks (``--executor ray``): a local Ray started and
stopped by the sweep, or the cluster at ``--ray-address``. Each cell claims its run while it runs
(`benchmark.cell`), so two drivers on one grid never run a cell twice; a cell whose worker died is
resumed from its checkpoint. Budgets give every cell the same compute, so the table compares
strategies at equal compute.

Outputs in ``<out>`` (see `benchmark.results` for the definitions): ``results.md``,
``results.csv`` (one row per model and strategy), ``per_run.csv`` (one row per cell),
``grade.jsonl`` (input for ``mlebench grade``), ``sweep.yaml`` and ``report.md`` with figures
(`benchmark.sweep_report`).

Errors a user can cause (bad spec, missing task, unknown strategy or setting, unreachable endpoint)
print one line on stderr and exit with code 2 before anything is written.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from benchmark.cell import CellJob, CellOutcome
from benchmark.executors import (
    EXECUTORS,
    Executor,
    ExecutorError,
    InProcessExecutor,
    LocalExecutor,
    RayExecutor,
    ray_address_problem,
)
from benchmark.results import Cell, write_results
from benchmark.sweep_config import ConfigError, SweepFile, check_run_argv, load_sweep_file, settings_argv
from benchmark.sweep_report import write_sweep_report_safely
from grading.hidden import hidden_grading_plan
from graphs.persistence import PersistenceError, check_url, live_url
from graphs.registry import UnknownStrategyError, strategy_builder
from nodes.files import write_atomically
from serving.llm import EndpointError, list_endpoint_models
from serving.process import usable_cores
from serving.vllm import VLLMServer, served_name_for
from serving.weights import LOCAL_MODELS, LocalModelError
from tasks.competition import Competition, CompetitionError, load_competition
from views.cli import EXIT_USAGE, OneLineParser, positive_float, positive_int


class SweepError(Exception):
    """A problem the user can fix; shown as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The sweep's argument parser. With --config the grid comes from the file and the flags
    given beside it override its values."""
    p = OneLineParser(prog="python -m benchmark.sweep", description="Run a grid of tree searches.",
                      epilog="Arguments after a lone '--' go to every cell's graphs.run "
                      "(e.g. -- --samples 8 --max-tokens 2048).")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a sweep file (YAML; see benchmark.sweep_config)")
    p.add_argument("--tasks", nargs="+", default=None, metavar="DIR", help="competition directories")
    p.add_argument("--strategies", nargs="+", default=None, metavar="NAME", help="search strategies")
    p.add_argument("--models", nargs="+", default=None, metavar="SPEC",
                   help="local:0.5b, local:1.5b, NAME@BASE_URL or vllm:HF_MODEL")
    p.add_argument("--seeds", type=positive_int, default=None, metavar="K", help="seeds 0..K-1 per cell")
    p.add_argument("--steps", type=positive_int, default=None, metavar="N", help="nodes per run")
    p.add_argument("--out", default=None, metavar="DIR", help="default sweeps/latest")
    p.add_argument("--exec-timeout", type=positive_float, default=None, metavar="SECONDS")
    p.add_argument("--tensor-parallel-size", type=positive_int, default=None, metavar="N",
                   help="vllm: models: GPUs per server (default 1)")
    p.add_argument("--max-model-len", type=positive_int, default=None, metavar="L",
                   help="vllm: models: context length (default: the model's)")
    gx = p.add_argument_group("where the cells run")
    gx.add_argument("--executor", choices=EXECUTORS, default=None,
                    help="local (default: this machine) or ray (a Ray cluster; pip install '.[ray]')")
    gx.add_argument("--workers", type=positive_int, default=None, metavar="N",
                    help="cells at once (local default 1, in this process; ray default: the cluster's CPUs)")
    gx.add_argument("--ray-address", default=None, metavar="ADDR",
                    help="a running Ray cluster (e.g. auto, ray://head:10001); default: start a local one")
    gx.add_argument("--endpoint-concurrency", type=positive_int, default=None, metavar="K",
                    help="cells at once on one model server (default: --workers; none on Ray)")
    gx.add_argument("--cell-cpus", type=positive_float, default=None, metavar="C",
                    help="CPUs a cell declares to Ray (default 1)")
    gx.add_argument("--checkpointer", default=None, metavar="URL",
                    help="postgresql://... : checkpoints and node records of every cell in that database")
    gb = p.add_argument_group("compute-matched budgets (every cell)")
    gb.add_argument("--budget-tokens", type=positive_int, default=None, metavar="N")
    gb.add_argument("--budget-seconds", type=positive_float, default=None, metavar="S")
    return p


def _split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the sweep's arguments, those after a lone '--' for every cell's graphs.run)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def sweep_file_from(args: argparse.Namespace, passthrough: list[str]) -> SweepFile:
    """The grid as a sweep file: the --config file with the flags given beside it applied, or the
    flags alone."""
    base: dict[str, Any] = {}
    if args.config:
        base = load_sweep_file(args.config).model_dump(mode="json")
    flags = {"tasks": args.tasks, "seeds": args.seeds, "steps": args.steps, "out": args.out,
             "executor": args.executor, "workers": args.workers, "ray_address": args.ray_address,
             "checkpointer": args.checkpointer, "endpoint_concurrency": args.endpoint_concurrency,
             "cell_cpus": args.cell_cpus}
    base.update({k: v for k, v in flags.items() if v is not None})
    if args.strategies is not None:
        base["strategies"] = args.strategies
    if args.models is not None:
        base["models"] = args.models
    if args.budget_tokens is not None or args.budget_seconds is not None:
        budget = dict(base.get("budget") or {})
        budget.update({k: v for k, v in (("tokens", args.budget_tokens), ("seconds", args.budget_seconds))
                       if v is not None})
        base["budget"] = budget
    settings = dict(base.get("settings") or {})
    if args.exec_timeout is not None:
        settings["exec-timeout"] = args.exec_timeout
    base["settings"] = settings
    models = [m if isinstance(m, dict) else {"spec": m} for m in base.get("models") or []]
    for m in models:
        for key in ("tensor_parallel_size", "max_model_len"):
            if getattr(args, key) is not None and m.get(key) is None:
                m[key] = getattr(args, key)
    base["models"] = models
    if passthrough:
        base["passthrough"] = passthrough
    missing = [f"--{k}" for k in ("tasks", "strategies", "models", "seeds", "steps") if not base.get(k)]
    if missing:
        raise SweepError(f"the grid needs {', '.join(missing)} (as flags or in --config FILE)")
    try:
        return SweepFile.model_validate(base)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise SweepError(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from exc


@dataclass(frozen=True)
class ModelSpec:
    """Where a model is served; `label` names it in run ids and tables."""

    label: str
    local: str | None = None  # key of the embedded model
    name: str | None = None
    base_url: str | None = None
    vllm: str | None = None  # Hugging Face model served by a launcher the sweep starts (as `name`)

    def run_args(self, live_url: str | None = None) -> list[str]:
        """The `graphs.run` options that select this model (`live_url`: its launcher's)."""
        if self.local:
            return ["--local-model", self.local]
        return ["--model", str(self.name), "--base-url", str(live_url or self.base_url)]


def parse_model_spec(spec: str) -> ModelSpec:
    """``local:KEY``, ``NAME@BASE_URL`` or ``vllm:HF_MODEL``; SweepError (one line) otherwise."""
    if spec.startswith("vllm:"):
        repo = spec[len("vllm:"):].strip()
        if not repo or any(c.isspace() for c in repo):
            raise SweepError(f"bad model spec '{spec}': use vllm:ORG/MODEL (a Hugging Face model)")
        name = served_name_for(repo)
        return ModelSpec(label=name, name=name, vllm=repo)
    if spec.startswith("local:"):
        key = spec[len("local:"):]
        if key not in LOCAL_MODELS:
            raise SweepError(f"unknown local model '{key}' in '{spec}' (known: "
                             f"{', '.join('local:' + k for k in sorted(LOCAL_MODELS))})")
        return ModelSpec(label=f"local-{key}", local=key)
    match = re.fullmatch(r"([^@\s]+)@(https?://[^\s/]+\S*)", spec)
    if not match:
        raise SweepError(f"bad model spec '{spec}': use local:0.5b, local:1.5b, NAME@http(s)://HOST/... "
                     "or vllm:ORG/MODEL")
    return ModelSpec(label=match[1], name=match[1], base_url=match[2])


def run_id_for(task_id: str, strategy: str, model_label: str, seed: int) -> str:
    """The cell's deterministic run id, reduced to letters, digits, '.', '_' and '-'."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{task_id}__{strategy}__{model_label}__s{seed}")
    if not text[0].isalnum():
        text = "r" + text
    return text[:200]


@dataclass(frozen=True)
class StrategySpec:
    """A strategy of the grid: `label` names its rows and run ids, `argv` its settings."""

    label: str
    name: str
    argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """A validated grid."""

    out: Path
    grid: SweepFile  # what <out>/sweep.yaml records
    tasks: list[Competition]
    strategies: list[StrategySpec]
    models: list[ModelSpec]
    cells: list[Cell]
    common_argv: tuple[str, ...] = ()  # every cell: file settings, budget, checkpointer, passthrough
    model_argv: dict[str, tuple[str, ...]] = field(default_factory=dict)
    model_caps: dict[str, int] = field(default_factory=dict)  # endpoint label -> cells at once
    vllm_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    database: str = ""  # the cells' Postgres URL, with its password ("": SQLite in each run)

    @property
    def seeds(self) -> int:
        return self.grid.seeds

    @property
    def steps(self) -> int:
        return self.grid.steps

    @property
    def local_threads(self) -> int | None:
        """The threads of each local-model cell's llama.cpp server where several cells share a
        machine (None: one cell at a time, which gets every core). llama.cpp's threads sync at
        every layer: two servers of 2 threads on 2 cores decoded at ~1 token/s instead of ~25
        (measured here). Locally: the cores over the workers; on Ray: the CPUs a cell reserves."""
        if self.grid.executor == "ray":
            return max(1, int(self.grid.cell_cpus))
        workers = self.grid.workers or 1
        return max(1, usable_cores() // workers) if workers > 1 else None

    def launcher(self, model: ModelSpec) -> VLLMServer:
        """The vLLM server for a ``vllm:`` model (not started)."""
        options = self.vllm_options.get(model.label, {})
        return VLLMServer(str(model.vllm), served_model_name=model.name,
                          tensor_parallel_size=options.get("tensor_parallel_size") or 1,
                          max_model_len=options.get("max_model_len"),
                          log_path=self.out / "logs" / f"vllm-{model.label}.log")

    def job(self, cell: Cell, live_url: str | None = None) -> CellJob:
        """What a worker needs to run `cell` (`live_url`: the base URL of its ``vllm:`` server)."""
        model = next(m for m in self.models if m.label == cell.model)
        strategy = next(s for s in self.strategies if s.label == cell.strategy)
        settings = [*self.common_argv, *self.model_argv.get(model.label, ()), *strategy.argv]
        common = ["--run-dir", str(cell.run_path.parent), "--steps", str(self.steps)]
        url = live_url or model.base_url
        # an embedded model's server runs in its cell: cells that share a machine share its cores
        threads = ["--local-threads", str(self.local_threads)] if model.local and self.local_threads else []
        start = [*common, "--task", cell.task_dir, "--strategy", strategy.name, "--seed", str(cell.seed),
                 "--run-id", cell.run_id, *model.run_args(live_url), *threads, *settings]
        # settings come from run.json; the endpoint may have moved since
        resume = [*common, "--resume", cell.run_id, *(["--base-url", str(url)] if url else []), *threads,
                  *settings]
        gpus = 1.0 if "--gpus" in settings else 0.0
        memory = _last_value(settings, "--mem-limit-mb")
        return CellJob(run_id=cell.run_id, run_path=str(cell.run_path),
                       log_path=str(self.out / "logs" / f"{cell.run_id}.log"),
                       start_argv=tuple(start), resume_argv=tuple(resume), label=_label(cell),
                       checkpointer=self.database,
                       endpoint=model.label if model.label in self.model_caps else "",
                       cpus=self.grid.cell_cpus, gpus=gpus, memory_mb=memory)


def _last_value(argv: list[str], flag: str) -> int | None:
    """The value of the last `flag VALUE` in `argv` (as graphs.run's parser takes it), or None."""
    at = [i for i, a in enumerate(argv[:-1]) if a == flag]
    return int(float(argv[at[-1] + 1])) if at else None


def _settings_argv(settings: dict[str, Any], where: str) -> tuple[str, ...]:
    try:
        argv = settings_argv(settings, where)
        check_run_argv(argv, where)
    except ConfigError as exc:
        raise SweepError(str(exc)) from exc
    return tuple(argv)


def plan_sweep(grid: SweepFile) -> Plan:
    """Check every input (nothing is written); SweepError / CompetitionError / ... when unusable."""
    models = [parse_model_spec(m.spec) for m in grid.models]
    labels = [s.label or s.name for s in grid.strategies]
    strategies = []
    for entry, label in zip(grid.strategies, labels, strict=True):
        strategy_builder(entry.name)
        strategies.append(StrategySpec(label=label, name=entry.name,
                                       argv=_settings_argv(entry.settings, f"strategy {label}")))
    if grid.executor == "local" and grid.ray_address:
        raise SweepError("--ray-address needs --executor ray")
    if grid.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise SweepError("--executor ray needs Ray: pip install '.[ray]'")
    if grid.executor == "ray" and grid.ray_address and (problem := ray_address_problem(grid.ray_address)):
        raise SweepError(problem)
    try:  # a saved sweep.yaml holds the URL without its password: $ITS_MLE_CHECKPOINTER has it
        database = live_url(check_url(grid.checkpointer))
    except PersistenceError as exc:
        raise SweepError(str(exc)) from exc
    tasks = [load_competition(t) for t in dict.fromkeys(grid.tasks)]
    for kind, names in (("task id", [t.id for t in tasks]), ("model name", [m.label for m in models]),
                        ("strategy label", labels)):
        dupes = sorted({x for x in names if names.count(x) > 1})
        if dupes:
            raise SweepError(f"two inputs share the {kind} '{dupes[0]}'; their runs would collide")
    for model in models:
        if model.vllm:
            VLLMServer(model.vllm).check()  # the executable must be there (VLLMNotFound otherwise)
        if model.base_url:
            served = list_endpoint_models(model.base_url)
            if served and model.name not in served:
                raise SweepError(f"model '{model.name}' is not served by {model.base_url}"
                                 f" (it serves: {', '.join(served[:5])})")
    common = list(_settings_argv(grid.settings, "settings"))
    if grid.budget.tokens is not None:
        common += ["--budget-tokens", str(grid.budget.tokens)]
    if grid.budget.seconds is not None:
        common += ["--budget-seconds", str(grid.budget.seconds)]
    if database:
        common += ["--checkpointer", database]
    passthrough = list(grid.passthrough)
    if passthrough:
        try:
            check_run_argv(passthrough, "arguments after --")
        except ConfigError as exc:
            raise SweepError(str(exc)) from exc
    common += passthrough
    default_cap = grid.endpoint_concurrency or grid.workers or (None if grid.executor == "ray" else 1)
    model_argv, caps, vllm_options = {}, {}, {}
    for entry, model in zip(grid.models, models, strict=True):
        model_argv[model.label] = _settings_argv(entry.settings, f"model {model.label}")
        if not model.local:  # a server the cells share (local models start one per run)
            cap = entry.concurrency or default_cap
            if cap:  # none: Ray with no --workers runs as many cells as the cluster has CPUs
                caps[model.label] = cap
        vllm_options[model.label] = {"tensor_parallel_size": entry.tensor_parallel_size,
                                     "max_model_len": entry.max_model_len}
    out = Path(grid.out).expanduser().resolve()
    runs = out / "runs"
    cells = []
    for task in tasks:
        gradable = hidden_grading_plan(task)[0] is not None
        for strategy in strategies:
            for model in models:
                for seed in range(grid.seeds):
                    rid = run_id_for(task.id, strategy.label, model.label, seed)
                    cells.append(Cell(run_id=rid, task_id=task.id, task_dir=str(task.root), gradable=gradable,
                                      has_medals=gradable and task.leaderboard is not None,
                                      strategy=strategy.label, model=model.label, seed=seed,
                                      run_path=runs / rid))
    ids = [c.run_id for c in cells]
    if len(set(ids)) != len(ids):
        raise SweepError("two cells map to the same run id; rename a task or model")
    return Plan(out=out, grid=grid, tasks=tasks, strategies=strategies, models=models, cells=cells,
                common_argv=tuple(common), model_argv=model_argv, model_caps=caps, vllm_options=vllm_options,
                database=database)


def _label(cell: Cell) -> str:
    return f"{cell.task_id} / {cell.strategy} / {cell.model} / seed {cell.seed}"


def _model_batches(plan: Plan) -> list[tuple[ModelSpec | None, list[Cell]]]:
    """The cells in batches that may run together: one batch per ``vllm:`` model (its server is
    started once for all its cells and stopped after them), then every other model's cells."""
    batches: list[tuple[ModelSpec | None, list[Cell]]] = []
    for model in plan.models:
        if model.vllm:
            batches.append((model, [c for c in plan.cells if c.model == model.label]))
    others = {m.label for m in plan.models if not m.vllm}
    rest = [c for c in plan.cells if c.model in others]
    if rest:
        batches.append((None, rest))
    return batches


class _Launchers:
    """The running ``vllm:`` server, at most one at a time: started before the first unfinished
    cell of its model, stopped when the sweep moves on to another model (or ends)."""

    def __init__(self, plan: Plan, say: Callable[[str], None]) -> None:
        self.plan, self.say = plan, say
        self.label: str | None = None
        self.server: VLLMServer | None = None
        self.error: str | None = None

    def url_for(self, model: ModelSpec) -> tuple[str | None, str | None]:
        """(base URL, None) of the model's server, starting it if needed, or (None, why not)."""
        if self.label != model.label:
            self.stop()
            self.label = model.label
            self.server = self.plan.launcher(model)
            self.say(f"starting vLLM for {model.vllm} (log {self.server.log_path}) ...")
            try:
                self.server.start()
            except LocalModelError as exc:
                self.server, self.error = None, str(exc)
                self.say(f"vLLM for {model.vllm} did not start: {exc}")
            else:
                self.say(f"vLLM serving {model.name} at {self.server.base_url} "
                         f"(ready in {self.server.startup_s:.0f} s)")
        return (self.server.base_url, None) if self.server else (None, self.error)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.label, self.server, self.error = None, None, None


def _executor(plan: Plan, say: Callable[[str], None], echo: TextIO | None) -> Executor:
    grid = plan.grid
    if grid.executor == "ray":
        return RayExecutor(grid.ray_address, grid.workers, plan.model_caps, say)
    if (grid.workers or 1) > 1:
        return LocalExecutor(grid.workers)
    return InProcessExecutor(echo)


def execute(plan: Plan, stdout: TextIO) -> dict[str, str]:
    """Run every unfinished cell; failures by run id."""
    failures: dict[str, str] = {}
    live = stdout.isatty()
    total = len(plan.cells)
    progress = None
    if live:
        progress = Progress(TextColumn("[bold]runs"), MofNCompleteColumn(), BarColumn(),
                            TimeRemainingColumn(), TextColumn("{task.description}"),
                            console=Console(file=stdout))
    say = progress.console.print if progress else (lambda m: print(m, file=stdout, flush=True))
    launchers = _Launchers(plan, say)
    done = 0
    bar = None

    def finished(job: CellJob, outcome: CellOutcome) -> None:
        nonlocal done
        done += 1
        log = Path(job.log_path)
        if outcome.status == "skipped":
            say(f"[{done}/{total}] {job.label}: done already, skipped")
        elif outcome.status == "finished":
            say(f"[{done}/{total}] {job.label}: finished ({outcome.detail}, {outcome.seconds:.0f} s, "
                f"{outcome.worker})")
        else:
            why = f"exit {outcome.code}" if outcome.code is not None else outcome.detail
            why += f": {outcome.error[:300]}" if outcome.error else ""
            failures[job.run_id] = f"failed ({why})"
            say(f"[{done}/{total}] {job.label}: FAILED ({why}); see {log}")
        if progress:
            progress.update(bar, completed=done)

    def busy(job: CellJob, outcome: CellOutcome) -> None:
        say(f"{job.label}: running elsewhere ({outcome.detail}); waiting for it")

    with progress if progress else contextlib.nullcontext():
        if progress:
            bar = progress.add_task("", total=total)
        with _executor(plan, say, None if live else stdout) as executor:
            try:
                for model, cells in _model_batches(plan):
                    unfinished = [c for c in cells if not (c.run_path / "summary.json").is_file()]
                    for cell in cells:
                        if cell not in unfinished:
                            finished(plan.job(cell), CellOutcome(cell.run_id, "skipped"))
                    if not unfinished:
                        continue
                    url = None
                    if model is not None:
                        url, error = launchers.url_for(model)
                        if url is None:
                            for cell in unfinished:
                                finished(plan.job(cell), CellOutcome(cell.run_id, "failed",
                                                                     detail=f"vLLM did not start: {error}"))
                            continue
                    jobs = [plan.job(c, url) for c in unfinished]
                    if not live:
                        for job in jobs:
                            say(f"queued {job.label}: {job.run_id}")
                    executor.run(jobs, finished, plan.model_caps, on_busy=busy)
                    launchers.stop()
            finally:
                launchers.stop()
    return failures


def plan_for(argv: list[str]) -> Plan:
    """The checked grid of a sweep command line (what `main` runs), nothing written."""
    own, passthrough = _split_passthrough(list(argv))
    return plan_sweep(sweep_file_from(build_parser().parse_args(own), passthrough))


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors become one line on stderr and exit code 2."""
    try:
        plan = plan_for(list(sys.argv[1:] if argv is None else argv))
    except (SweepError, CompetitionError, UnknownStrategyError, EndpointError, LocalModelError,
            ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    (plan.out / "runs").mkdir(parents=True, exist_ok=True)
    write_atomically(plan.out / "sweep.yaml", plan.grid.dump_yaml())
    stdout = sys.stdout
    try:
        failures = execute(plan, stdout)
    except ExecutorError as exc:  # nothing ran: what earlier drivers finished stays in the table
        write_results(plan.out, plan.cells, {}, plan.seeds)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        write_results(plan.out, plan.cells, {}, plan.seeds)
        print("\ninterrupted; run the same command again to continue", file=sys.stderr)
        return 130
    write_results(plan.out, plan.cells, failures, plan.seeds)
    write_sweep_report_safely(plan.out)  # report.md + figures; a failure is one warning line
    done = len(plan.cells) - len(failures)
    print(f"sweep: {done}/{len(plan.cells)} runs finished"
          + (f", {len(failures)} failed" if failures else "")
          + f"; results in {plan.out / 'results.md'}", file=stdout, flush=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
