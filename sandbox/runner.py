"""Run one LLM-written script in a workspace, optionally inside bubblewrap.

Every call is a fresh process ``python solution.py`` with cwd = workspace root; ``python`` is the
``python=`` argument, else ``Limits.python``, else this interpreter (a venv, conda or wrapper
script elsewhere works too: its prefixes are bound read-only under bwrap).

bwrap layout
    ``--unshare-all --die-with-parent --new-session --cap-drop ALL --clearenv`` (the
    cap drop matters when the agent runs as root: no remounting the read-only binds);
    system dirs ro (/usr, /etc, /bin, /sbin, /lib* -- replicated as symlinks where they
    are symlinks); new /proc, minimal /dev (+ /dev/nvidia* with gpus=True), private /tmp;
    the interpreter's prefixes ro; the workspace root rw; the public dir ro at its own
    real path (``root/input`` is a symlink to it, see sandbox.workspace); extra_ro_binds
    ro; then ``/`` is remounted read-only.  Nothing else of the host (project dir,
    private answers, $HOME) is visible.  Network: none (own empty net namespace).

Process-tree hygiene
    The child starts in a new session (its pid is the process-group id).  On timeout,
    output flood, or normal exit the whole group gets SIGKILL while the leader is still an
    unreaped zombie, so the group id cannot have been reused.
    * bwrap: ``--unshare-pid --die-with-parent`` put everything in a pid namespace whose
      init dies with bwrap; when init dies the kernel kills the whole namespace, setsid
      daemons included.  After a kill we wait (bounded) for that init to be gone, so when
      run_script returns nothing of the run is still executing.
    * plain: a double-forked setsid daemon leaves the process group, so the child env
      carries a per-run marker variable and /proc is scanned for processes carrying it
      (best effort: a process that rewrites its environment escapes; use bwrap).

Output
    stdout and stderr of the child (and of anything it starts) share one file descriptor
    on ``root/output.log``.  The parent polls its size every POLL_S seconds and kills the
    tree beyond ``max_output_bytes``; the captured text is read back head + tail from the
    file, so nothing a script prints can end or spoof the capture.

Limits (sandbox.limits)
    A per-run cgroup caps memory and processes where one can be made (else RLIMIT_AS and
    RLIMIT_NPROC); RLIMIT_FSIZE caps every file the script writes (a bigger write fails with
    ``OSError: [Errno 27] File too large``; Python ignores SIGXFSZ), RLIMIT_CPU each process's
    CPU time, and the private /tmp is a tmpfs of the same size as the file cap.  The rlimits
    are set by util-linux ``prlimit``, which execs the command (no preexec_fn: unsafe with
    threads).  GPUs (/dev/nvidia*) are bound in only with ``Limits(gpus=True)``.

Exit codes
    ``None`` when run_script killed the run (timeout, output limit).  A script killed by a
    signal it did not get from us is reported shell-style as 128 + signal number for both
    backends (bwrap reports it that way, so plain's negative return codes are converted); a
    kill by the memory cgroup or by RLIMIT_CPU keeps that code and names the limit in
    ``killed_reason``.
"""

from __future__ import annotations

import glob
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sandbox.errors import SandboxError
from sandbox.limits import Limits, RunCgroup, describe_bytes, rlimit_args
from sandbox.workspace import Workspace, ensure_input_link

POLL_S = 0.05  # parent-side poll interval for output size / deadline
KILL_WAIT_S = 2.0  # how long to wait for a killed bwrap namespace to disappear
MARKER_VAR = "ITS_MLE_SANDBOX_RUN"  # plain backend: tags every process of one run
SOLUTION = "solution.py"
LOG = "output.log"

_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PASSTHROUGH_ENV = ("CUDA_VISIBLE_DEVICES",)  # not secret, and needed to respect GPU pinning


@dataclass(frozen=True)
class ExecutionResult:
    exit_code: int | None  # None when killed by run_script
    timed_out: bool
    killed_reason: str | None  # "timeout", "output limit (..)", "memory limit (..)", "CPU time limit (..)"
    seconds: float  # wall time
    output: str  # combined stdout+stderr, head+tail truncated
    output_bytes: int  # total bytes the script wrote to output.log
    backend: str  # "bwrap" or "plain"

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


# --------------------------------------------------------------------------- truncation


def _omitted_line(n: int, unit: str) -> str:
    return f"\n... [{n} {unit} omitted] ...\n"


def truncate_middle(text: str, head_chars: int, tail_chars: int) -> str:
    """Return ``text`` unchanged if it has at most head+tail characters, else
    its first ``head_chars`` + an omission line + its last ``tail_chars`` characters."""
    head_chars = max(0, head_chars)
    tail_chars = max(0, tail_chars)
    if len(text) <= head_chars + tail_chars:
        return text
    omitted = len(text) - head_chars - tail_chars
    tail = text[len(text) - tail_chars :]
    return text[:head_chars] + _omitted_line(omitted, "characters") + tail


_ESCAPES = re.compile(
    r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC ... BEL/ST (window titles, hyperlinks)
    r"|\x1b\[[0-?]*[ -/]*[@-~]"  # CSI (colours, cursor moves, screen clears)
    r"|\x1b[@-Z\\-_]"  # other two-byte escapes
    r"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x9b]"  # remaining control characters
)


def printable(text: str) -> str:
    """Captured output made safe to show and to quote in prompts: terminal escape sequences and
    control characters removed, carriage returns (progress bars) turned into line breaks."""
    return _ESCAPES.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def _read_output(fd: int, size: int, head_chars: int, tail_chars: int) -> str:
    """Head+tail of the log without loading a huge file.  UTF-8 needs at most 4 bytes per
    character, so 4*chars bytes from each end always hold the characters we keep.  When the
    middle is never read the omission line counts bytes, not characters."""
    head_chars = max(0, head_chars)
    tail_chars = max(0, tail_chars)
    hb, tb = 4 * head_chars, 4 * tail_chars
    if size <= hb + tb:
        data = os.pread(fd, size, 0)
        return truncate_middle(data.decode("utf-8", "replace"), head_chars, tail_chars)
    head = os.pread(fd, hb, 0).decode("utf-8", "replace")[:head_chars]
    tail = os.pread(fd, tb, size - tb).decode("utf-8", "replace") if tb else ""
    tail = tail[len(tail) - tail_chars :]
    omitted = max(0, size - len(head.encode("utf-8")) - len(tail.encode("utf-8")))
    return head + _omitted_line(omitted, "bytes") + tail


# --------------------------------------------------------------------------- bwrap setup

_probe_lock = threading.Lock()
_bwrap_ok: bool | None = None
_warned_plain = False


def _system_args() -> list[str]:
    """ro-binds of the system dirs (symlinks like /lib -> usr/lib are replicated)."""
    return list(_system_args_cached())


@lru_cache(maxsize=1)
def _system_args_cached() -> tuple[str, ...]:
    args: list[str] = []
    for p in _SYSTEM_PATHS:
        if os.path.islink(p):
            args += ["--symlink", os.readlink(p), p]
        elif os.path.isdir(p):
            args += ["--ro-bind", p, p]
    args += ["--proc", "/proc", "--dev", "/dev"]
    return tuple(args)


@lru_cache(maxsize=1)
def _gpu_args() -> tuple[str, ...]:
    """Device binds that CUDA needs (only with ``Limits.gpus``; memory is then capped by the
    cgroup alone: an address-space limit under ~32 GiB breaks CUDA init)."""
    args: list[str] = []
    for dev in sorted(glob.glob("/dev/nvidia*")):
        if not os.path.isdir(dev):
            args += ["--dev-bind", dev, dev]
    if os.path.isdir("/dev/nvidia-caps"):
        args += ["--dev-bind", "/dev/nvidia-caps", "/dev/nvidia-caps"]
    return tuple(args)


_BWRAP_BASE = (
    "--unshare-all",  # user(try), ipc, pid, net, uts, cgroup(try)
    "--die-with-parent",
    "--new-session",
    "--cap-drop",
    "ALL",  # matters when run as root: no remounting the ro binds rw
    "--clearenv",
)


def bwrap_available() -> bool:
    """True if ``bwrap`` is installed and a trivial sandbox works here (probed once per
    process; the result is cached)."""
    global _bwrap_ok
    with _probe_lock:
        if _bwrap_ok is None:
            _bwrap_ok = _probe_bwrap()
        return _bwrap_ok


@lru_cache(maxsize=1)
def _bwrap_exe() -> str | None:
    return shutil.which("bwrap")


def _probe_bwrap() -> bool:
    exe = _bwrap_exe()
    true = shutil.which("true", path=_DEFAULT_PATH)
    if exe is None or true is None:
        return False
    cmd = [exe, *_BWRAP_BASE, *_system_args(), "--tmpfs", "/tmp", "--remount-ro", "/", true]
    try:
        r = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


@lru_cache(maxsize=16)
def _python_binds(python: str) -> tuple[str, ...]:
    """Directories to ro-bind so that ``python`` (a venv interpreter, pyenv, conda, ...)
    and its libraries resolve inside the sandbox.  Cached per interpreter."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        prefixes = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    else:
        try:
            out = subprocess.run(
                [python, "-c", "import sys; print(sys.prefix); print(sys.base_prefix)"],
                capture_output=True,
                text=True,
                timeout=30,
                env={"PATH": _DEFAULT_PATH},
            ).stdout.split("\n")
            prefixes = [p for p in out[:2] if p]
        except (OSError, subprocess.SubprocessError):
            prefixes = []
    candidates: set[str] = set()
    for p in [*prefixes, os.path.dirname(python), os.path.dirname(os.path.realpath(python))]:
        if p:
            candidates |= {os.path.abspath(p), os.path.realpath(p)}
    covered = ["/usr", "/etc", "/proc", "/dev"]
    for sp in ("/bin", "/sbin", "/lib", "/lib64"):
        if os.path.isdir(sp) and not os.path.islink(sp):
            covered.append(sp)
    keep: list[str] = []
    for c in sorted(candidates, key=len):
        if c == "/" or not os.path.isdir(c):
            continue
        if any(c == k or c.startswith(k.rstrip("/") + "/") for k in covered + keep):
            continue
        keep.append(c)
    return tuple(keep)


def _bwrap_argv(
    py_cmd: list[str],
    ws_root: str,
    public: str,
    python: str,
    extra_ro_binds: Sequence[str],
    env: Mapping[str, str],
    info_fd: int,
    limits: Limits,
) -> list[str]:
    argv = [_bwrap_exe() or "bwrap", *_BWRAP_BASE]
    for k, v in env.items():
        argv += ["--setenv", k, v]
    argv += _system_args()
    argv += ["--size", str(limits.file_bytes), "--tmpfs", "/tmp"]  # private, and capped
    if limits.gpus:
        argv += _gpu_args()
    for d in _python_binds(python):  # after --tmpfs /tmp: a venv may live under /tmp
        argv += ["--ro-bind", d, d]
    argv += ["--bind", ws_root, ws_root]
    argv += ["--ro-bind", public, public]  # root/input -> public resolves to this mount
    for d in extra_ro_binds:
        argv += ["--ro-bind", d, d]
    argv += ["--remount-ro", "/", "--chdir", ws_root, "--info-fd", str(info_fd)]
    return argv + py_cmd


# --------------------------------------------------------------------------- processes


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_marked(marker: bytes) -> None:
    """plain backend: SIGKILL every process whose environment carries this run's marker
    (catches setsid/double-forked daemons that left the process group)."""
    me = os.getpid()
    for _ in range(5):  # repeat: a process may fork while we scan
        found = False
        try:
            entries = os.listdir("/proc")
        except OSError:
            return
        for name in entries:
            if not name.isdigit() or int(name) == me:
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    environ = f.read()
            except OSError:
                continue
            if marker in environ:
                found = True
                try:
                    os.kill(int(name), signal.SIGKILL)
                except OSError:
                    pass
        if not found:
            return
        time.sleep(0.01)


def _read_child_pid(info_r: int) -> int | None:
    """The host pid of bwrap's in-namespace init, from ``--info-fd`` (non-blocking)."""
    try:
        data = os.read(info_r, 65536)
        return int(json.loads(data.decode())["child-pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _kill_ns_init(pid: int | None) -> Callable[[], None]:
    """SIGKILL bwrap's in-namespace init (its death kills the whole pid namespace) and
    return a function that waits, bounded by KILL_WAIT_S, until it is gone.

    The pidfd is opened before anything is killed, so a recycled pid can never be hit."""
    if pid is None:
        return lambda: None
    try:
        pidfd = os.pidfd_open(pid)
    except (OSError, AttributeError):  # no pidfd (kernel < 5.3): poll /proc, send nothing
        return lambda: _poll_proc_gone(pid, KILL_WAIT_S)
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass

    def wait() -> None:
        try:
            p = select.poll()
            p.register(pidfd, select.POLLIN)  # readable once the process has exited
            p.poll(int(KILL_WAIT_S * 1000))
        finally:
            os.close(pidfd)

    return wait


def _poll_proc_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[-1].split()[0] in (b"Z", b"X"):
                    return
        except OSError:
            return
        time.sleep(0.005)


class _ExitWatcher:
    """Waits for the child to exit *without reaping it* (the zombie keeps its pid and so
    the process-group id reserved until we have killed the group)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._poll: select.poll | None = None
        self._pidfd: int | None = None
        self._sleep = 0.0005
        try:
            self._pidfd = os.pidfd_open(pid)
            self._poll = select.poll()
            self._poll.register(self._pidfd, select.POLLIN)
        except (OSError, AttributeError):
            self._pidfd = None

    def wait(self, timeout: float) -> bool:
        """True once the child has exited; waits up to ``timeout`` seconds."""
        if self._poll is not None:
            return bool(self._poll.poll(max(0, int(timeout * 1000))))
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return True
            if info is not None:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self._sleep, left))
            self._sleep = min(self._sleep * 2, POLL_S)

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


# --------------------------------------------------------------------------- run_script


def _entry(cgroup: RunCgroup | None) -> list[str]:
    """The first commands of every run: die with the agent, enter the cgroup, exec the rest.

    ``setpriv --pdeathsig KILL`` makes the run's first process get SIGKILL when the agent dies
    (the setting survives the execs that follow: sh, prlimit, bwrap or python). The shell then
    checks that its parent is still the agent: an agent killed between fork and that prctl
    would otherwise leave an orphan running a script nobody times out. Grandchildren of a plain
    run are caught by the cgroup or the marker scan only while the agent lives: use bwrap, whose
    pid namespace dies with its init."""
    setpriv = shutil.which("setpriv", path=_DEFAULT_PATH)
    steps = [f'[ "$PPID" = {os.getpid()} ] || exit 125']
    if cgroup is not None:
        steps.append(cgroup.enter_commands())
    steps.append('exec "$@"')
    guard = [setpriv, "--pdeathsig", "KILL"] if setpriv else []
    return guard + ["/bin/sh", "-c", " && ".join(steps), "its-mle-sandbox"]


def _resolve_backend(backend: str) -> str:
    global _warned_plain
    if backend == "plain":
        return "plain"
    if backend == "bwrap":
        if not bwrap_available():
            raise SandboxError(
                "backend 'bwrap' requested but bubblewrap is missing or does not work here "
                "(install it with: apt-get install -y bubblewrap)"
            )
        return "bwrap"
    if backend == "auto":
        if bwrap_available():
            return "bwrap"
        with _probe_lock:
            if not _warned_plain:
                _warned_plain = True
                warnings.warn(
                    "bubblewrap unavailable: running scripts with the unsandboxed 'plain' "
                    "backend (no filesystem/network isolation)",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return "plain"
    raise ValueError(f"unknown sandbox backend {backend!r} (use 'auto', 'bwrap' or 'plain')")


def _child_env(python: str, root: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {
        "PATH": os.path.dirname(python) + ":" + _DEFAULT_PATH,
        "HOME": root,
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
    }
    for k in _PASSTHROUGH_ENV:
        if k in os.environ:
            env[k] = os.environ[k]
    if extra:
        env.update({str(k): str(v) for k, v in extra.items()})
    return env


def run_script(
    code: str,
    workspace: Workspace,
    *,
    timeout_s: float,
    python: str | None = None,
    backend: str = "auto",
    max_output_bytes: int = 64 * 2**20,
    output_head_chars: int = 4000,
    output_tail_chars: int = 8000,
    extra_ro_binds: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    limits: Limits | None = None,
) -> ExecutionResult:
    """Write ``code`` to ``workspace.root/solution.py`` and run it (see module docstring)."""
    limits = limits or Limits()
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    chosen = _resolve_backend(backend)
    root = str(Path(workspace.root).resolve())
    if not os.path.isdir(root):
        raise SandboxError(f"workspace does not exist: {workspace.root} (call create_workspace)")
    if not Path(workspace.public_dir).is_dir():
        raise SandboxError(f"public data directory does not exist: {workspace.public_dir}")
    public = str(Path(workspace.public_dir).resolve())
    if python is None:
        python = limits.python or sys.executable
    if os.sep not in python:
        python = shutil.which(python) or python
    python = os.path.abspath(python)
    if not os.path.exists(python):
        raise SandboxError(f"python interpreter not found: {python}")
    ro_binds: list[str] = []
    for b in extra_ro_binds:
        if not os.path.exists(b):
            raise SandboxError(f"extra read-only bind does not exist: {b}")
        ro_binds.append(os.path.realpath(b))

    ensure_input_link(workspace)
    tmp = Path(root, f".{SOLUTION}.tmp")
    tmp.write_text(code, encoding="utf-8")
    os.replace(tmp, Path(root, SOLUTION))  # never a half-written script, even if we are killed
    child_env = _child_env(python, root, env)
    py_cmd = [python, SOLUTION]
    cgroup = RunCgroup.create(limits)
    prlimit = shutil.which("prlimit", path=_DEFAULT_PATH)
    wrapper = [prlimit, *rlimit_args(limits, timeout_s, cgroup=cgroup is not None)] if prlimit else []
    wrapper = _entry(cgroup) + wrapper

    info_r = info_w = -1
    marker = b""
    if chosen == "bwrap":
        info_r, info_w = os.pipe()
        os.set_blocking(info_r, False)
        argv = wrapper + _bwrap_argv(py_cmd, root, public, python, ro_binds, child_env, info_w, limits)
        popen_env: dict[str, str] | None = {"PATH": _DEFAULT_PATH}
        pass_fds: tuple[int, ...] = (info_w,)
    else:
        token = uuid.uuid4().hex
        child_env[MARKER_VAR] = token
        marker = f"{MARKER_VAR}={token}".encode()
        argv = wrapper + py_cmd
        popen_env = child_env
        pass_fds = ()

    log_path = os.path.join(root, LOG)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    reason: str | None = None
    start = time.monotonic()
    try:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=root,
                env=popen_env,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,
                pass_fds=pass_fds,
            )
        finally:
            if info_w >= 0:
                os.close(info_w)
        watcher = _ExitWatcher(proc.pid)
        deadline = start + timeout_s
        try:
            while True:
                now = time.monotonic()
                if watcher.wait(min(POLL_S, max(0.0, deadline - now))):
                    break
                if os.fstat(log_fd).st_size > max_output_bytes:
                    reason = "output limit"
                    break
                if time.monotonic() >= deadline:
                    reason = "timeout"
                    break
            # Kill the whole group while the leader is still an unreaped zombie (or alive).
            # (After a normal bwrap exit the namespace is already gone: its init exited.)
            wait_ns = _kill_ns_init(
                _read_child_pid(info_r) if chosen == "bwrap" and reason else None
            )
            _kill_group(proc.pid)
            wait_ns()
            proc.wait()
        finally:
            watcher.close()
            if proc.poll() is None:  # interrupted (e.g. KeyboardInterrupt): never leak
                _kill_group(proc.pid)
                proc.wait()
            if cgroup is not None:
                if reason is None and cgroup.oom_killed():
                    reason = f"memory limit ({describe_bytes(limits.memory())})"
                cgroup.kill_all()
                cgroup.remove()
            if marker:
                _kill_marked(marker)
        seconds = time.monotonic() - start
        size = os.fstat(log_fd).st_size
        with open(log_path, "rb") as f:  # our log_fd is write-only
            output = printable(_read_output(f.fileno(), size, output_head_chars, output_tail_chars))
    finally:
        os.close(log_fd)
        if info_r >= 0:
            os.close(info_r)

    rc = proc.returncode
    exit_code = 128 - rc if rc < 0 else rc
    if reason == "output limit":
        reason = f"output limit ({describe_bytes(max_output_bytes)})"
    elif reason is None and exit_code == 128 + signal.SIGXCPU:
        reason = f"CPU time limit ({limits.cpu(timeout_s)} s per process)"
    if reason is not None and not reason.startswith(("memory", "CPU")):
        exit_code = None  # we killed it
    return ExecutionResult(
        exit_code=exit_code,
        timed_out=reason == "timeout",
        killed_reason=reason,
        seconds=seconds,
        output=output,
        output_bytes=size,
        backend=chosen,
    )


__all__ = ["ExecutionResult", "bwrap_available", "run_script", "truncate_middle"]
