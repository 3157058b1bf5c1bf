"""Wall-clock of one sweep grid on each executor, as ratios measured in the same run.

The same 8-cell grid (2 tasks x 2 strategies x 2 seeds, N steps each) against the scripted
loopback endpoint, whose scripts sleep a little so that a cell is mostly waiting, as a real cell
waits on its model and its scripts: one cell at a time in this process (the baseline), two child
processes (`--workers 2`), and a local Ray with two workers (`--executor ray --workers 2`, Ray's
start and stop included). Prints each wall time, its ratio to the baseline, and Ray's overhead per
cell over the local executor with the same number of workers.

    python -m benchmark.sweep_wallclock [--steps 3] [--exec-sleep 1.0] [--delay 0.2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

from benchmark.sweep import main as sweep_main
from tests.conftest import make_toy_task
from tests.doubles.stub import StubServer

VARIANTS = (("in-process, 1 worker", []), ("local, 2 workers", ["--workers", "2"]),
            ("ray, 2 workers", ["--executor", "ray", "--workers", "2"]))


def _tasks(root: Path) -> list[Path]:
    out = []
    for name in ("wall-a", "wall-b"):
        task = make_toy_task(root / name)
        config = task / "config.yaml"
        config.write_text(config.read_text().replace("id: toy", f"id: {name}"))
        out.append(task)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.sweep_wallclock",
                                description=(__doc__ or "").split("\n")[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--exec-sleep", type=float, default=1.0, help="seconds each scripted script sleeps")
    p.add_argument("--delay", type=float, default=0.2, help="seconds before each scripted answer")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="its-mle-wall-") as tmp, \
            StubServer(model="m", delay_s=args.delay, exec_sleep=args.exec_sleep) as stub:
        tasks = _tasks(Path(tmp))
        grid = ["--tasks", *map(str, tasks), "--strategies", "aide", "self_reflection", "--models",
                f"m@{stub.base_url}", "--seeds", "2", "--steps", str(args.steps), "--exec-timeout", "60"]
        walls: dict[str, float] = {}
        for name, extra in VARIANTS:
            out = Path(tmp) / name.split(",")[0].replace(" ", "-")
            started = time.monotonic()
            with contextlib.redirect_stdout(io.StringIO()):
                code = sweep_main([*grid, "--out", str(out), *extra])
            walls[name] = time.monotonic() - started
            if code != 0:
                print(f"{name}: the sweep failed (exit {code}); logs were in {out / 'logs'}")
                return 1
    cells = 8
    base = walls[VARIANTS[0][0]]
    print(f"8-cell grid, {args.steps} steps per cell, scripted endpoint (answer delay {args.delay} s, "
          f"script sleep {args.exec_sleep} s)")
    for name, wall in walls.items():
        print(f"  {name:22s} {wall:7.1f} s   ratio to in-process {wall / base:5.2f}")
    overhead = (walls["ray, 2 workers"] - walls["local, 2 workers"]) / cells
    print(f"  Ray's overhead per cell over local with 2 workers: {overhead:+.2f} s (start and stop included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
