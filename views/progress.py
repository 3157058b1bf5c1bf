"""Live progress of a run: a rich display on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text


class RunProgress:
    """Consumes the graph's custom stream events and shows them.

    On a terminal: a live panel of three lines -- step i/N with a bar, ETA and what is being
    worked on (stage, parent, candidate or round); the best validation metric, tokens and LLM
    seconds so far; the last execution's outcome. Elsewhere (CI, pipes): plain log lines.
    """

    def __init__(self, total: int, done: int, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.total = total
        self.done = done
        self.best: float | None = None
        self.tokens = 0
        self.llm_seconds = 0.0
        self.live = self.stream.isatty()
        self._progress: Progress | None = None
        self._live: Live | None = None
        self._totals = Text()
        self._last = Text("last: -")
        self._task: Any = None
        self._start = time.monotonic()
        self._step = done

    def __enter__(self) -> RunProgress:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]step"), MofNCompleteColumn(), BarColumn(),
                TimeRemainingColumn(), TextColumn("{task.description}", markup=False),
            )
            self._task = self._progress.add_task("starting", total=self.total, completed=self.done)
            self._update_totals()
            self._live = Live(Group(self._progress, self._totals, self._last),
                              console=Console(file=self.stream), refresh_per_second=4)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def _line(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def _update_totals(self) -> None:
        best = "-" if self.best is None else f"{self.best:.6g}"
        self._totals.plain = (f"best validation metric {best} | {self.tokens} tokens"
                              f" | {self.llm_seconds:.1f} s LLM")

    def _status(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, description=text)
            self._update_totals()

    def handle(self, event: dict[str, Any]) -> None:
        """Show one event from the graph's custom stream."""
        kind = event.get("kind")
        step = event.get("step", 0)
        if kind == "step":
            self._step = step
            parent = f" of {event['parent']}" if event.get("parent") else ""
            self._status(f"{step + 1}/{self.total} {event['stage']}{parent}: asking the model")
            if not self.live:
                self._line(f"[step {step + 1}/{self.total}] {event['stage']}{parent}")
        elif kind == "generated":
            self._status(f"{step + 1}/{self.total}: got {event.get('tokens', 0)} tokens")
        elif kind == "executing":
            self._status(f"{step + 1}/{self.total}: running the script")
        elif kind == "repairing":
            text = (f"{step + 1}/{self.total}: repair {event.get('attempt')}/{event.get('total')} "
                    f"({event.get('stage')}): {event.get('error', '')}")
            self._status(text[:200])
            if not self.live:
                self._line(f"    repair {event.get('attempt')}/{event.get('total')} ({event.get('stage')}): "
                           f"{event.get('error', '')}"[:200])
        elif kind == "reviewing":
            self._status(f"{step + 1}/{self.total}: reviewing")
        elif kind == "recorded":
            self.done = step + 1
            self.tokens += int(event.get("tokens") or 0)
            self.llm_seconds += float(event.get("llm_seconds") or 0.0)
            self.best = event.get("best_metric")
            line = (f"  node {event['node_id']} ({event['stage']}): {event['outcome']}"
                    f" [LLM {event.get('llm_seconds', 0):.1f} s, exec {event.get('exec_seconds', 0):.1f} s]")
            self._last.plain = "last:" + line[1:][:300]
            self._line(line)
            self._status(f"{self.done}/{self.total} done")
        elif kind == "strategy":
            self._strategy(event)
        elif kind == "info":
            self._line(str(event.get("message", "")))

    def _strategy(self, event: dict[str, Any]) -> None:
        """A strategy graph's progress: candidate i/N of a fan-out, or round r/R of a loop."""
        where = ""
        if event.get("candidate") is not None:
            where = f" candidate {event['candidate']}/{event.get('total', '?')}"
        elif event.get("round") is not None:
            where = f" round {event['round']}/{event.get('rounds', '?')}"
        text = f"{self._step + 1}/{self.total}{where}: {event.get('stage', '')}"
        if event.get("detail"):
            text += f" ({event['detail']})"
        self._status(text)
        if self.live:
            return
        if event.get("stage") == "executed":
            outcome = (f"metric {event['metric']:.6g}" if event.get("metric") is not None
                       else f"buggy: {event['failure']}" if event.get("failure")
                       else "valid, no METRIC line (the held rows score it)")
            self._line(f"    candidate {event['candidate']}/{event.get('total', '?')}: {outcome}"[:200])
        elif event.get("stage") in ("selected", "finished", "planning", "reflecting"):
            self._line(f"    {text.split(': ', 1)[0].split(' ', 1)[-1]}: {event['stage']}"
                       + (f" ({event['detail']})" if event.get("detail") else ""))
