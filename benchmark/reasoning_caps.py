"""Answers cut at the generation cap, per role: the old fixed caps against reasoning budgets.

Runs each strategy on the toy task against the emulated reasoning endpoint
(`tests.doubles.reasoning_server`, an R1 distill that thinks `--think-tokens` tokens before every
answer), once with `--reasoning-budget 0` (the caps the roles had before: review 400, reflect 600,
judge 300, plan 1000, metric direction 200, coder 4096) and once with the default budget, and
prints per role the answers given, those lost to the cap and those recovered by the one retry
with a larger cap, plus the rounds self-reflection actually ran and how often a fallback decided
for the model. Self-consistency runs on a task whose scripts all crash, so its judge is asked
every step; the metric direction is asked once per setting on a folder without a grader.

    python -m benchmark.reasoning_caps [--think-tokens 2000] [--steps 3] [--rounds 3]

A dev benchmark: it imports the emulator from tests/ (run it from the repository root).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from graphs.run import main as run_main
from nodes.direction import ask_metric_direction
from nodes.usage import Usage
from serving.llm import LLMSettings, endpoint_context_length, make_chat_model
from tests.conftest import make_toy_task
from tests.doubles.reasoning_server import THINK_MARKER, ReasoningServer

STRATEGIES = ("aide", "self_consistency", "self_reflection", "planner_coder")
SETTINGS = {"old fixed caps": ["--reasoning-budget", "0"], "reasoning budgets": []}
ROLES = ("coder", "sampler", "reviewer", "reflector", "planner", "judge", "direction")


def _task(root: Path, strategy: str) -> Path:
    task = make_toy_task(root / f"task-{strategy}")
    if strategy == "self_consistency":  # every script crashes: ties the judge has to settle
        desc = task / "description.md"
        desc.write_text(desc.read_text() + "\nstub-outcome: crash\n")
    return task


def run_case(server: ReasoningServer, root: Path, strategy: str, extra: list[str],
             args: Any) -> dict[str, Any]:
    """One run; its tree and summary."""
    runs = root / "runs"
    run_id = f"{strategy}-{len(list(runs.glob('*'))) if runs.exists() else 0}"
    argv = ["--task", str(_task(root, strategy)), "--strategy", strategy, "--steps", str(args.steps),
            "--samples", str(args.samples), "--rounds", str(args.rounds), "--base-url", server.base_url,
            "--run-dir", str(runs), "--run-id", run_id, "--exec-timeout", "20", "--sandbox", "plain", *extra]
    with contextlib.redirect_stdout(io.StringIO()):
        rc = run_main(argv)
    if rc != 0:
        raise SystemExit(f"run {strategy} {' '.join(extra)} exited with {rc}")
    return {"tree": json.loads((runs / run_id / "tree.json").read_text()),
            "summary": json.loads((runs / run_id / "summary.json").read_text())}


def direction_usage(server: ReasoningServer, extra: list[str]) -> Usage:
    """The metric-direction question, asked once the way a run on an ungraded folder asks it."""
    budget = int(extra[1]) if extra else None
    llm = make_chat_model(LLMSettings(base_url=server.base_url, model=server.model, reasoning_budget=budget,
                                      context_len=endpoint_context_length(server.base_url, server.model)))
    _answer, usage = ask_metric_direction(llm, "The metric is accuracy.", system_prompt=False)
    return usage


def tally(calls: list[Any]) -> dict[str, dict[str, int]]:
    """Per role: answers (calls not retried, not failed), lost to the cap, recovered by a retry."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"answers": 0, "cut": 0, "retried": 0})
    for c in calls:
        row = out[c["role"]]
        if c.get("retried"):
            row["retried"] += 1
        elif c.get("error") is None:
            row["answers"] += max(1, c.get("choices", 1))
            row["cut"] += max(c.get("cut_choices", 0), 1) if c.get("cut") else 0
    return out


def measure(args: Any) -> dict[str, Any]:
    """Every setting's per-role tally, self-reflection's rounds, fallbacks and leaked thinking."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, ReasoningServer(think_tokens=args.think_tokens) as server:
        for name, extra in SETTINGS.items():
            started = time.monotonic()
            calls: list[dict[str, Any]] = []
            sr_rounds: list[int] = []
            fallbacks = 0
            leaked = 0
            for strategy in STRATEGIES:
                out = run_case(server, Path(tmp) / name.replace(" ", "-"), strategy, extra, args)
                for node in out["tree"]["nodes"]:
                    calls += node["calls"]
                    details = node["extra"].get("strategy", {})
                    if strategy == "self_reflection":
                        sr_rounds.append(len(details.get("rounds", [])))
                    fallbacks += sum(bool(r.get("fallback")) for r in details.get("rounds", []))
                    fallbacks += len(details.get("plan_fallbacks", []))
                    fallbacks += "judge fallback" in details.get("rule", "")
                    reviewed = any(c["role"] == "reviewer" for c in node["calls"])
                    fallbacks += reviewed and not node["review"].startswith("scripted review")
                    shown = node["code"] + node["plan"] + node["review"] + json.dumps(details)
                    leaked += THINK_MARKER in shown
            calls += [c.model_dump() for c in direction_usage(server, extra).calls]
            results[name] = {"roles": tally(calls), "sr_rounds": sr_rounds, "fallbacks": fallbacks,
                             "leaked": leaked, "seconds": time.monotonic() - started}
    return results


def print_table(results: dict[str, Any], args: Any) -> None:
    """The comparison as a Markdown table."""
    names = list(results)
    print(f"thinking: {args.think_tokens} tokens before every answer; {args.steps} steps per strategy, "
          f"{args.samples} samples, {args.rounds} rounds\n")
    head = " | ".join(f"{n}: answers / cut / retried" for n in names)
    print(f"| role | {head} |")
    print("|---|" + "---|" * len(names))
    for role in ROLES:
        rows = [results[n]["roles"].get(role) for n in names]
        if not any(rows):
            continue
        cells = " | ".join(f"{r['answers']} / {r['cut']} / {r['retried']}" if r else "-" for r in rows)
        print(f"| {role} | {cells} |")
    rounds = [results[n]["sr_rounds"] for n in names]
    cells = " | ".join(f"{r} (mean {sum(r) / max(1, len(r)):.1f})" for r in rounds)
    print(f"| self-reflection rounds per expansion | {cells} |")
    print("| fallbacks decided for the model (review, reflect, plan, judge) | "
          + " | ".join(str(results[n]["fallbacks"]) for n in names) + " |")
    print("| thinking leaked into code, plan, review or strategy details | "
          + " | ".join(str(results[n]["leaked"]) for n in names) + " |")
    print("| wall seconds | " + " | ".join(f"{results[n]['seconds']:.0f}" for n in names) + " |")


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print it."""
    p = argparse.ArgumentParser(prog="python -m benchmark.reasoning_caps",
                                description=(__doc__ or "").splitlines()[0])
    p.add_argument("--think-tokens", type=int, default=2000)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    print_table(measure(args), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
