"""Command line: run a grid of tree searches and aggregate their results.

    python -m benchmark.sweep --tasks DIR [DIR ...] --strategies aide [...] --models SPEC [SPEC ...]
        --seeds K --steps N [--out DIR (default sweeps/latest)] [--exec-timeout SECONDS]

Model SPEC: ``local:0.5b`` / ``local:1.5b`` (the embedded llama.cpp server), ``NAME@BASE_URL``
(an OpenAI-compatible endpoint serving NAME) or ``vllm:NAME`` (a vLLM server for the Hugging Face
model NAME, started by the sweep once for all the cells of that model and stopped after them;
see `serving.vllm`; ``--tensor-parallel-size`` / ``--max-model-len`` apply to it; its log is
``<out>/logs/vllm-<label>.log``). The grid is tasks x strategies x models x seeds
(seeds 0..K-1); each cell is one `graphs.run` run under ``<out>/runs/<run id>`` with a
deterministic run id, so the sweep can be run again to continue: a cell with ``summary.json`` is
skipped, one with only ``run.json`` is resumed, others are started. A failing cell is recorded and
the sweep goes on. Each cell's output is also kept in ``<out>/logs/<run id>.log``.

Outputs in ``<out>`` (see `benchmark.results` for the definitions): ``results.md``,
``results.csv`` (one row per model and strategy), ``per_run.csv`` (one row per cell),
``grade.jsonl`` (input for ``mlebench grade``) and ``report.md`` with figures
(`benchmark.sweep_report`).

Errors a user can cause (bad spec, missing task, unknown strategy, unreachable endpoint) print one
line on stderr and exit with code 2 before anything is written.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from benchmark.results import Cell, write_results
from benchmark.sweep_report import write_sweep_report_safely
from grading.hidden import hidden_grading_plan
from graphs import run as graph_run
from graphs.cli_args import EXIT_USAGE, OneLineParser, positive_float, positive_int
from graphs.registry import UnknownStrategyError, strategy_builder
from serving.llm import EndpointError, list_endpoint_models
from serving.vllm import VLLMServer, served_name_for
from serving.weights import LOCAL_MODELS, LocalModelError
from tasks.competition import Competition, CompetitionError, load_competition


class SweepError(Exception):
    """A problem the user can fix; shown as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The sweep's argument parser."""
    p = OneLineParser(prog="python -m benchmark.sweep", description="Run a grid of tree searches.")
    p.add_argument("--tasks", nargs="+", required=True, metavar="DIR", help="competition directories")
    p.add_argument("--strategies", nargs="+", required=True, metavar="NAME", help="search strategies")
    p.add_argument("--models", nargs="+", required=True, metavar="SPEC",
                   help="local:0.5b, local:1.5b, NAME@BASE_URL or vllm:HF_MODEL")
    p.add_argument("--seeds", type=positive_int, required=True, metavar="K", help="seeds 0..K-1 per cell")
    p.add_argument("--steps", type=positive_int, required=True, metavar="N", help="nodes per run")
    p.add_argument("--out", default="sweeps/latest", metavar="DIR", help="default sweeps/latest")
    p.add_argument("--exec-timeout", type=positive_float, default=None, metavar="SECONDS")
    p.add_argument("--tensor-parallel-size", type=positive_int, default=1, metavar="N",
                   help="vllm: models: GPUs per server (default 1)")
    p.add_argument("--max-model-len", type=positive_int, default=None, metavar="L",
                   help="vllm: models: context length (default: the model's)")
    return p


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
class Plan:
    """A validated grid."""

    out: Path
    tasks: list[Competition]
    strategies: list[str]
    models: list[ModelSpec]
    seeds: int
    steps: int
    exec_timeout: float | None
    cells: list[Cell]
    tensor_parallel_size: int = 1
    max_model_len: int | None = None

    def launcher(self, model: ModelSpec) -> VLLMServer:
        """The vLLM server for a ``vllm:`` model (not started)."""
        return VLLMServer(str(model.vllm), served_model_name=model.name,
                          tensor_parallel_size=self.tensor_parallel_size, max_model_len=self.max_model_len,
                          log_path=self.out / "logs" / f"vllm-{model.label}.log")


def plan_sweep(args: argparse.Namespace) -> Plan:
    """Check every input (nothing is written); SweepError / CompetitionError / ... when unusable."""
    models = [parse_model_spec(s) for s in dict.fromkeys(args.models)]
    strategies = list(dict.fromkeys(args.strategies))
    for strategy in strategies:
        strategy_builder(strategy)
    tasks = [load_competition(t) for t in dict.fromkeys(args.tasks)]
    for kind, labels in (("task id", [t.id for t in tasks]), ("model name", [m.label for m in models])):
        dupes = sorted({x for x in labels if labels.count(x) > 1})
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
    out = Path(args.out).expanduser().resolve()
    runs = out / "runs"
    cells = []
    for task in tasks:
        gradable = hidden_grading_plan(task)[0] is not None
        for strategy in strategies:
            for model in models:
                for seed in range(args.seeds):
                    rid = run_id_for(task.id, strategy, model.label, seed)
                    cells.append(Cell(run_id=rid, task_id=task.id, task_dir=str(task.root), gradable=gradable,
                                      has_medals=gradable and task.leaderboard is not None,
                                      strategy=strategy, model=model.label, seed=seed, run_path=runs / rid))
    ids = [c.run_id for c in cells]
    if len(set(ids)) != len(ids):
        raise SweepError("two cells map to the same run id; rename a task or model")
    return Plan(out=out, tasks=tasks, strategies=strategies, models=models, seeds=args.seeds,
                steps=args.steps, exec_timeout=args.exec_timeout, cells=cells,
                tensor_parallel_size=args.tensor_parallel_size, max_model_len=args.max_model_len)


def cell_argv(plan: Plan, cell: Cell, live_url: str | None = None) -> list[str] | None:
    """`graphs.run` arguments for a cell: start, resume, or None when it is already finished.
    `live_url`: the base URL of the launcher serving a ``vllm:`` model."""
    if (cell.run_path / "summary.json").is_file():
        return None
    model = next(m for m in plan.models if m.label == cell.model)
    argv = ["--run-dir", str(cell.run_path.parent), "--steps", str(plan.steps)]
    if plan.exec_timeout is not None:
        argv += ["--exec-timeout", str(plan.exec_timeout)]
    if (cell.run_path / "run.json").is_file():
        # settings come from run.json; the endpoint may have moved since
        url = live_url or model.base_url
        moved = ["--base-url", str(url)] if url else []
        return argv + ["--resume", cell.run_id] + moved
    return argv + ["--task", cell.task_dir, "--strategy", cell.strategy, "--seed", str(cell.seed),
                   "--run-id", cell.run_id, *model.run_args(live_url)]


class _Tee(io.TextIOBase):
    """Writes to a log file and, optionally, to another stream; never a terminal."""

    def __init__(self, log: TextIO, echo: TextIO | None) -> None:
        self.log, self.echo = log, echo

    def write(self, text: str) -> int:
        self.log.write(text)
        if self.echo is not None:
            self.echo.write(text)
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        if self.echo is not None:
            self.echo.flush()

    def isatty(self) -> bool:
        return False


def run_cell(argv: list[str], log_path: Path, echo: TextIO | None) -> int:
    """Run `graphs.run` in-process with its output in `log_path` (and `echo`); the exit code."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        tee = _Tee(log, echo)
        with contextlib.redirect_stdout(tee), contextlib.redirect_stderr(tee):
            print(f"$ python -m graphs.run {' '.join(argv)}")
            try:
                return graph_run.main(argv)
            except SystemExit as exc:
                return exc.code if isinstance(exc.code, int) else 1
            except Exception:  # a crash in one cell must not end the sweep
                traceback.print_exc()
                return 1


def _label(cell: Cell) -> str:
    return f"{cell.task_id} / {cell.strategy} / {cell.model} / seed {cell.seed}"


def _in_model_order(plan: Plan) -> list[Cell]:
    """The cells grouped by model (in the order of --models), each group in grid order, so a
    ``vllm:`` model's server is started once for all its cells."""
    rank = {m.label: i for i, m in enumerate(plan.models)}
    return sorted(plan.cells, key=lambda c: rank[c.model])


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

    def leave(self, label: str) -> None:
        """Stop the server when the sweep has moved past its model's cells."""
        if self.label is not None and self.label != label:
            self.stop()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.label, self.server, self.error = None, None, None


def execute(plan: Plan, stdout: TextIO) -> dict[str, str]:
    """Run every unfinished cell (grouped by model); failures by run id."""
    failures: dict[str, str] = {}
    live = stdout.isatty()
    total = len(plan.cells)
    models = {m.label: m for m in plan.models}
    progress = None
    if live:
        progress = Progress(TextColumn("[bold]runs"), MofNCompleteColumn(), BarColumn(),
                            TimeRemainingColumn(), TextColumn("{task.description}"),
                            console=Console(file=stdout))
    say = progress.console.print if progress else (lambda m: print(m, file=stdout, flush=True))
    launchers = _Launchers(plan, say)
    with progress if progress else contextlib.nullcontext():
        bar = progress.add_task("", total=total) if progress else None
        try:
            for i, cell in enumerate(_in_model_order(plan), 1):
                launchers.leave(cell.model)
                model = models[cell.model]
                argv = cell_argv(plan, cell)
                if argv is not None and model.vllm:
                    url, error = launchers.url_for(model)
                    if url is None:
                        failures[cell.run_id] = f"failed (vLLM did not start: {error})"
                        say(f"[{i}/{total}] {_label(cell)}: FAILED (vLLM did not start)")
                        if progress:
                            progress.update(bar, completed=i)
                        continue
                    argv = cell_argv(plan, cell, url)
                if argv is None:
                    say(f"[{i}/{total}] {_label(cell)}: done already, skipped")
                else:
                    action = "resuming" if "--resume" in argv else "starting"
                    if progress:
                        progress.update(bar, description=f"{_label(cell)} ({action})")
                    else:
                        say(f"[{i}/{total}] {_label(cell)}: {action} {cell.run_id}")
                    code = run_cell(argv, plan.out / "logs" / f"{cell.run_id}.log", None if live else stdout)
                    if code == 0 and (cell.run_path / "summary.json").is_file():
                        say(f"[{i}/{total}] {_label(cell)}: finished")
                    else:
                        failures[cell.run_id] = f"failed (exit {code})"
                        say(f"[{i}/{total}] {_label(cell)}: FAILED (exit {code}); see "
                            f"{plan.out / 'logs' / (cell.run_id + '.log')}")
                if progress:
                    progress.update(bar, completed=i)
        finally:
            launchers.stop()
    return failures


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors become one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        plan = plan_sweep(args)
    except (SweepError, CompetitionError, UnknownStrategyError, EndpointError, LocalModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    (plan.out / "runs").mkdir(parents=True, exist_ok=True)
    stdout = sys.stdout
    try:
        failures = execute(plan, stdout)
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
