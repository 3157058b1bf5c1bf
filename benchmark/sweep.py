"""Command line: run a grid of tree searches and aggregate their results.

    python -m benchmark.sweep --tasks DIR [DIR ...] --strategies aide [...] --models SPEC [SPEC ...]
        --seeds K --steps N [--out DIR (default sweeps/latest)] [--exec-timeout SECONDS]

Model SPEC: ``local:0.5b`` / ``local:1.5b`` (the embedded llama.cpp server) or ``NAME@BASE_URL``
(an OpenAI-compatible endpoint serving NAME). The grid is tasks x strategies x models x seeds
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
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from benchmark.graders import GRADERS
from benchmark.results import Cell, write_results
from benchmark.sweep_report import write_sweep_report_safely
from graphs import run as graph_run
from graphs.cli_args import EXIT_USAGE, OneLineParser, positive_float, positive_int
from graphs.registry import UnknownStrategyError, strategy_builder
from serving.llm import EndpointError, list_endpoint_models
from serving.weights import LOCAL_MODELS
from tasks.competition import Competition, CompetitionError, load_competition


class SweepError(Exception):
    """A problem the user can fix; shown as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The sweep's argument parser."""
    p = OneLineParser(prog="python -m benchmark.sweep", description="Run a grid of tree searches.")
    p.add_argument("--tasks", nargs="+", required=True, metavar="DIR", help="competition directories")
    p.add_argument("--strategies", nargs="+", required=True, metavar="NAME", help="search strategies")
    p.add_argument("--models", nargs="+", required=True, metavar="SPEC",
                   help="local:0.5b, local:1.5b or NAME@BASE_URL")
    p.add_argument("--seeds", type=positive_int, required=True, metavar="K", help="seeds 0..K-1 per cell")
    p.add_argument("--steps", type=positive_int, required=True, metavar="N", help="nodes per run")
    p.add_argument("--out", default="sweeps/latest", metavar="DIR", help="default sweeps/latest")
    p.add_argument("--exec-timeout", type=positive_float, default=None, metavar="SECONDS")
    return p


@dataclass(frozen=True)
class ModelSpec:
    """Where a model is served; `label` names it in run ids and tables."""

    label: str
    local: str | None = None  # key of the embedded model
    name: str | None = None
    base_url: str | None = None

    def run_args(self) -> list[str]:
        """The `graphs.run` options that select this model."""
        if self.local:
            return ["--local-model", self.local]
        return ["--model", str(self.name), "--base-url", str(self.base_url)]


def parse_model_spec(spec: str) -> ModelSpec:
    """``local:KEY`` or ``NAME@BASE_URL``; SweepError (one line) otherwise."""
    if spec.startswith("local:"):
        key = spec[len("local:"):]
        if key not in LOCAL_MODELS:
            raise SweepError(f"unknown local model '{key}' in '{spec}' (known: "
                             f"{', '.join('local:' + k for k in sorted(LOCAL_MODELS))})")
        return ModelSpec(label=f"local-{key}", local=key)
    match = re.fullmatch(r"([^@\s]+)@(https?://[^\s/]+\S*)", spec)
    if not match:
        raise SweepError(f"bad model spec '{spec}': use local:0.5b, local:1.5b or NAME@http(s)://HOST/...")
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
        if model.base_url:
            served = list_endpoint_models(model.base_url)
            if served and model.name not in served:
                raise SweepError(f"model '{model.name}' is not served by {model.base_url}"
                                 f" (it serves: {', '.join(served[:5])})")
    out = Path(args.out).expanduser().resolve()
    runs = out / "runs"
    cells = []
    for task in tasks:
        gradable = task.answers is not None and task.grader in GRADERS
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
                steps=args.steps, exec_timeout=args.exec_timeout, cells=cells)


def cell_argv(plan: Plan, cell: Cell) -> list[str] | None:
    """`graphs.run` arguments for a cell: start, resume, or None when it is already finished."""
    if (cell.run_path / "summary.json").is_file():
        return None
    model = next(m for m in plan.models if m.label == cell.model)
    argv = ["--run-dir", str(cell.run_path.parent), "--steps", str(plan.steps)]
    if plan.exec_timeout is not None:
        argv += ["--exec-timeout", str(plan.exec_timeout)]
    if (cell.run_path / "run.json").is_file():
        # settings come from run.json; the endpoint may have moved since
        moved = ["--base-url", str(model.base_url)] if model.base_url else []
        return argv + ["--resume", cell.run_id] + moved
    return argv + ["--task", cell.task_dir, "--strategy", cell.strategy, "--seed", str(cell.seed),
                   "--run-id", cell.run_id, *model.run_args()]


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
    with progress if progress else contextlib.nullcontext():
        bar = progress.add_task("", total=total) if progress else None
        for i, cell in enumerate(plan.cells, 1):
            argv = cell_argv(plan, cell)
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
    return failures


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors become one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        plan = plan_sweep(args)
    except (SweepError, CompetitionError, UnknownStrategyError, EndpointError) as exc:
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
