"""Bytes written to the checkpoint per step must not grow with the tree.

Runs the real CLI (`graphs.run`) for N steps against the scripted loopback endpoint, with the
real sandbox and SQLite checkpointer, then reads the checkpoint database and prints the bytes
written for step 10 and for step N (checkpoint blobs + metadata + pending writes of that step's
five supersteps), their ratio, and the same for the node store rows. It also prints the
scaffold's own time per step (wall time between nodes minus LLM and script time) early and late
in the run, since that must stay flat too.

    python -m benchmark.checkpoint_bytes [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
from pathlib import Path

from graphs.run import main as run_main
from tests.doubles.stub import StubServer

SUPERSTEPS_PER_STEP = 5  # choose, generate, execute, review, record


def checkpoint_bytes_by_step(db: Path) -> dict[int, int]:
    """Bytes of checkpoints (+ metadata + writes) grouped by search step."""
    conn = sqlite3.connect(str(db))
    writes = dict(
        conn.execute(
            "SELECT checkpoint_id, SUM(LENGTH(value)) FROM writes GROUP BY checkpoint_id"
        ).fetchall()
    )
    per_step: dict[int, int] = {}
    for cid, blob, meta in conn.execute(
        "SELECT checkpoint_id, LENGTH(checkpoint), metadata FROM checkpoints"
    ):
        superstep = json.loads(meta)["step"]
        if superstep < 0:
            continue
        step = superstep // SUPERSTEPS_PER_STEP
        per_step[step] = per_step.get(step, 0) + blob + len(meta) + (writes.get(cid) or 0)
    conn.close()
    return per_step


def node_bytes_by_step(db: Path) -> dict[int, int]:
    """Bytes of each node row in the node store."""
    conn = sqlite3.connect(str(db))
    rows = conn.execute("SELECT step, LENGTH(data) FROM nodes").fetchall()
    conn.close()
    return dict(rows)


def scaffold_ms_by_step(tree_json: Path) -> dict[int, float]:
    """Per step: wall time since the previous node minus LLM and execution time, in ms."""
    nodes = sorted(json.loads(tree_json.read_text())["nodes"], key=lambda n: n["step"])
    out = {}
    for prev, node in zip(nodes, nodes[1:], strict=False):
        gap = node["created_at"] - prev["created_at"]
        out[node["step"]] = 1000 * (gap - node["llm_seconds"] - node["exec_seconds"])
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print the ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--early", type=int, default=10)
    p.add_argument("--sandbox", default="auto")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, StubServer() as stub:
        runs = Path(tmp) / "runs"
        code = run_main([
            "--task", str(Path(__file__).resolve().parent.parent / "tasks" / "tumor-diagnosis"),
            "--base-url", stub.base_url, "--steps", str(args.steps), "--run-dir", str(runs),
            "--exec-timeout", "60", "--sandbox", args.sandbox,
        ])
        if code != 0:
            return code
        run_path = next(runs.iterdir())
        cp = checkpoint_bytes_by_step(run_path / "checkpoints.sqlite")
        nb = node_bytes_by_step(run_path / "nodes.sqlite")
        sc = scaffold_ms_by_step(run_path / "tree.json")
    early, late = args.early - 1, args.steps - 1
    print(f"checkpoint bytes written at step {args.early}: {cp[early]}")
    print(f"checkpoint bytes written at step {args.steps}: {cp[late]}")
    print(f"ratio step {args.steps} / step {args.early}: {cp[late] / cp[early]:.3f}")
    print(f"node-store bytes at step {args.early}: {nb[early]}, at step {args.steps}: {nb[late]}")
    w = min(10, args.early)
    first_w = statistics.mean(cp[s] for s in range(args.early - w, args.early))
    last_w = statistics.mean(cp[s] for s in range(args.steps - w, args.steps))
    print(f"mean checkpoint bytes per step, steps {args.early - w + 1}-{args.early}: {first_w:.0f}, "
          f"steps {args.steps - w + 1}-{args.steps}: {last_w:.0f}, ratio {last_w / first_w:.3f}")
    win = 10
    first = [sc[s] for s in range(1, 1 + win) if s in sc]
    last = [sc[s] for s in range(args.steps - win, args.steps) if s in sc]
    if first and last:
        m1, m2 = statistics.median(first), statistics.median(last)
        print(f"scaffold time per step (median, ms): steps 2-{1 + win}: {m1:.1f}, "
              f"steps {args.steps - win + 1}-{args.steps}: {m2:.1f}, ratio {m2 / m1:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
