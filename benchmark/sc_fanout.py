"""Self-consistency fan-out against sequential sampling, on the real local llama.cpp server.

Starts llama.cpp's native server (`serving.native.NativeServer`, built once with
`scripts/build_llama_server.sh`) with the embedded model and 2 parallel slots, then in the same
run measures, for one draft request on a bundled task:

  fan-out     the self-consistency graph with N samples (concurrent requests with distinct seeds,
              executions on `--workers` sandbox slots), wall-clock of the whole graph;
  sequential  the same N samples asked one after another, each executed before the next.

It prints both wall-clocks, their ratio (sequential / fan-out: how much faster the fan-out is)
and the tokens of each; then the same N model calls alone, without executions, one after
another and concurrently (the server's share of the difference: on a CPU box the scripts of a
fan-out compete with decoding for the same cores). `--out` writes the numbers as JSON.

    python -m benchmark.sc_fanout [--samples 4] [--slots 2] [--model 0.5b] [--max-tokens 512]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from graphs.self_consistency import build_self_consistency_graph
from graphs.strategy import StrategyContext, StrategyServices, seed_of
from nodes.files import write_atomically
from nodes.operators import draft_prompt
from nodes.sample import SamplingSupport, sample_one
from nodes.task_context import build_task_context
from nodes.usage import Usage
from serving.llm import LLMSettings, make_chat_model
from serving.local import ensure_local_model
from serving.native import NativeServer
from tasks.competition import load_competition

ROOT = Path(__file__).resolve().parent.parent


def services_for(
    base_url: str, model: str, task: Path, work: Path, args: argparse.Namespace
) -> StrategyServices:
    """Strategy services on the given endpoint (no LLM review: only sampling and execution count)."""
    comp = load_competition(task)
    llm = make_chat_model(LLMSettings(base_url=base_url, model=model, temperature=0.7,
                                      max_tokens=args.max_tokens, timeout_s=1800))
    text = build_task_context(comp.description, comp.public_dir, time_limit_s=args.exec_timeout,
                              metric_name=comp.grader, lower_is_better=comp.lower_is_better,
                              sample_submission=comp.sample_submission).system_prompt()
    return StrategyServices(
        coder=llm, planner=llm, system_text=text, coder_system_prompt=True, planner_system_prompt=True,
        public_dir=comp.public_dir, sample_submission=comp.sample_submission, work_dir=work,
        exec_timeout=args.exec_timeout, sandbox="auto", lower_is_better=bool(comp.lower_is_better),
        sampling=SamplingSupport("concurrent"), exec_slots=threading.BoundedSemaphore(args.workers),
    )


def fan_out(svc: StrategyServices, n: int, seed: int) -> tuple[float, Usage, dict]:
    """Wall-clock, cost and details of one self-consistency expansion."""
    graph = build_self_consistency_graph().compile()
    start = time.monotonic()
    out = graph.invoke({"request": draft_prompt([]), "label": "fanout", "seed": seed},
                       context=StrategyContext(samples=n, judge=False, services=svc))["result"]
    return time.monotonic() - start, Usage.model_validate(out["candidate"]["usage"]), out["details"]


def sequential(svc: StrategyServices, n: int, seed: int) -> tuple[float, Usage]:
    """The same N samples (same seeds), each asked and executed before the next."""
    usage = Usage()
    start = time.monotonic()
    for i in range(n):
        cand = sample_one(svc.coder, svc.system_text, draft_prompt([]), system_prompt=True,
                          seed=seed_of({"seed": seed}, "sample", i))
        usage.add(cand.usage)
        svc.execute(cand, svc.work_dir / "sequential" / f"s{i}")
    return time.monotonic() - start, usage


def sampling_only(svc: StrategyServices, n: int, seed: int, concurrent: bool) -> tuple[float, Usage]:
    """The N model calls alone (no execution): concurrently, or one after another."""
    def one(i: int) -> Usage:
        return sample_one(svc.coder, svc.system_text, draft_prompt([]), system_prompt=True,
                          seed=seed_of({"seed": seed}, "sample", i)).usage

    start = time.monotonic()
    if concurrent:
        with ThreadPoolExecutor(max_workers=n) as pool:
            usages = list(pool.map(one, range(n)))
    else:
        usages = [one(i) for i in range(n)]
    total = Usage()
    for u in usages:
        total.add(u)
    return time.monotonic() - start, total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--slots", type=int, default=2, help="llama-server --parallel")
    p.add_argument("--workers", type=int, default=2, help="scripts executed at once")
    p.add_argument("--model", default="0.5b", help="embedded model (0.5b, 1.5b) or a .gguf path")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama-server threads")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--exec-timeout", type=float, default=120)
    p.add_argument("--task", default=str(ROOT / "tasks" / "tumor-diagnosis"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = p.parse_args(argv)
    path = ensure_local_model(args.model)
    with tempfile.TemporaryDirectory() as tmp, NativeServer(
        path, model_alias=Path(path).stem, n_parallel=args.slots, n_threads=args.threads,
        n_ctx=8192, log_path=Path(tmp) / "llama-server.log",
    ) as server:
        svc = services_for(server.base_url, Path(path).stem, Path(args.task), Path(tmp), args)
        # warm-up: loads the weights into the page cache and the slots' prompt caches alike
        sample_one(svc.coder, svc.system_text, "Say OK.", system_prompt=True, seed=1)
        seq_s, seq_usage = sequential(svc, args.samples, args.seed)
        fan_s, fan_usage, details = fan_out(svc, args.samples, args.seed)
        llm_seq_s, llm_seq = sampling_only(svc, args.samples, args.seed + 1, concurrent=False)
        llm_con_s, llm_con = sampling_only(svc, args.samples, args.seed + 1, concurrent=True)
    result = {
        "samples": args.samples, "slots": args.slots, "workers": args.workers, "model": Path(path).name,
        "max_tokens": args.max_tokens, "sequential_s": round(seq_s, 2), "fan_out_s": round(fan_s, 2),
        "speedup": round(seq_s / fan_s, 3),
        "sequential_completion_tokens": seq_usage.completion_tokens,
        "fan_out_completion_tokens": fan_usage.completion_tokens,
        "fan_out_kept": details["kept"], "fan_out_rule": details["rule"],
        "fan_out_valid": sum(a["metric"] is not None for a in details["attempts"]),
        "sampling_sequential_s": round(llm_seq_s, 2), "sampling_concurrent_s": round(llm_con_s, 2),
        "sampling_speedup": round(llm_seq_s / llm_con_s, 3),
        "sampling_sequential_tokens": llm_seq.completion_tokens,
        "sampling_concurrent_tokens": llm_con.completion_tokens,
    }
    print(f"self-consistency N={args.samples}, llama-server --parallel {args.slots}, {Path(path).name}")
    print(f"  sequential: {seq_s:7.1f} s  ({seq_usage.completion_tokens} completion tokens)")
    print(f"  fan-out:    {fan_s:7.1f} s  ({fan_usage.completion_tokens} completion tokens)")
    print(f"  ratio sequential / fan-out: {seq_s / fan_s:.2f}")
    print(f"  model calls alone: {llm_seq_s:.1f} s one after another ({llm_seq.completion_tokens} tokens), "
          f"{llm_con_s:.1f} s concurrently ({llm_con.completion_tokens} tokens): "
          f"ratio {llm_seq_s / llm_con_s:.2f}; tokens/s {llm_seq.completion_tokens / llm_seq_s:.1f} vs "
          f"{llm_con.completion_tokens / llm_con_s:.1f}")
    if args.out:
        write_atomically(Path(args.out), json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
