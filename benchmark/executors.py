"""Where a sweep's cells run: in this process one after another, in N child processes on this
machine (`--executor local --workers N`), or as Ray tasks on a local or remote Ray cluster
(`--executor ray [--ray-address ADDR]`).

Every executor runs `benchmark.cell.run_job` for each job and hands its outcome back as soon as it
is known. The scheduling loop is shared: at most `slots` cells in flight, at most `caps[endpoint]`
of them on one model server (so one vLLM server is not flooded), and a cell another process holds
("busy") is tried again a little later, by which time it is usually done and is skipped.

On Ray each cell is a task that declares what it needs (CPUs, GPUs, memory, and one unit of its
endpoint's custom resource) and is retried by Ray when its worker dies; the retry finds the run's
checkpoint and resumes it. A Ray started here (no address) gets `slots` CPUs and the endpoints'
resources, and is stopped at the end. A cluster given by address must have its packages (this
project installed on every node) and, for an endpoint cap enforced by Ray itself, the resource
declared on its nodes (``ray start --resources '{"endpoint:NAME": K}'``); without it the cap is
kept by this driver alone.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict
from typing import Any, TextIO

from benchmark.cell import CellJob, CellOutcome, run_job

BUSY_RETRY_S = 5.0  # how long a busy cell waits before it is tried again
EXECUTORS = ("local", "ray")

OnDone = Callable[[CellJob, CellOutcome], None]


def ray_address_problem(address: str, timeout: float = 5.0) -> str | None:
    """Why no Ray cluster can be reached at `address` (None: something answers there).

    Ray itself retries an unreachable GCS for minutes before it gives up, so the sweep looks first:
    `HOST:PORT` or `ray://HOST:PORT` must accept a TCP connection. `auto` (the cluster this node
    belongs to) is left to Ray.
    """
    if address in ("auto", "local"):
        return None
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return f"--ray-address {address!r} is not HOST:PORT, ray://HOST:PORT or auto"
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        return f"no Ray cluster answers at {address}: {exc.strerror or exc}"
    return None


class ExecutorError(Exception):
    """The executor cannot start (a Ray cluster that refuses this driver): one line for the user."""


def _connect_problem(address: str, exc: Exception) -> str:
    text = " ".join(str(exc).split())
    chain, seen = [], exc
    while seen is not None and len(chain) < 8:  # Ray wraps the cause: ConnectionError <- RuntimeError
        chain.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    if any("InvalidAuthToken" in link or "AuthenticationError" in link for link in chain):
        # Ray >= 2.5x turns token auth on where a token exists (~/.ray/auth_token); a driver only
        # sends it with RAY_AUTH_MODE=token in its environment, read when ray is imported
        return (f"the Ray cluster at {address} requires its auth token: run the sweep with "
                "RAY_AUTH_MODE=token (the token from ~/.ray/auth_token or $RAY_AUTH_TOKEN)")
    return f"could not connect to the Ray cluster at {address}: {type(exc).__name__}: {text[:300]}"


def endpoint_resource(endpoint: str) -> str:
    """The Ray custom resource that caps the cells on one model server."""
    return f"endpoint:{endpoint}"


class Executor:
    """The shared scheduling loop; subclasses submit a job and wait for some to finish."""

    slots = 1

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release what the executor started."""

    def _submit(self, job: CellJob) -> Any:
        raise NotImplementedError

    def _wait(self, handles: list[Any]) -> list[tuple[Any, CellOutcome]]:
        """Block until at least one of `handles` is done; those that are, with their outcomes."""
        raise NotImplementedError

    def run(self, jobs: Iterable[CellJob], on_done: OnDone, caps: dict[str, int] | None = None,
            on_busy: OnDone | None = None) -> None:
        """Run every job; `on_done` for each final outcome, `on_busy` when one is held elsewhere
        (it is then tried again after BUSY_RETRY_S)."""
        caps = caps or {}
        pending: list[tuple[float, CellJob]] = [(0.0, j) for j in jobs]
        running: dict[Any, CellJob] = {}
        in_flight: Counter[str] = Counter()
        while pending or running:
            now = time.monotonic()
            for entry in list(pending):
                if len(running) >= self.slots:
                    break
                not_before, job = entry
                full = bool(job.endpoint) and in_flight[job.endpoint] >= caps.get(job.endpoint, 1 << 30)
                if not_before > now or full:
                    continue
                pending.remove(entry)
                running[self._submit(job)] = job
                in_flight[job.endpoint] += 1
            if not running:  # only busy cells left, all waiting for their retry
                time.sleep(max(0.05, min(t for t, _ in pending) - time.monotonic()))
                continue
            for handle, outcome in self._wait(list(running)):
                job = running.pop(handle)
                in_flight[job.endpoint] -= 1
                if outcome.status == "busy":
                    if on_busy:
                        on_busy(job, outcome)
                    pending.append((time.monotonic() + BUSY_RETRY_S, job))
                else:
                    on_done(job, outcome)


class InProcessExecutor(Executor):
    """One cell at a time in this process (its output echoed to `echo`): the default."""

    def __init__(self, echo: TextIO | None = None) -> None:
        self.echo = echo
        self._done: dict[int, CellOutcome] = {}
        self._keys = itertools.count()

    def _submit(self, job: CellJob) -> int:
        key = next(self._keys)
        self._done[key] = run_job(job, self.echo)
        return key

    def _wait(self, handles: list[int]) -> list[tuple[int, CellOutcome]]:
        return [(h, self._done.pop(h)) for h in handles]


def _run_in_child(job: CellJob) -> CellOutcome:
    """`python -m benchmark.cell JOB` in a child process; a child that dies is a failed attempt."""
    proc = subprocess.run([sys.executable, "-m", "benchmark.cell", json.dumps(asdict(job))],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        try:
            return CellOutcome.from_json(lines[-1])
        except (ValueError, TypeError):
            pass
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return CellOutcome(job.run_id, "failed", code=proc.returncode, detail=f"worker process: {tail}")


class LocalExecutor(Executor):
    """N cells at once on this machine, each in its own child process (no Ray)."""

    def __init__(self, workers: int) -> None:
        self.slots = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cell")

    def _submit(self, job: CellJob) -> Future:
        return self._pool.submit(_run_in_child, job)

    def _wait(self, handles: list[Future]) -> list[tuple[Future, CellOutcome]]:
        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        return [(f, f.result()) for f in done]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor(Executor):
    """Each cell a Ray task with its resources; Ray retries a cell whose worker died."""

    def __init__(self, address: str | None, workers: int | None, endpoints: dict[str, int],
                 say: Callable[[str], None], max_retries: int = 3) -> None:
        import ray

        self.ray, self.say = ray, say
        self.started_here = address is None
        if self.started_here:
            cpus = workers or os.cpu_count() or 1
            ray.init(num_cpus=cpus, resources={endpoint_resource(e): float(k) for e, k in endpoints.items()},
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
            say(f"started a local Ray with {cpus} CPUs")
        else:
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError or its own errors here
                raise ExecutorError(_connect_problem(address, exc)) from exc
            say(f"connected to the Ray cluster at {address}")
        resources = ray.cluster_resources()
        self.enforced = {e for e in endpoints if resources.get(endpoint_resource(e), 0) >= 1}
        for e in sorted(set(endpoints) - self.enforced):
            say(f"note: the cluster declares no '{endpoint_resource(e)}' resource; this driver alone "
                f"keeps that endpoint's cap ({endpoints[e]} cells at once)")
        self.slots = workers or max(1, int(resources.get("CPU", 1)))
        self._jobs: dict[Any, CellJob] = {}
        self._task = ray.remote(max_retries=max_retries, retry_exceptions=False)(run_job)

    def _submit(self, job: CellJob) -> Any:
        options: dict[str, Any] = {"num_cpus": job.cpus, "num_gpus": job.gpus}
        if job.memory_mb:
            options["memory"] = job.memory_mb * 1024 * 1024
        if job.endpoint and job.endpoint in self.enforced:
            options["resources"] = {endpoint_resource(job.endpoint): 1}
        ref = self._task.options(**options).remote(job)
        self._jobs[ref] = job
        return ref

    def _wait(self, handles: list[Any]) -> list[tuple[Any, CellOutcome]]:
        ready, _ = self.ray.wait(handles, num_returns=1)
        out = []
        for ref in ready:
            job = self._jobs.pop(ref)
            try:
                out.append((ref, self.ray.get(ref)))
            except Exception as exc:  # the worker died more often than Ray retries, or the task failed
                text = str(exc).strip().splitlines()
                out.append((ref, CellOutcome(job.run_id, "failed",
                                             detail=f"Ray: {type(exc).__name__}: {text[0] if text else ''}")))
        return out

    def close(self) -> None:
        self.ray.shutdown()
