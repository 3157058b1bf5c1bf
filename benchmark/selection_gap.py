"""How well each validation number predicts the hidden test score (issue 16's measurement):
over the valid nodes of real-model runs, the rank correlation with the hidden test score of the
scripts' own METRIC lines and of the harness's holdout score, and how often each picked the
node with the best test score.

    python -m benchmark.selection_gap [--tasks tumor-diagnosis ...] [--seeds 0 1] [--steps 10]
        [--out runs/selection] [--local-model 1.5b | --base-url URL]
    python -m benchmark.selection_gap --runs RUN_DIR [RUN_DIR ...]   # only read finished runs
    python -m benchmark.selection_gap --rows benchmark/measured/yield.jsonl   # or yield_ablation's rows

Without --runs it makes the runs first (benchmark.yield_ablation's "all" variant: every default
on, so the harness holds its split; finished runs are read back, not run again), then reads them.
Per run, over the nodes that ran cleanly and were graded: Spearman's rho of each number with the
test score (in the task's direction, so 1 means the same order), and whether the node each
number ranks first has the run's best test score. Printed as a table and written to
OUT/selection.md and OUT/selection.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from scipy.stats import spearmanr

from nodes.files import write_atomically


def _first(nodes: list[dict[str, Any]], key: str, lower: bool) -> dict[str, Any] | None:
    """The node with the best `key` (earliest on ties), as selection picks it."""
    scored = [n for n in nodes if n.get(key) is not None and math.isfinite(n[key])]
    if not scored:
        return None
    sign = 1.0 if lower else -1.0
    return min(scored, key=lambda n: (sign * n[key], n["step"]))


def _rho(nodes: list[dict[str, Any]], key: str) -> float | None:
    pairs = [(n[key], n["test_score"]) for n in nodes if n.get(key) is not None]
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return None
    rho = spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic
    return None if rho is None or math.isnan(rho) else float(rho)


def numbers(name: str, nodes: list[dict[str, Any]], lower: bool) -> dict[str, Any]:
    """One run's numbers from its nodes (tree.json's keys)."""
    graded = [n for n in nodes if not n.get("is_buggy", True) and n.get("test_score") is not None]
    best_test = _first(graded, "test_score", lower)
    out: dict[str, Any] = {"run": name, "graded_nodes": len(graded),
                           "holdout_nodes": sum(1 for n in graded if n.get("holdout_score") is not None)}
    for label, key in (("self", "metric"), ("holdout", "holdout_score")):
        pick = _first(graded, key, lower)
        out[f"rho_{label}"] = _rho(graded, key)
        out[f"hit_{label}"] = (None if pick is None or best_test is None
                               else int(pick["test_score"] == best_test["test_score"]))
    return out


def run_numbers(run_path: Path) -> dict[str, Any] | None:
    """One finished run's numbers; None when it has no tree.json."""
    tree_file = run_path / "tree.json"
    if not tree_file.is_file():
        return None
    tree = json.loads(tree_file.read_text())
    return numbers(run_path.name, tree["nodes"], bool(tree.get("lower_is_better")))


def row_numbers(row: dict[str, Any]) -> dict[str, Any] | None:
    """The numbers of one row of `benchmark.yield_ablation` (its node records); None for a row
    written before rows carried them."""
    records = row.get("node_records")
    if records is None:
        return None
    nodes = [{"step": r["step"], "is_buggy": r["buggy"], "metric": r.get("metric"),
              "holdout_score": r.get("holdout"), "test_score": r.get("test")} for r in records]
    name = f"{row['task']}-s{row['seed']}-{row['variant']}"
    return numbers(name, nodes, bool(row.get("lower_is_better")))


def _mean(values: list[float]) -> str:
    return f"{sum(values) / len(values):.3f} (n={len(values)})" if values else "n/a"


def table(rows: list[dict[str, Any]]) -> str:
    def fmt(v: Any) -> str:
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    lines = ["| run | graded nodes | with holdout | rho self-report | rho holdout | self-report picked the "
             "best test node | holdout picked it |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['graded_nodes']} | {r['holdout_nodes']} | {fmt(r['rho_self'])} | "
                     f"{fmt(r['rho_holdout'])} | {fmt(r['hit_self'])} | {fmt(r['hit_holdout'])} |")
    lines += ["", "| number | mean rho over runs | picked the best test node |", "|---|---|---|"]
    for name in ("self", "holdout"):
        rhos = [r[f"rho_{name}"] for r in rows if r[f"rho_{name}"] is not None]
        hits = [r[f"hit_{name}"] for r in rows if r[f"hit_{name}"] is not None]
        label = "self-report (METRIC line)" if name == "self" else "harness holdout score"
        lines.append(f"| {label} | {_mean(rhos)} | {sum(hits)} of {len(hits)} runs |")
    return "\n".join(lines)


def make_runs(args: argparse.Namespace, out: Path) -> list[Path]:
    """Make the runs (benchmark.yield_ablation's "all" variant; finished ones are read back) and
    return their directories."""
    from benchmark import yield_ablation

    yargs = ["--tasks", *args.tasks, "--seeds", *map(str, args.seeds), "--steps", str(args.steps),
             "--variants", "all", "--local-model", args.local_model, "--out", str(out)]
    if args.base_url:
        yargs += ["--base-url", args.base_url]
    yield_ablation.main(yargs)
    return sorted(p for p in (out / "runs").iterdir() if p.is_dir())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.selection_gap")
    p.add_argument("--runs", nargs="+", default=None, help="finished run directories to read (no runs made)")
    p.add_argument("--rows", nargs="+", default=None,
                   help="yield.jsonl files of benchmark.yield_ablation to read (no runs made; every variant "
                        "holds the split)")
    p.add_argument("--tasks", nargs="+", default=["tumor-diagnosis", "diabetes-progression"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--local-model", default="1.5b")
    p.add_argument("--base-url", default=None)
    p.add_argument("--out", default="runs/selection")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    if args.rows:
        from benchmark.yield_ablation import read_rows

        found = [row_numbers(r) for f in args.rows for r in read_rows(Path(f))]
        rows = [r for r in found if r is not None]
    else:
        paths = [Path(r).resolve() for r in args.runs] if args.runs else make_runs(args, out)
        rows = [r for r in (run_numbers(p) for p in paths) if r is not None]
    text = table(rows)
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "selection.md", text + "\n")
    write_atomically(out / "selection.json", json.dumps(rows, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
