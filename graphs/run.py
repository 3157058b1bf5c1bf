"""Command line: run (or resume) a tree search on a competition.

    python -m graphs.run --task DIR [--strategy aide] [--steps N] [--budget-tokens N]
        [--budget-seconds S] [--base-url URL] [--model NAME]
        [--run-dir DIR] [--resume RUN_ID] [--seed S] [--exec-timeout SECONDS]
        [--local-model 0.5b|1.5b|PATH.gguf] [--vllm-model HF_MODEL [--tensor-parallel-size N]
        [--max-model-len L]] [--python PATH] [--checkpointer postgresql://...]

Without --base-url the run starts its own server: vLLM for --vllm-model (serving.vllm), else the
embedded llama.cpp model. --python PATH runs the solution scripts with that interpreter (its
packages are the ones the prompt lists). --checkpointer keeps the run's checkpoints and nodes in
Postgres instead of SQLite files in the run directory, so it resumes on any machine that reaches
the database (graphs.persistence).

Errors a user can cause print one line on stderr and exit with code 2; a run another process is
running (its claim, graphs.persistence.claim_run) is refused with exit code 75.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grading.hidden import medal_reporter_for
from graphs.persistence import (
    CHECKPOINTER_ENV,
    SETTINGS_FILE,
    PersistenceError,
    RunBusy,
    check_url,
    claim_run,
    keep_run_files,
    live_url,
    open_checkpointer,
    open_node_store,
    redact_url,
    restore_run_files,
    stored_settings,
)
from graphs.registry import STRATEGIES, UnknownStrategyError, strategy_builder
from graphs.search import build_search_graph
from graphs.services import (
    attached_context,
    build_run_services,
    check_model,
    check_task_files,
)
from graphs.settings import RunServices, RunSettings
from nodes.budget import describe_stop
from nodes.files import write_atomically
from sandbox import SandboxError
from serving.llm import EndpointError, list_endpoint_models
from serving.local import LocalModelError, LocalServer, ensure_local_model
from serving.process import usable_cores
from serving.vllm import VLLMServer
from tasks.competition import Competition, CompetitionError, load_competition
from views.cli import (
    EXIT_BUSY,
    EXIT_USAGE,
    OneLineParser,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)
from views.export import export_run
from views.progress import RunProgress
from views.report import write_report_safely


class UsageError(Exception):
    """A problem the user can fix; shown as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    p = OneLineParser(prog="python -m graphs.run", description="Tree search over ML solution scripts.")
    p.add_argument("--task", help="competition directory (MLE-bench layout or a plain folder)")
    p.add_argument("--strategy", default=None, help=f"search strategy ({', '.join(STRATEGIES)})")
    p.add_argument("--steps", type=positive_int, default=None, help="nodes in the tree (default 20)")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint; default: embedded llama.cpp")
    p.add_argument("--model", default=None, help="model name at the endpoint (default: the first it serves)")
    p.add_argument("--run-dir", default="runs", help="where runs are written (default ./runs)")
    p.add_argument("--resume", default=None, metavar="RUN_ID", help="continue a run after a crash")
    p.add_argument("--run-id", default=None, help="name a new run (default: task-strategy-time-random)")
    p.add_argument("--checkpointer", default=None, metavar="URL",
                   help="postgresql://user[:password]@host[:port]/db: keep the run's checkpoints and nodes "
                   "in Postgres, so --resume works on another machine (default: SQLite files in the run "
                   f"directory); a resume may take the URL with its password from ${CHECKPOINTER_ENV}")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--exec-timeout", type=positive_float, default=None, metavar="SECONDS")
    p.add_argument("--local-model", default=None, help="embedded model: 0.5b, 1.5b (default) or a .gguf path")
    p.add_argument("--local-threads", type=positive_int, default=None, metavar="N",
                   help="threads of the embedded model's server (default: every core; a sweep running "
                   "several local-model cells on one machine gives each its share, since llama.cpp's "
                   "threads collapse when they outnumber the cores)")
    gv = p.add_argument_group("a vLLM server started for the run (serving.vllm; pip install '.[vllm]')")
    gv.add_argument("--vllm-model", default=None, metavar="NAME",
                    help="Hugging Face model (or directory) to serve with vLLM instead of the embedded "
                    "model; --model names it there (default: its basename); restarted on --resume")
    gv.add_argument("--tensor-parallel-size", type=positive_int, default=None, metavar="N", help="default 1")
    gv.add_argument("--max-model-len", type=positive_int, default=None, metavar="L",
                    help="context length (default: the model's)")
    p.add_argument("--python", default=None, metavar="PATH",
                   help="interpreter that runs the solution scripts (default: this one); the prompt lists "
                   "its packages")
    g = p.add_argument_group("search policy (AIDE defaults)")
    g.add_argument("--num-drafts", type=positive_int, default=None,
                   help="initial drafts (default: steps // 4, between 1 and 5)")
    g.add_argument("--debug-prob", type=probability, default=None)
    g.add_argument("--max-debug-depth", type=int, default=None)
    gb = p.add_argument_group("compute budget of the whole run (default: none); the search expands no "
                              "further once the next step would pass it (nodes.budget)")
    gb.add_argument("--budget-tokens", type=positive_int, default=None, metavar="N",
                    help="prompt + completion tokens")
    gb.add_argument("--budget-seconds", type=positive_float, default=None, metavar="S",
                    help="LLM seconds + script execution seconds (compute used, not wall time)")
    g2 = p.add_argument_group("model")
    g2.add_argument("--max-tokens", type=positive_int, default=None,
                    help="the coder's answer cap (default 4096; thinking gets --reasoning-budget on top)")
    g2.add_argument("--reasoning-budget", type=non_negative_int, default=None, metavar="N",
                    help="thinking tokens on top of every answer cap (default: 8192 for a model that "
                    "thinks, known by name or from its first answer; 0 otherwise)")
    g2.add_argument("--context-length", type=positive_int, default=None, metavar="N",
                    help="the server's context length, bounding every cap (default: as /v1/models "
                    "reports it, e.g. vLLM's max_model_len)")
    g2.add_argument("--temperature", type=float, default=None,
                    help="default by model family (R1 distills: 0.6, others 0.7)")
    g2.add_argument("--top-p", type=float, default=None, help="default 0.95")
    g2.add_argument("--system-prompt", choices=["auto", "on", "off"], default=None,
                    help="send the task as a system message (auto: not for R1 distills)")
    g2.add_argument("--llm-timeout", type=positive_float, default=None, metavar="SECONDS",
                    help="per attempt of an LLM call (default 900)")
    g2.add_argument("--llm-retries", type=non_negative_int, default=None, metavar="N",
                    help="retries of an LLM call after a timeout, dropped connection, 429 or 5xx (default 2)")
    g2.add_argument("--no-llm-review", action="store_true", help="skip the LLM verdict (facts only)")
    g2.add_argument("--review-failed-runs", action="store_true",
                    help="also ask the LLM to review runs the facts call failed (default: skipped)")
    gs = p.add_argument_group("sandbox (limits per script run)")
    gs.add_argument("--sandbox", choices=["auto", "bwrap", "plain"], default=None,
                    help="auto: bubblewrap when it works here, else plain with a warning")
    gs.add_argument("--mem-limit-mb", type=positive_int, default=None,
                    help="memory per script (default: half the RAM)")
    gs.add_argument("--max-procs", type=positive_int, default=None,
                    help="processes + threads per script (default 512)")
    gs.add_argument("--max-file-mb", type=positive_int, default=None,
                    help="largest file a script may write (default 1024)")
    gs.add_argument("--cpu-limit", type=positive_float, default=None, metavar="SECONDS",
                    help="CPU seconds per process (default: exec timeout x CPUs)")
    gs.add_argument("--gpus", action="store_true", default=None,
                    help="pass /dev/nvidia* into the sandbox (memory then capped by cgroup only)")
    g3 = p.add_argument_group("inference-time-scaling strategies")
    g3.add_argument("--samples", type=positive_int, default=None,
                    help="self_consistency: scripts sampled per expansion (default 4)")
    g3.add_argument("--rounds", type=positive_int, default=None,
                    help="self_reflection / planner_coder: executions per expansion at most (default 3)")
    g3.add_argument("--workers", type=positive_int, default=None,
                    help="scripts executed at the same time (default: CPU count)")
    g3.add_argument("--sampling", choices=["auto", "n", "concurrent"], default=None,
                    help="N samples in one request with `n` (vLLM), N concurrent requests, "
                    "or detect (default)")
    g3.add_argument("--no-judge", action="store_true", help="self_consistency: no LLM judge for ties")
    g3.add_argument("--planner-base-url", default=None, help="planner_coder: the planner's endpoint")
    g3.add_argument("--planner-model", default=None, help="planner_coder: the planner's model")
    g3.add_argument("--planner-temperature", type=float, default=None)
    gr = p.add_argument_group("repairs inside a step")
    gr.add_argument("--repairs", type=non_negative_int, default=None, metavar="K",
                    help="quick repair calls per step for a script that fails the static check or "
                    "crashes early (default 2; 0: none)")
    gr.add_argument("--repair-window", type=positive_float, default=None, metavar="SECONDS",
                    help="a crash within this many seconds of the start is repaired (default 10)")
    gr.add_argument("--no-known-errors", dest="known_errors", action="store_false", default=None,
                    help="leave the known remedy of a known error out of debug and repair prompts")
    gr.add_argument("--no-auto-imports", dest="auto_imports", action="store_false", default=None,
                    help="do not add the import line of an undefined name the harness can import "
                    "(`train_test_split`, `os`, `np`) before the repair calls")
    gr.add_argument("--no-revert-repairs", dest="revert_repairs", action="store_false", default=None,
                    help="keep a repaired script even when its run got less far than the script "
                    "before it (a crash where the script before it ran to the end, say)")
    gr.add_argument("--no-outline-names", dest="outline_names", action="store_false", default=None,
                    help="do not add the data facts' outline line (reading `test`, `X_test = "
                    "test[features]`, the sample submission) for a name the script uses and never assigns")
    gr.add_argument("--no-vectorize-strings", dest="vectorize_strings", action="store_false", default=None,
                    help="do not put a text vectorizer before an estimator that crashed on the strings of "
                    "the task's one text column (words or free text), before the repair calls")
    gr.add_argument("--no-improve-again", dest="improve_again", action="store_false", default=None,
                    help="run an improve answer that leaves its parent's program unchanged (only comments, "
                    "blank lines or imports differ) instead of asking once more for a real change")
    gr.add_argument("--no-splice-fragments", dest="splice_fragments", action="store_false", default=None,
                    help="set aside a repair answer that is only a fragment of the script instead of "
                    "putting it in the place it covers and running that (and run a debug or improve "
                    "answer that is a fragment of its parent's script as it is)")
    gh = p.add_argument_group("selection (a validation split held by the harness)")
    gh.add_argument("--no-holdout", dest="holdout", action="store_false", default=None,
                    help="select by the scripts' own METRIC lines, with no training rows held out")
    gh.add_argument("--holdout-fraction", type=holdout_share, default=None, metavar="F",
                    help="share of the training rows held (default 0.1; at least 10 rows, at most 5000)")
    gp = p.add_argument_group("prompts")
    gp.add_argument("--no-data-facts", dest="data_facts", action="store_false", default=None,
                    help="leave out the facts checked from the data files (targets, classes, "
                    "string columns, submission layout, file mapping)")
    gp.add_argument("--no-branch-memory", dest="branch_memory", action="store_false", default=None,
                    help="memory of the last nodes of the run instead of the parent's lineage and "
                    "the best nodes")
    return p


_OVERRIDABLE = {
    "strategy": "strategy", "steps": "steps", "base_url": "base_url", "model": "model",
    "budget_tokens": "budget_tokens", "budget_seconds": "budget_seconds",
    "seed": "seed", "exec_timeout": "exec_timeout", "local_model": "local_model",
    "num_drafts": "num_drafts", "debug_prob": "debug_prob", "max_debug_depth": "max_debug_depth",
    "max_tokens": "max_tokens", "temperature": "temperature", "llm_timeout": "llm_timeout",
    "reasoning_budget": "reasoning_budget", "context_length": "context_length",
    "llm_retries": "llm_retries",
    "sandbox": "sandbox", "samples": "samples", "rounds": "rounds", "workers": "workers",
    "sampling": "sampling", "planner_base_url": "planner_base_url", "planner_model": "planner_model",
    "planner_temperature": "planner_temperature", "top_p": "top_p", "mem_limit_mb": "mem_limit_mb",
    "max_procs": "max_procs", "max_file_mb": "max_file_mb", "cpu_limit": "cpu_limit_s", "gpus": "gpus",
    "data_facts": "data_facts", "branch_memory": "branch_memory",
    "holdout": "holdout", "holdout_fraction": "holdout_fraction",
    "repairs": "repairs", "repair_window": "repair_window_s", "known_errors": "known_errors",
    "auto_imports": "auto_imports", "revert_repairs": "revert_repairs",
    "splice_fragments": "splice_fragments", "outline_names": "outline_names",
    "improve_again": "improve_again", "vectorize_strings": "vectorize_strings",
    "vllm_model": "vllm_model", "tensor_parallel_size": "tensor_parallel_size",
    "max_model_len": "max_model_len", "python": "python",
}


def holdout_share(text: str) -> float:
    """A share of the training rows to hold: above 0, at most 0.5."""
    value = float(text)
    if not 0 < value <= 0.5:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 0.5, got {value}")
    return value


def check_interpreter(python: str) -> str:
    """The absolute path of an interpreter that runs; UsageError (one line) otherwise."""
    path = shutil.which(python) if os.sep not in python else os.path.abspath(os.path.expanduser(python))
    if not path or not os.path.isfile(path):
        raise UsageError(f"--python {python}: no such file")
    if not os.access(path, os.X_OK):
        raise UsageError(f"--python {python}: not executable")
    try:
        proc = subprocess.run([path, "-c", "import sys; sys.exit(0)"], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        raise UsageError(f"--python {python}: cannot run it ({exc})") from exc
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"--python {python}: it does not run Python (exit {proc.returncode}): {tail}")
    return path


def _checked(settings: RunSettings) -> RunSettings:
    """Refuse settings that cannot work together, and an interpreter that does not run."""
    if settings.vllm_model and settings.base_url:
        raise UsageError("--vllm-model starts its own server for the run: drop --base-url")
    if settings.python:
        settings = settings.model_copy(update={"python": check_interpreter(settings.python)})
    return settings


def _new_run_id(task_id: str, strategy: str) -> str:
    return f"{task_id}-{strategy}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def resolve_settings(args: argparse.Namespace) -> tuple[RunSettings, Path, bool]:
    """Settings of a new run, or those stored with a run being resumed: (settings, dir, resumed)."""
    root = Path(args.run_dir).expanduser()
    given = check_url(args.checkpointer)
    if args.resume:
        run_path = root / args.resume
        cfg = run_path / SETTINGS_FILE
        if cfg.is_file():
            text, where = cfg.read_text(), str(cfg)
        else:  # a run kept in Postgres, started on another machine
            given = given or check_url(os.environ.get(CHECKPOINTER_ENV))
            text = stored_settings(given, args.resume) if given else None
            if text is None:
                raise UsageError(f"no run '{args.resume}' under {root} (missing {cfg})"
                                 + (f" nor in {redact_url(given)}" if given else ""))
            where = f"the run.json kept in {redact_url(given)}"
        try:
            settings = RunSettings.model_validate_json(text)
        except ValueError as exc:
            raise UsageError(f"{where} is corrupt: {str(exc).splitlines()[0]}") from exc
        changes = {k: getattr(args, k) for k in ("steps", "budget_tokens", "budget_seconds", "exec_timeout",
                                                 "llm_timeout", "llm_retries")
                   if getattr(args, k) is not None}
        if args.base_url:  # the endpoint may have moved; the model must stay the same
            changes["base_url"] = args.base_url
        if args.no_llm_review:
            changes["llm_review"] = False
        if args.python:  # the interpreter may have moved, like the endpoint
            changes["python"] = args.python
        if args.task:  # and so may the task (another machine)
            changes["task_dir"] = str(load_competition(args.task).root)
        if given:
            _check_database(settings, args.resume, given, run_path)
            changes["checkpointer"] = redact_url(given)  # the database may have moved as well
        return _checked(settings.model_copy(update=changes)), run_path, True
    if not args.task:
        raise UsageError("--task DIR is required (or --resume RUN_ID)")
    values: dict[str, Any] = {k: getattr(args, a) for a, k in _OVERRIDABLE.items()
                              if getattr(args, a) is not None}
    values.setdefault("strategy", "aide")
    strategy_builder(values["strategy"])
    comp = load_competition(args.task)
    run_id = args.run_id or _new_run_id(comp.id, values["strategy"])
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}", run_id):
        raise UsageError(f"--run-id '{run_id}' may only hold letters, digits, '.', '_' and '-'")
    _refuse_existing(root / run_id, given)
    system_prompt = {"on": True, "off": False}.get(args.system_prompt or "auto")
    settings = RunSettings(run_id=run_id, task_dir=str(comp.root), llm_review=not args.no_llm_review,
                           skip_failed_review=not args.review_failed_runs,
                           judge=not args.no_judge, system_prompt=system_prompt, checkpointer=given, **values)
    return _checked(settings), root / run_id, False


def _refuse_existing(run_path: Path, url: str) -> None:
    """A new run must not take the name of one that exists (here, or in its database)."""
    run_id, root = run_path.name, run_path.parent
    if (run_path / SETTINGS_FILE).exists():
        raise UsageError(f"run '{run_id}' already exists under {root}; continue it with --resume {run_id}")
    if url and stored_settings(url, run_id) is not None:
        raise UsageError(f"run '{run_id}' already exists in {redact_url(url)}; continue it with "
                         f"--resume {run_id} --checkpointer URL")


def _check_database(settings: RunSettings, run_id: str, url: str, run_path: Path) -> None:
    """A resume may name the run's database anew (it may have moved), not move a run into one."""
    if not settings.checkpointer:
        raise UsageError(f"run '{run_id}' keeps its checkpoints in SQLite files in {run_path}: "
                         "resume it without --checkpointer")
    if redact_url(url) != settings.checkpointer and stored_settings(url, run_id) is None:
        raise UsageError(f"run '{run_id}' is not in the database {redact_url(url)} "
                         f"(it was started with {settings.checkpointer})")


@contextlib.contextmanager
def endpoint(settings: RunSettings, run_path: Path, say: Any, *,
             local_threads: int | None = None) -> Iterator[tuple[str, str]]:
    """Yield (base_url, model): the given endpoint, or the vLLM / embedded server started for the
    run (`local_threads`: the embedded server's threads; default every core)."""
    if settings.base_url:
        served = list_endpoint_models(settings.base_url)
        model = settings.model or (served[0] if served else None)
        if not model:
            raise EndpointError(f"LLM endpoint {settings.base_url} serves no models; pass --model")
        if settings.model and served and settings.model not in served:
            raise EndpointError(
                f"model '{settings.model}' is not served by {settings.base_url}"
                f" (it serves: {', '.join(served[:5])})"
            )
        yield settings.base_url, model
        return
    if settings.vllm_model:
        vllm = VLLMServer(settings.vllm_model, served_model_name=settings.model,
                          tensor_parallel_size=settings.tensor_parallel_size,
                          max_model_len=settings.max_model_len, log_path=run_path / "vllm-server.log")
        say(f"starting vLLM for {settings.vllm_model} (log {vllm.log_path}) ...")
        with vllm:
            say(f"vLLM server ready at {vllm.base_url} in {vllm.startup_s:.0f} s, serving {vllm.served_name}")
            yield vllm.base_url, vllm.served_name
        return
    path = ensure_local_model(settings.local_model, progress=say)
    alias = settings.model or Path(path).stem
    say(f"starting the embedded llama.cpp server with {Path(path).name} ...")
    # steps are sequential (the model waits while a script runs), so the server gets every core,
    # unless the run shares the machine with others (a sweep's workers: --local-threads)
    server = LocalServer(Path(path), model_alias=alias, n_threads=local_threads or usable_cores(),
                         log_path=run_path / "llama-server.log")
    with server:
        say(f"embedded server ready at {server.base_url}")
        yield server.base_url, alias


def run(args: argparse.Namespace, *, claimed: bool = False) -> int:
    """Run or resume one tree search; returns the exit code. The run's claim (`claim_run`) is
    taken before anything is written, unless the caller holds it (`claimed`)."""
    settings, run_path, resumed = resolve_settings(args)
    url = live_url(settings.checkpointer, args.checkpointer)
    comp: Competition = load_competition(settings.task_dir)
    check_task_files(comp)
    for note in comp.notes:
        print(f"note: {note}", flush=True)
    strategy_builder(settings.strategy)
    if settings.base_url:  # fail before writing anything when the endpoint is unusable
        list_endpoint_models(settings.base_url)
    elif settings.vllm_model:  # the vllm executable must be there before a run is written
        VLLMServer(settings.vllm_model).check()
    else:  # assemble/verify the embedded weights first: a bad model must not leave a run behind
        ensure_local_model(settings.local_model, progress=lambda m: print(m, flush=True))
    if settings.planner_base_url:
        check_model(settings.planner_base_url, settings.planner_model)
    with contextlib.ExitStack() as held:
        if not claimed:
            try:
                held.enter_context(claim_run(run_path, settings.run_id, url))
            except OSError as exc:  # the lock file goes beside the run directory
                raise UsageError(f"cannot create the run directory {run_path}: {exc.strerror}") from exc
        if not resumed:  # made by whoever held the claim before us
            _refuse_existing(run_path, url)
        return _run_claimed(args, settings, comp, run_path, resumed, url)


def _run_claimed(args: argparse.Namespace, settings: RunSettings, comp: Competition, run_path: Path,
                 resumed: bool, url: str) -> int:
    try:
        run_path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the run directory {run_path}: {exc.strerror}") from exc
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    where = f" --checkpointer {settings.checkpointer}" if settings.checkpointer else ""
    say(f"run id: {settings.run_id}  ({'resuming' if resumed else 'new run'}; "
        f"resume with --resume {settings.run_id} --run-dir {args.run_dir}{where})")
    if not resumed:
        write_atomically(run_path / SETTINGS_FILE, settings.model_dump_json(indent=2))
    started = time.monotonic()
    store = open_node_store(run_path, url, settings.run_id)
    try:
        restore_run_files(store, run_path)  # what a resume on another machine lacks here
        keep_run_files(store, run_path, SETTINGS_FILE)
        with endpoint(settings, run_path, say, local_threads=args.local_threads) as (base_url, model):
            if settings.model != model:
                settings = settings.model_copy(update={"model": model})
            services = build_run_services(settings, comp, run_path, store, base_url, model, say)
            settings = services.settings
            write_atomically(run_path / SETTINGS_FILE, settings.model_dump_json(indent=2))
            keep_run_files(store, run_path, SETTINGS_FILE)
            selection = services.selection
            final = _search(services, resumed, url)
        elapsed = time.monotonic() - started
        wall = float(store.get_meta("wall_seconds", 0.0)) + elapsed  # type: ignore[arg-type]
        store.set_meta("wall_seconds", wall)
        # the branch the thread ended on (a thread forked in Studio holds others beside it)
        nodes = store.branch(final.get("head"), legacy_steps=0 if final.get("head") else final.get("step", 0))
        lower = bool(settings.lower_is_better)
        restore_run_files(store, run_path)  # the submission files of nodes recorded elsewhere
        summary = export_run(run_path, nodes, store.load_tree(lower, nodes),
                             run_id=settings.run_id, wall_seconds=wall,
                             settings=settings.model_dump(),
                             medal_report=medal_reporter_for(comp, lower), selection=selection,
                             stopped=final.get("stopped"))
        write_report_safely(run_path, say)  # tree.html and report/: a failure is one warning line
    finally:
        store.close()
    _print_summary(summary, run_path)
    return 0


def _ran_elsewhere(values: dict[str, Any]) -> bool:
    """Whether the step in flight ran its script in a workspace this machine lacks (a resume on
    another machine): its record would find no submission to keep."""
    where = (values.get("execution") or {}).get("workspace")
    return bool(where) and not Path(where).is_dir()


def _search(services: RunServices, resumed: bool, url: str = "") -> dict[str, Any]:
    """Run (or resume) the thread's search to its end; returns the final state's values."""
    settings = services.settings
    with open_checkpointer(services.run_dir, url) as saver:
        graph = build_search_graph().compile(checkpointer=saver)
        config: dict[str, Any] = {
            "configurable": {"thread_id": settings.run_id},
            "recursion_limit": settings.steps * 8 + 20,
        }
        snapshot = graph.get_state(config)
        # a superstep whose tasks all finished (their writes saved) before the kill has no `next`
        # but still has `tasks`: it is interrupted, not finished
        pending = bool(snapshot.next or snapshot.tasks)
        if pending and _ran_elsewhere(snapshot.values):
            # execute the step's script again here, as if its candidate had just been generated;
            # the seconds of the lost execution stay in `script_seconds` (spent, so budgeted).
            # The re-run's tasks have new ids: the interrupted ones hand over the node id they
            # claimed (a record killed before its checkpoint wrote a node on no branch, which the
            # re-run overwrites), while their workspaces keep their names (new ones are made here)
            services.store.release("node", [task.id for task in snapshot.tasks])
            graph.update_state(config, {"execution": None, "verdict": None}, as_node="generate")
        # The checkpoint is the source of truth: its `head` names the branch. A node stored by a
        # step whose checkpoint was never written is on no branch; the replayed step's task
        # claims the same id and writes it again, so nothing is trimmed.
        # A fresh run starts from step 0; an interrupted one continues where its checkpoint
        # stopped; a finished one asked for more steps starts its loop again from the state.
        graph_input: dict | None
        if not snapshot.values:
            graph_input = {"step": 0}
        elif pending:
            graph_input = None
        else:
            graph_input = {}
        context = attached_context(services)  # the run's settings, as Studio would send them, + services
        with RunProgress(settings.steps, int((snapshot.values or {}).get("step", 0))) as progress:
            # sync durability: each superstep's checkpoint is on disk before the next one starts
            # subgraphs=True: the strategy graphs' progress events reach the display too
            for _namespace, event in graph.stream(graph_input, config, context=context,
                                                  stream_mode="custom", durability="sync", subgraphs=True):
                progress.handle(event)
        return dict(graph.get_state(config).values or {})


def _print_summary(summary: dict[str, Any], run_path: Path) -> None:
    best = summary["best_metric"]
    direction = "lower" if summary["lower_is_better"] else "higher"
    print(
        f"done: {summary['steps']} nodes ({summary['buggy_nodes']} buggy), "
        f"best validation metric {best if best is not None else '-'} ({direction} is better), "
        f"valid submission: {'yes' if summary['valid_submission'] else 'no'}; "
        f"{summary['prompt_tokens'] + summary['completion_tokens']} tokens, "
        f"{summary['llm_seconds']:.0f} s LLM, {summary['wall_seconds']:.0f} s wall"
        + (f"; {describe_stop(summary['budget_stop'], summary['stopped_at_step'])}"
           if summary.get("stopped_by") == "budget" else "")
    )
    selection = summary.get("selection") or {}
    if selection.get("by") == "holdout" and summary["best_node_id"]:
        held = summary.get("best_node_holdout_score")
        line = (f"picked by the harness's held rows: node {summary['best_node_id']}"
                + (f" (holdout score {held:.6g})" if held is not None else ""))
        other = summary.get("best_by_self_report_id")
        if other and other != summary["best_node_id"]:
            line += f"; the METRIC lines alone would have picked node {other}"
        if summary.get("self_report_flags"):
            line += f"; {summary['self_report_flags']} node(s) reported far better than their holdout score"
        print(line)
    if summary.get("best_node_test_score") is not None:
        line = f"hidden test score of the best node: {summary['best_node_test_score']:.6g}"
        medals = summary.get("medals")
        if medals:
            won = [m for m in ("gold", "silver", "bronze") if medals.get(f"{m}_medal")]
            line += (f" ({won[0]} medal" if won else " (no medal") + (
                ", above median)" if medals.get("above_median") else ", not above median)")
        print(line)
    # the last lines say where to look
    print(f"outputs in {run_path}: tree.json, summary.json"
          + (", best_solution.py, submission.csv" if summary["best_node_id"] else ""))
    if (run_path / "tree.html").is_file():
        print(f"see the search: {run_path / 'tree.html'} (open in a browser); report: "
              f"{run_path / 'report' / 'report.md'}")


def main(argv: list[str] | None = None, *, claimed: bool = False) -> int:
    """Entry point; user errors become one line on stderr and exit code 2, a run that another
    process is running one line and exit code 75. `claimed`: the caller holds the run's claim
    (`graphs.persistence.claim_run`, as a sweep's cell runner does), so it is not taken again."""
    args = build_parser().parse_args(argv)
    try:
        return run(args, claimed=claimed)
    except RunBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except (UsageError, CompetitionError, UnknownStrategyError, EndpointError, SandboxError,
            LocalModelError, PersistenceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted; resume with --resume <run id> (printed at start)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
