"""What the two embedded servers (llama-cpp-python's and llama.cpp's native `llama-server`)
share (and the vLLM launcher, ``serving.vllm``): a child process in its own process group on a
free loopback port (or a port the caller names), a readiness wait that reports the log's tail
when startup fails, and an idempotent stop (SIGTERM to the group, then SIGKILL) that also runs
at interpreter exit. ``popen_tied`` starts a child the kernel kills when this process dies."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from pathlib import Path

from .weights import LocalModelError

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on (host, port) and it can be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is free
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def client_host(host: str) -> str:
    """The address a client on this machine uses to reach a server bound to `host`."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def default_threads() -> int:
    """Half the CPUs this process may use (as llama.cpp: ~physical cores), at least one.

    llama.cpp's threads synchronise at every layer, so they collapse when another busy process
    (a training script in the sandbox, a second server) takes one of their cores: measured on
    2 cores, two servers at 2 threads each decoded at 0.5 tokens/s instead of ~20.
    """
    return max(1, usable_cores() // 2)


def usable_cores() -> int:
    """The CPUs this process may use (its affinity), at least one."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def log_tail(path: Path | None, n: int = 5) -> str:
    """The last non-empty lines of a log, on one line."""
    try:
        with open(path, errors="replace") as f:  # type: ignore[arg-type]
            lines = deque((ln.rstrip() for ln in f if ln.strip()), maxlen=n)
    except (OSError, TypeError):
        return "(no log)"
    return " | ".join(lines) if lines else "(empty log)"


# --------------------------------------------------------------------------- children tied to us

_PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = None
with contextlib.suppress(OSError, AttributeError):
    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.prctl  # noqa: B018 - Linux only: probe the symbol now, not in the forked child


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """preexec_fn: the kernel SIGKILLs the child when the thread that forked it dies."""
    if _libc is None or not sys.platform.startswith("linux"):
        return None

    def preexec() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class _Spawner:
    """Forks children from one long-lived daemon thread.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process: a
    server started from a short-lived worker thread would be killed with it. A daemon thread
    that lives until the interpreter does ties the child's life to this process's.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _run(self) -> None:
        while True:
            fn, box, done = self._jobs.get()
            try:
                box.append((True, fn()))
            except BaseException as e:  # handed back to the caller
                box.append((False, e))
            done.set()

    def popen(self, *args, **kwargs) -> subprocess.Popen:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="server-spawner", daemon=True)
                self._thread.start()
        box: list = []
        done = threading.Event()
        self._jobs.put((lambda: subprocess.Popen(*args, **kwargs), box, done))
        done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value


_SPAWNER = _Spawner()


def popen_tied(*args, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` whose child the kernel SIGKILLs when this process dies (even by
    SIGKILL, where atexit cannot run); Linux, elsewhere a plain Popen."""
    return _SPAWNER.popen(*args, preexec_fn=_die_with_parent(os.getpid()), **kwargs)


class ServerProcess:
    """Start / wait / stop of one server child; subclasses say how to check and spawn it."""

    kind = "server"  # in messages
    ready_path = "/v1/models"  # polled until it answers 200
    poll_s = 0.2
    log_prefix = "its-mle-server-"
    bind_errors = ("address already in use",)

    def _init_process(self, log_path: Path | None, startup_timeout_s: float, *, port: int | None = None,
                      host: str = "127.0.0.1") -> None:
        """`port`: listen there (refused when taken); None picks a free one at each start."""
        self.startup_timeout_s = float(startup_timeout_s)
        self.log_path: Path | None = Path(log_path) if log_path else None
        self._own_log = log_path is None
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.base_url: str = ""
        self.startup_s: float | None = None
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- for subclasses

    def _check_startable(self) -> None:
        """Raise LocalModelError (one line) when the server cannot start at all."""

    def _spawn(self, port: int) -> None:
        """Start the child on `port` (set `self._proc`, write to `self.log_path`)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def exit_code(self) -> int | None:
        """The child's exit status once it has exited by itself; None while it runs."""
        return self._proc.poll() if self._proc else None

    def start(self) -> ServerProcess:
        """Start the server and wait until it answers; idempotent."""
        with self._lock:
            if self.running:
                return self
            self._check_startable()
            if self.requested_port is not None and not port_free(self.host, self.requested_port):
                raise LocalModelError(f"port {self.requested_port} is in use on {self.host}")
            if self.log_path is None:
                fd, name = tempfile.mkstemp(prefix=self.log_prefix, suffix=".log")
                os.close(fd)
                self.log_path = Path(name)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.monotonic()
            for attempt in range(3):  # the free port can be taken between probe and bind
                port = self.requested_port or free_port()
                self.port = port
                self.base_url = f"http://{client_host(self.host)}:{port}/v1"
                try:
                    self._spawn(port)
                    self._wait_ready(t0)
                except LocalModelError:
                    log = log_tail(self.log_path, 20).lower()
                    self._terminate()
                    if any(e in log for e in self.bind_errors) and attempt < 2 and not self.requested_port:
                        continue
                    raise
                except BaseException:  # KeyboardInterrupt during startup: leave nothing behind
                    self._terminate()
                    raise
                break
            self.startup_s = time.monotonic() - t0
            atexit.register(self.stop)
            return self

    def _wait_ready(self, t0: float) -> None:
        url = f"http://{client_host(self.host)}:{self.port}{self.ready_path}"
        while True:
            code = self._proc.poll() if self._proc else None
            if code is not None:
                raise LocalModelError(
                    f"{self.kind} exited during startup (code {code}); "
                    f"log {self.log_path}: {log_tail(self.log_path)}"
                )
            try:
                with NO_PROXY.open(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() - t0 > self.startup_timeout_s:
                raise LocalModelError(
                    f"{self.kind} not ready after {self.startup_timeout_s:.0f} s; "
                    f"log {self.log_path}: {log_tail(self.log_path)}"
                )
            time.sleep(self.poll_s)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # anything left in the group (it should have gone with its leader)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop the server (SIGTERM, up to 10 s, then SIGKILL). Idempotent."""
        with self._lock:
            was_started = self._proc is not None
            self._terminate()
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)
            if was_started and self._own_log and self.log_path is not None:
                self.log_path.unlink(missing_ok=True)
                self.log_path = None

    def __enter__(self):  # noqa: ANN204 - returns the subclass
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
