"""What each small-model aid is worth: runs of the embedded model with all aids on, and with each
one switched off, on bundled tasks and seeds, in one run of this script (issue 13's measurement).

    python -m benchmark.yield_ablation [--tasks tumor-diagnosis ...] [--seeds 0 1] [--steps 10]
        [--variants all no-repairs ...] [--local-model 1.5b] [--out runs/yield] [--exec-timeout 300]

Variants (each one flag of `graphs.run`, default on):
  all              every aid on (the default run)
  no-repairs       --repairs 0              (point 1: quick repairs inside a step)
  no-data-facts    --no-data-facts          (point 2: data facts in the stable prefix)
  no-known-errors  --no-known-errors        (point 3: known-error remedies in debug/repair prompts)
  aide-drafts      --num-drafts 5           (point 4: AIDE's 5 drafts instead of the step-fitted budget)
  no-branch-memory --no-branch-memory       (point 5: memory of the parent's lineage)
  review-failed    --review-failed-runs     (point 6: the LLM also reviews runs that already failed)

Per run: nodes valid / total, valid submission, LLM seconds per step, repair calls per node, hidden
test score of the best node. The table (markdown) is printed and written to OUT/yield.md, one JSON
line per run to OUT/yield.jsonl; runs already finished under OUT are read back, not run again, so
a long measurement can be stopped and continued. It is slow on CPU (about 10-15 minutes per task
and seed with the 1.5B model): run it in the background.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nodes.files import write_atomically

VARIANTS: dict[str, list[str]] = {
    "all": [],
    "no-repairs": ["--repairs", "0"],
    "no-data-facts": ["--no-data-facts"],
    "no-known-errors": ["--no-known-errors"],
    "aide-drafts": ["--num-drafts", "5"],
    "no-branch-memory": ["--no-branch-memory"],
    "review-failed": ["--review-failed-runs"],
}
DEFAULT_TASKS = ["tumor-diagnosis", "diabetes-progression", "digit-images", "fortune-topics",
                 "word-pronunciation", "spoken-digits"]


def run_stats(run_path: Path) -> dict[str, Any] | None:
    """The measured numbers of one finished run, or None when it has not finished."""
    summary_file, tree_file = run_path / "summary.json", run_path / "tree.json"
    if not summary_file.is_file() or not tree_file.is_file():
        return None
    summary = json.loads(summary_file.read_text())
    nodes = json.loads(tree_file.read_text())["nodes"]
    valid = sum(1 for n in nodes if not n["is_buggy"])
    repairs = sum(1 for n in nodes for c in (n.get("calls") or [])
                  if c.get("role") == "repairer")
    steps = max(1, len(nodes))
    return {
        "nodes": len(nodes), "valid_nodes": valid, "valid_submission": bool(summary.get("valid_submission")),
        "llm_s_per_step": round(float(summary.get("llm_seconds") or 0.0) / steps, 1),
        "repairs_per_node": round(repairs / steps, 2),
        "test_score": summary.get("best_node_test_score"),
        "wall_s": round(float(summary.get("wall_seconds") or 0.0)),
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| variant | task | seed | valid nodes | valid submission | LLM s/step | repairs/node "
            "| test score |\n"
            "|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        score = "-" if r["test_score"] is None else f"{r['test_score']:.4g}"
        lines.append(f"| {r['variant']} | {r['task']} | {r['seed']} | {r['valid_nodes']}/{r['nodes']} | "
                     f"{'yes' if r['valid_submission'] else 'no'} | {r['llm_s_per_step']} | "
                     f"{r['repairs_per_node']} | {score} |")
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_variant.setdefault(r["variant"], []).append(r)
    lines += ["", "| variant | runs | valid nodes | runs with a valid submission | LLM s/step |",
              "|---|---|---|---|---|"]
    for name, rs in by_variant.items():
        nodes = sum(r["nodes"] for r in rs)
        valid = sum(r["valid_nodes"] for r in rs)
        subs = sum(r["valid_submission"] for r in rs)
        per_step = sum(r["llm_s_per_step"] for r in rs) / len(rs)
        lines.append(f"| {name} | {len(rs)} | {valid}/{nodes} ({valid / max(1, nodes):.0%}) | "
                     f"{subs}/{len(rs)} | "
                     f"{per_step:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.yield_ablation")
    p.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--local-model", default="1.5b")
    p.add_argument("--base-url", default=None, help="measure another endpoint instead of the embedded model")
    p.add_argument("--exec-timeout", type=float, default=300)
    p.add_argument("--out", default="runs/yield")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    from tasks.prepare import prepare_task

    rows: list[dict[str, Any]] = []
    for task in args.tasks:
        task_dir = prepare_task(task)
        for seed in args.seeds:
            for variant in args.variants:
                run_id = f"{task}-s{seed}-{variant}"
                run_path = out / "runs" / run_id
                stats = run_stats(run_path)
                if stats is None:
                    endpoint = (["--base-url", args.base_url] if args.base_url
                                else ["--local-model", args.local_model])
                    resume = ["--resume", run_id] if (run_path / "run.json").is_file() else [
                        "--task", str(task_dir), "--run-id", run_id, "--seed", str(seed)]
                    cmd = [sys.executable, "-m", "graphs.run", *resume, "--steps", str(args.steps),
                           "--run-dir", str(out / "runs"), "--exec-timeout", str(args.exec_timeout),
                           *([] if resume[0] == "--resume" else [*endpoint, *VARIANTS[variant]])]
                    started = time.monotonic()
                    print(f"[{time.strftime('%H:%M:%S')}] {run_id}: {' '.join(cmd[3:])}", flush=True)
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                    if proc.returncode != 0:
                        print(f"  failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}", flush=True)
                        continue
                    stats = run_stats(run_path)
                    if stats is None:
                        continue
                    print(f"  {stats['valid_nodes']}/{stats['nodes']} valid, submission "
                          f"{'yes' if stats['valid_submission'] else 'no'}, "
                          f"{time.monotonic() - started:.0f} s",
                          flush=True)
                row = {"variant": variant, "task": task, "seed": seed, **stats}
                rows.append(row)
                write_atomically(out / "yield.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
                write_atomically(out / "yield.md", table(rows) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
