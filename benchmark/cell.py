"""One cell of a sweep, run wherever an executor puts it (this process, a child process, a Ray
worker): claim the run, decide whether to start, resume or skip it, run `graphs.run` with its
output in the cell's log, and say how it went.

The claim (`graphs.persistence.claim_run`: a lock file beside the run, or a Postgres advisory
lock) is held by the process that runs the cell for as long as it lives, so two workers or two
drivers never run one cell at once, and the cell of a worker that died is free to be taken over:
the next attempt finds its `run.json` (or its record in the database) and resumes it.

    python -m benchmark.cell JOB_JSON     # runs one job; prints its outcome as JSON on stdout
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from graphs import run as graph_run
from graphs.persistence import RunBusy, claim_run, redact_url, run_recorded


@dataclass(frozen=True)
class CellJob:
    """Everything a worker needs to run one cell (plain values: it travels to other processes)."""

    run_id: str
    run_path: str  # <out>/runs/<run id>
    log_path: str
    start_argv: tuple[str, ...]  # `graphs.run` arguments of a new run
    resume_argv: tuple[str, ...]  # `graphs.run` arguments that continue it (settings from run.json)
    label: str = ""  # "task / strategy / model / seed N" for progress lines
    checkpointer: str = ""  # "" (SQLite in the run directory) or a postgresql:// URL
    endpoint: str = ""  # the model's label when its cells share one server (its concurrency cap)
    cpus: float = 1.0  # what the cell needs (a Ray task's resources)
    gpus: float = 0.0
    memory_mb: int | None = None


@dataclass
class CellOutcome:
    """How one attempt at a cell went."""

    run_id: str
    status: str  # "finished", "skipped" (finished before), "busy" (run elsewhere now), "failed"
    code: int | None = None  # graphs.run's exit code
    detail: str = ""
    error: str = ""  # the crash that failed it (the exception's last line), when graphs.run raised
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CellOutcome:
        return cls(**json.loads(text))


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


def _run_logged(argv: list[str], log_path: Path, echo: TextIO | None) -> tuple[int, str]:
    """`graphs.run` in this process (the claim is ours already), its output in `log_path` (and
    `echo`): (the exit code, the crash's last line or ""). A crash is a failed cell, not a
    failed sweep; its traceback is in the log."""
    with open(log_path, "a", encoding="utf-8") as log:
        tee = _Tee(log, echo)
        with contextlib.redirect_stdout(tee), contextlib.redirect_stderr(tee):
            shown = " ".join(redact_url(a) for a in argv)  # a database URL's password stays out of logs
            print(f"$ python -m graphs.run {shown}   # {socket.gethostname()} pid {os.getpid()}", flush=True)
            try:
                return graph_run.main(argv, claimed=True), ""
            except SystemExit as exc:
                return (exc.code if isinstance(exc.code, int) else 1), ""
            except Exception as exc:
                traceback.print_exc()
                return 1, traceback.format_exception_only(exc)[0].strip().splitlines()[0]


def run_job(job: CellJob, echo: TextIO | None = None) -> CellOutcome:
    """Run one cell to its end (or find it done, or held by another process)."""
    started = time.monotonic()
    run_path, log_path = Path(job.run_path), Path(job.log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # the worker's pid, for whoever watches the cell (a test kills it here)
    (log_path.parent / f"{job.run_id}.pid").write_text(f"{os.getpid()}\n")
    try:
        with claim_run(run_path, job.run_id, job.checkpointer):
            if (run_path / "summary.json").is_file():
                return CellOutcome(job.run_id, "skipped", seconds=time.monotonic() - started)
            resume = run_recorded(run_path, job.run_id, job.checkpointer)
            argv = list(job.resume_argv if resume else job.start_argv)
            code, error = _run_logged(argv, log_path, echo)
    except RunBusy as exc:
        return CellOutcome(job.run_id, "busy", detail=str(exc), seconds=time.monotonic() - started)
    finished = code == 0 and (run_path / "summary.json").is_file()
    return CellOutcome(job.run_id, "finished" if finished else "failed", code=code, error=error,
                       detail="resumed" if resume else "started", seconds=time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    """Run the job given as JSON; its outcome is the last line on stdout."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m benchmark.cell JOB_JSON", file=sys.stderr)
        return 2
    values = json.loads(args[0])
    job = CellJob(**{**values, "start_argv": tuple(values["start_argv"]),
                     "resume_argv": tuple(values["resume_argv"])})
    outcome = run_job(job)
    print(outcome.to_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
