"""What each small-model aid is worth: runs of the embedded model with all aids on, and with each
one switched off, on bundled tasks and seeds, in one run of this script (issue 13's measurement).

    python -m benchmark.yield_ablation [--tasks tumor-diagnosis ...] [--seeds 0 1] [--steps 10]
        [--variants all no-repairs ...] [--local-model 1.5b] [--out runs/yield] [--exec-timeout 300]
        [--jobs N [--native]] [--base-url URL --model NAME]
    python -m benchmark.yield_ablation --out benchmark/measured --report   # the table of the rows only

Variants (each one flag of `graphs.run`, default on):
  all              every aid on (the default run)
  no-repairs       --repairs 0              (point 1: quick repairs inside a step)
  no-data-facts    --no-data-facts          (point 2: data facts in the stable prefix)
  no-known-errors  --no-known-errors        (point 3: known-error remedies in debug/repair prompts)
  aide-drafts      --num-drafts 5           (point 4: AIDE's 5 drafts instead of the step-fitted budget)
  no-branch-memory --no-branch-memory       (point 5: memory of the parent's lineage)
  review-failed    --review-failed-runs     (point 6: the LLM also reviews runs that already failed)
  no-auto-imports  --no-auto-imports        (the harness does not add the imports of undefined names)
  no-revert-repairs --no-revert-repairs     (a repair that gets less far than the script before it is kept)
  no-splice-fragments --no-splice-fragments (a repair answered with a fragment is not put in its place)
  no-outline-names --no-outline-names     (the harness does not add the outline line of an undefined name)
  no-improve-again --no-improve-again     (an improve answer that changes nothing is run, not asked again)
  no-vectorize-strings --no-vectorize-strings (no text vectorizer put before an estimator given raw strings)

Per run: nodes valid / total, valid submission, LLM seconds and tokens (prompt + completion) per
step, repair calls per node, hidden test score of the best node, and one small record per node
(stage, buggy or not, its METRIC line, the harness's holdout score, the hidden test score, why it was
buggy) -- what
`benchmark.selection_gap --rows` reads. The table (markdown) is printed and written to OUT/yield.md,
one JSON line per run to OUT/yield.jsonl, with the commit the code was at. Measure from a clone
that stays at one commit while you edit elsewhere (every run is a new process importing the
code), and complete a set of variants at the commit its rows name: a variant pairs only with the
`all` row of its own commit.

The measurement accumulates: a run whose row is already in OUT/yield.jsonl (same variant, task,
seed, steps and model) is not run again, and a run finished under OUT/runs is read back, so it
can be stopped and continued, and its rows kept in the repository grow across machines
(`benchmark/measured/` holds ours).

It is slow on CPU (about 25 minutes a run with the 1.5B model on 2 cores, repairs included): run
it in the background. `--jobs N` runs N at once; with `--native` they share one llama.cpp native server
(`scripts/build_llama_server.sh`) with N parallel slots serving the same weights, which decodes
the N runs' requests together (more tokens per second in all; each run's LLM seconds per step
then count the waits, so compare them only between rows with the same `server`). On 2 cores that
buys little: 3 slots decoded 12 tokens/s in all against 11 for one request at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nodes.execute import (
    ABSENT_DROP_STAGE,
    COUNTERPART_STAGE,
    HARNESS_STAGES,
    HOISTED_STAGE,
    MOVED_STAGE,
    REMOVED_API_STAGE,
    REORDERED_STAGE,
    SUBSTITUTED_STAGE,
    TEST_ROWS_STAGE,
    UNVECTORIZED_STAGE,
    VECTORIZED_STAGE,
)
from nodes.files import write_atomically
from nodes.operators import UNCHANGED_STAGE
from serving.process import usable_cores

VARIANTS: dict[str, list[str]] = {
    "all": [],
    "no-repairs": ["--repairs", "0"],
    "no-data-facts": ["--no-data-facts"],
    "no-known-errors": ["--no-known-errors"],
    "aide-drafts": ["--num-drafts", "5"],
    "no-branch-memory": ["--no-branch-memory"],
    "review-failed": ["--review-failed-runs"],
    "no-auto-imports": ["--no-auto-imports"],
    "no-revert-repairs": ["--no-revert-repairs"],
    "no-splice-fragments": ["--no-splice-fragments"],
    "no-outline-names": ["--no-outline-names"],
    "no-improve-again": ["--no-improve-again"],
    "no-vectorize-strings": ["--no-vectorize-strings"],
}
DEFAULT_TASKS = ["tumor-diagnosis", "diabetes-progression", "digit-images", "fortune-topics",
                 "word-pronunciation", "spoken-digits"]
ROW_KEY = ("variant", "task", "seed", "steps", "model")


def node_records(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One small record per node of a tree.json: what the selection measurement and a reader of
    the failures need, without the scripts and their output."""
    return [_node_record(n, (n.get("extra") or {}).get("repairs") or []) for n in nodes]


def _node_record(n: dict[str, Any], repairs: list[dict[str, Any]]) -> dict[str, Any]:
    calls = [r for r in repairs if r.get("stage") not in (*HARNESS_STAGES, UNCHANGED_STAGE)]  # repair calls
    return {
        "step": n["step"], "stage": n.get("stage"), "buggy": bool(n["is_buggy"]),
        "metric": n.get("metric"), "holdout": n.get("holdout_score"), "test": n.get("test_score"),
        "repairs": sum(1 for c in (n.get("calls") or []) if c.get("role") == "repairer"),
        "imports_added": sum(1 for r in repairs if r.get("stage") == "imports"),
        "outline_added": sum(1 for r in repairs if r.get("stage") == "outline"),
        "shell_removed": sum(1 for r in repairs if r.get("stage") == "shell"),
        "imports_moved": sum(1 for r in repairs if r.get("stage") == MOVED_STAGE),
        "asked_again": sum(1 for r in repairs if r.get("stage") == UNCHANGED_STAGE),
        "vectorized": sum(1 for r in repairs if r.get("stage") == VECTORIZED_STAGE),
        "hoisted": sum(1 for r in repairs if r.get("stage") == HOISTED_STAGE),
        "reordered": sum(1 for r in repairs if r.get("stage") == REORDERED_STAGE),
        "substituted": sum(1 for r in repairs if r.get("stage") == SUBSTITUTED_STAGE),
        "test_rows": sum(1 for r in repairs if r.get("stage") == TEST_ROWS_STAGE),
        "absent_drops": sum(1 for r in repairs if r.get("stage") == ABSENT_DROP_STAGE),
        "unvectorized": sum(1 for r in repairs if r.get("stage") == UNVECTORIZED_STAGE),
        "counterparts": sum(1 for r in repairs if r.get("stage") == COUNTERPART_STAGE),
        "api_rewrites": sum(1 for r in repairs if r.get("stage") == REMOVED_API_STAGE),
        "fragments_spliced": sum(1 for r in calls if r.get("fragment")),
        "parent_splices": sum(1 for r in repairs if r.get("stage") == "parent" and r.get("kept") != "before"),
        "repairs_set_aside": sum(1 for r in calls if r.get("kept") == "before"),
        # the known remedies each repair call's request carried, and whether that repair got past its error
        "remedies": [{"names": r["remedies"], "fixed": r.get("fixed")} for r in calls if r.get("remedies")],
        "bug": " ".join(str(n.get("bug_reason") or "").split())[:200],
    }


def run_stats(run_path: Path) -> dict[str, Any] | None:
    """The measured numbers of one finished run, or None when it has not finished."""
    summary_file, tree_file = run_path / "summary.json", run_path / "tree.json"
    if not summary_file.is_file() or not tree_file.is_file():
        return None
    summary = json.loads(summary_file.read_text())
    tree = json.loads(tree_file.read_text())
    nodes = tree["nodes"]
    records = node_records(nodes)
    steps = max(1, len(nodes))
    return {
        "nodes": len(nodes), "valid_nodes": sum(1 for r in records if not r["buggy"]),
        "valid_submission": bool(summary.get("valid_submission")),
        "llm_s_per_step": round(float(summary.get("llm_seconds") or 0.0) / steps, 1),
        **token_stats(summary, steps),
        "repairs_per_node": round(sum(r["repairs"] for r in records) / steps, 2),
        "test_score": summary.get("best_node_test_score"),
        "wall_s": round(float(summary.get("wall_seconds") or 0.0)),
        "lower_is_better": bool(tree.get("lower_is_better")),
        "selection_by": (summary.get("selection") or {}).get("by"),
        "node_records": records,
    }


def token_stats(summary: dict[str, Any], steps: int) -> dict[str, int]:
    """Tokens per step (prompt + completion, and completion alone): the compute a run spent, in a
    unit that does not depend on the machine's speed as LLM seconds do."""
    prompt, completion = int(summary.get("prompt_tokens") or 0), int(summary.get("completion_tokens") or 0)
    return {"tokens_per_step": round((prompt + completion) / steps),
            "completion_tokens_per_step": round(completion / steps)}


def with_run_tokens(rows: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """Rows measured before rows carried tokens get them from their run's summary.json when its
    directory is still in OUT/runs (the row was read from that directory); others stay without."""
    for row in rows:
        summary = out / "runs" / run_id(row["task"], row["seed"], row["variant"]) / "summary.json"
        if "tokens_per_step" not in row and summary.is_file():
            row.update(token_stats(json.loads(summary.read_text()), max(1, int(row["nodes"]))))
    return rows


def run_id(task: str, seed: int, variant: str) -> str:
    """The run directory's name under OUT/runs."""
    return f"{task}-s{seed}-{variant}"


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    write_atomically(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of an earlier measurement (none when the file does not exist)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row.get(k) for k in ROW_KEY)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| variant | task | seed | valid nodes | valid submission | LLM s/step | tokens/step "
            "| repairs/node | test score | server | commit |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['task']} | {r['seed']} | {r['valid_nodes']}/{r['nodes']} | "
                     f"{'yes' if r['valid_submission'] else 'no'} | {r['llm_s_per_step']} | "
                     f"{r.get('tokens_per_step', '-')} | {r['repairs_per_node']} | "
                     f"{_num(r['test_score'], '.4g')} | {r.get('server', 'embedded')} | "
                     f"{r.get('commit', '-')} |")
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_variant.setdefault(r["variant"], []).append(r)
    lines += ["", "| variant | runs | valid nodes | runs with a valid submission | LLM s/step "
              "| tokens/step |", "|---|---|---|---|---|---|"]
    for name, rs in by_variant.items():
        nodes = sum(r["nodes"] for r in rs)
        valid = sum(r["valid_nodes"] for r in rs)
        subs = sum(r["valid_submission"] for r in rs)
        tokens = _mean([r["tokens_per_step"] for r in rs if "tokens_per_step" in r])
        lines.append(f"| {name} | {len(rs)} | {valid}/{nodes} ({valid / max(1, nodes):.0%}) | "
                     f"{subs}/{len(rs)} | {_mean([r['llm_s_per_step'] for r in rs]):.1f} | "
                     f"{_num(tokens, '.0f')} |")
    lines += ["", *grid(rows)]
    paired = paired_effects(rows)
    if paired:
        lines += ["", "Each variant against `all` on the same task, seed and commit (only pairs "
                  "measured both ways); the compute columns are means over the pairs:",
                  "", "| variant | pairs | valid nodes, variant - all | valid submissions, variant - all "
                  "| LLM s/step, variant - all | tokens/step, variant - all |",
                  "|---|---|---|---|---|---|"]
        for name, e in paired.items():
            lines.append(f"| {name} | {e['pairs']} | {e['valid_nodes']:+d} | {e['valid_submissions']:+d} | "
                         f"{e['llm_s_per_step']:+.1f} | {_num(e['tokens_per_step'], '+.0f')} |")
    return "\n".join(lines)


def grid(rows: list[dict[str, Any]], variant: str = "all") -> list[str]:
    """The newest `variant` run of each task and seed, at the most common step count: a task by
    seed table whose cells name their commit, and the commit most cells share (rows are kept in the
    order they were measured, so the newest is the last)."""
    runs = [r for r in rows if r["variant"] == variant]
    if not runs:
        return []
    steps = Counter(r["steps"] for r in runs).most_common(1)[0][0]
    newest = {(r["task"], r["seed"]): r for r in runs if r["steps"] == steps}
    tasks = list(dict.fromkeys(t for t, _ in newest))
    seeds = sorted({s for _, s in newest})
    commit, shared = Counter(r.get("commit", "-") for r in newest.values()).most_common(1)[0]
    lines = [f"The newest `{variant}` run of each task and seed ({steps} steps): valid nodes, valid "
             f"submission, commit. {shared} of {len(tasks) * len(seeds)} cells are at {commit}.",
             "", "| task | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|" + "---|" * len(seeds)]
    for t in tasks:
        cells = []
        for s in seeds:
            r = newest.get((t, s))
            cells.append("-" if r is None else f"{r['valid_nodes']}/{r['nodes']} "
                         f"{'yes' if r['valid_submission'] else 'no'} ({r.get('commit', '-')})")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return lines


def paired_effects(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant, against the `all` row of the same task, seed, steps, model and commit (rows
    measured at other commits measure other code, so they pair with none): the pairs, the sums of
    the valid-node and valid-submission differences, and the mean differences of LLM seconds and
    tokens per step (tokens None when no pair carries them)."""
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (*row_key(r)[1:], r.get("commit"))

    base = {key(r): r for r in rows if r["variant"] == "all"}
    pairs: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for r in rows:
        b = base.get(key(r))
        if r["variant"] != "all" and b is not None:
            pairs.setdefault(r["variant"], []).append((r, b))
    return {name: {
        "pairs": len(ps),
        "valid_nodes": sum(r["valid_nodes"] - b["valid_nodes"] for r, b in ps),
        "valid_submissions": sum(int(r["valid_submission"]) - int(b["valid_submission"]) for r, b in ps),
        "llm_s_per_step": _mean([r["llm_s_per_step"] - b["llm_s_per_step"] for r, b in ps]),
        "tokens_per_step": _mean([r["tokens_per_step"] - b["tokens_per_step"] for r, b in ps
                                  if "tokens_per_step" in r and "tokens_per_step" in b]),
    } for name, ps in pairs.items()}


def launch(cmd: list[str]) -> subprocess.CompletedProcess:
    """One run of `graphs.run`, its output captured."""
    return subprocess.run(cmd, capture_output=True, text=True)


def code_version() -> str:
    """The commit the runs' code is at (`+dirty` with uncommitted changes to tracked files): rows
    measured at different commits measure different code."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


@contextlib.contextmanager
def native_server(local_model: str, slots: int, out: Path) -> Iterator[tuple[str, str]]:
    """llama.cpp's native server with `slots` parallel slots on the embedded model's weights:
    yields (base_url, model name), the name the embedded server would give them."""
    from serving.native import NativeServer
    from serving.weights import ensure_local_model

    path = Path(ensure_local_model(local_model, progress=lambda m: print(m, flush=True)))
    server = NativeServer(path, model_alias=path.stem, n_parallel=slots, n_threads=usable_cores(),
                          log_path=out / "llama-server.log")
    with server:
        print(f"llama-server with {slots} slots at {server.base_url}, serving {path.stem}", flush=True)
        yield server.base_url, path.stem


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.yield_ablation")
    p.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--local-model", default="1.5b")
    p.add_argument("--base-url", default=None, help="measure another endpoint instead of the embedded model")
    p.add_argument("--model", default=None, help="the model at --base-url (default: the one it serves)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    p.add_argument("--native", action="store_true",
                   help="serve the embedded model's weights with llama.cpp's native server, --jobs slots")
    p.add_argument("--exec-timeout", type=float, default=300)
    p.add_argument("--out", default="runs/yield")
    p.add_argument("--report", action="store_true",
                   help="only rewrite OUT/yield.md from OUT/yield.jsonl (and add the tokens of rows "
                        "that lack them from their run directories in OUT/runs)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    if args.native and args.base_url:
        p.error("--native serves the embedded model itself: it does not take --base-url")
    out = Path(args.out).resolve()
    if args.report:
        rows = read_rows(out / "yield.jsonl")
        filled = with_run_tokens([dict(r) for r in rows], out)
        if filled != rows:  # tokens read from run directories that will not outlive this machine
            write_rows(out / "yield.jsonl", filled)
        text = table(filled)
        write_atomically(out / "yield.md", text + "\n")
        print(text)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    from tasks.prepare import prepare_task

    jobs = [(task, seed, variant) for seed in args.seeds for task in args.tasks for variant in args.variants]
    task_dirs = {task: prepare_task(task) for task in args.tasks}
    model_name = args.model or args.base_url or args.local_model
    rows = with_run_tokens(read_rows(out / "yield.jsonl"), out)
    done = {row_key(r) for r in rows}
    def measured(task: str, seed: int, variant: str) -> bool:
        return row_key({"variant": variant, "task": task, "seed": seed, "steps": args.steps,
                        "model": model_name}) in done

    todo = [job for job in jobs if not measured(*job)]
    if len(todo) < len(jobs):
        print(f"{len(jobs) - len(todo)} of {len(jobs)} runs already measured in {out / 'yield.jsonl'}",
              flush=True)
    lock = threading.Lock()
    version = code_version()  # of the rows measured now (a run read back from OUT/runs included)

    def record(row: dict[str, Any]) -> None:
        with lock:
            rows.append(row)
            write_rows(out / "yield.jsonl", rows)
            write_atomically(out / "yield.md", table(rows) + "\n")

    def measure(job: tuple[str, int, str], endpoint: list[str], server: str) -> None:
        task, seed, variant = job
        name = run_id(task, seed, variant)
        run_path = out / "runs" / name
        stats = run_stats(run_path)
        if stats is None:
            resume = ["--resume", name] if (run_path / "run.json").is_file() else [
                "--task", str(task_dirs[task]), "--run-id", name, "--seed", str(seed),
                *VARIANTS[variant]]
            moved = endpoint[:2] if endpoint[0] == "--base-url" else []  # a resumed run may move endpoint
            cmd = [sys.executable, "-m", "graphs.run", *resume, "--steps", str(args.steps),
                   "--run-dir", str(out / "runs"), "--exec-timeout", str(args.exec_timeout),
                   *(moved if resume[0] == "--resume" else endpoint)]
            started = time.monotonic()
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd[3:])}", flush=True)
            proc = launch(cmd)
            if proc.returncode != 0:
                print(f"  {name} failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}", flush=True)
                return
            stats = run_stats(run_path)
            if stats is None:
                return
            print(f"  {name}: {stats['valid_nodes']}/{stats['nodes']} valid, submission "
                  f"{'yes' if stats['valid_submission'] else 'no'}, {time.monotonic() - started:.0f} s",
                  flush=True)
        record({"variant": variant, "task": task, "seed": seed, "steps": args.steps, "model": model_name,
                "server": server, "jobs": args.jobs, "commit": version, **stats})

    def measure_all(endpoint: list[str], server: str) -> None:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for future in [pool.submit(measure, job, endpoint, server) for job in todo]:
                future.result()

    if args.native and todo:
        from serving.native import LlamaServerNotFound

        try:
            with native_server(args.local_model, args.jobs, out) as (url, name):
                measure_all(["--base-url", url, "--model", name], f"native x{args.jobs}")
        except LlamaServerNotFound as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    elif args.base_url:
        measure_all(["--base-url", args.base_url, *(["--model", args.model] if args.model else [])],
                    args.base_url)
    else:
        measure_all(["--local-model", args.local_model], "embedded")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
