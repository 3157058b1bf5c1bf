"""Resource limits of one script run: a cgroup where one can be made, rlimits otherwise.

Memory and process count are capped by a per-run cgroup when this process may create one
(cgroup v1 ``memory`` + ``pids`` hierarchies, or a cgroup v2 subtree with both controllers
enabled). The run's first process enters the cgroup itself (a tiny ``sh`` that writes its own
pid to ``cgroup.procs`` and then execs the command), so nothing it forks can escape it, and
after the run every process still in the cgroup is killed -- setsid daemons included, for the
plain backend too.

Without a usable cgroup: memory is capped by an address-space rlimit (RLIMIT_AS) -- except
with GPUs passed through, where an address-space limit under ~32 GiB breaks CUDA's init, so
then there is no memory cap at all -- and processes by RLIMIT_NPROC. RLIMIT_NPROC counts every
process of the user, so the cap is the user's current count plus ``processes``; the kernel
does not apply it to root, which then relies on the pid namespace (bwrap) and the timeout.

Always: RLIMIT_FSIZE (largest file a script may write), RLIMIT_CPU per process (a backstop
behind the wall-clock timeout), RLIMIT_CORE = 0 (no core dumps in the workspace).
"""

from __future__ import annotations

import os
import shlex
import signal
import time
import uuid
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

GiB = 2**30
MiB = 2**20


def physical_memory() -> int:
    """Bytes of RAM on this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class Limits:
    """What one script run may use. ``None`` picks the documented default."""

    memory_bytes: int | None = None  # default: half the machine's RAM
    processes: int = 512  # processes + threads alive at once
    cpu_seconds: float | None = None  # per process; default: timeout x CPU count
    file_bytes: int = GiB  # largest file the script may write
    gpus: bool = False  # bind /dev/nvidia* into the sandbox (memory then by cgroup only)
    # the interpreter scripts run with (its prefix is bound read-only under bwrap); None: this one.
    # Carried here because these settings reach every place a script is run.
    python: str | None = None

    def memory(self) -> int:
        return self.memory_bytes if self.memory_bytes is not None else max(GiB, physical_memory() // 2)

    def shared(self, runs: int) -> Limits:
        """The limits of each of `runs` scripts that run at the same time within these: the
        memory (the default, half the RAM, included) divided among them, so together they stay
        within it. The CPU limit is per process (RLIMIT_CPU), not a total, and stays."""
        if runs <= 1:
            return self
        return replace(self, memory_bytes=self.memory() // runs)

    def cpu(self, timeout_s: float) -> int:
        if self.cpu_seconds is not None:
            return max(1, int(self.cpu_seconds))
        return max(1, int(timeout_s * (os.cpu_count() or 1)) + 1)


def describe_bytes(n: int) -> str:
    return f"{n / GiB:.3g} GiB" if n >= GiB else f"{n / MiB:.3g} MiB"


# --------------------------------------------------------------------------- cgroups


@dataclass(frozen=True)
class _Hierarchy:
    version: int  # 1 or 2
    memory: Path  # the directory under which run cgroups are made (v1: memory hierarchy)
    pids: Path  # v1: pids hierarchy; v2: same as memory


def _mounts() -> list[tuple[str, str, set[str]]]:
    out = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                    out.append((parts[1], parts[2], set(parts[3].split(","))))
    except OSError:
        pass
    return out


def _own_paths() -> dict[str, str]:
    """Controller (or "" for v2) -> this process's cgroup path."""
    out: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for c in controllers.split(",") if controllers else [""]:
                    out[c] = path
    except (OSError, ValueError):
        pass
    return out


def _usable_dir(mount: str, path: str) -> Path | None:
    d = Path(mount) / path.lstrip("/")
    if d.is_dir() and os.access(d, os.W_OK):
        return d
    d = Path(mount)  # in a cgroup namespace our own path may not show under the mount
    return d if (d / "cgroup.procs").exists() and os.access(d, os.W_OK) else None


def _remove_stale(hier: _Hierarchy, older_than_s: float = 120.0) -> None:
    """Remove run cgroups an agent killed with SIGKILL left behind (empty, and old enough that
    no agent can be about to enter them; rmdir refuses cgroups that still hold processes)."""
    now = time.time()
    for parent in {hier.memory, hier.pids}:
        for d in parent.glob("its-mle-*"):
            try:
                if now - d.stat().st_mtime > older_than_s:
                    d.rmdir()
            except OSError:
                pass


def _probe(hier: _Hierarchy) -> bool:
    """Can we make a run cgroup there and set its limits?"""
    _remove_stale(hier)
    try:
        cg = RunCgroup._make(hier, Limits(memory_bytes=GiB, processes=64))
    except OSError:
        return False
    cg.remove()
    return True


@lru_cache(maxsize=1)
def cgroup_hierarchy() -> _Hierarchy | None:
    """Where this process may create per-run cgroups (probed once), or None."""
    if os.environ.get("ITS_MLE_NO_CGROUP"):
        return None
    mounts = _mounts()
    own = _own_paths()
    v1 = {c: m for m, kind, opts in mounts if kind == "cgroup" for c in ("memory", "pids") if c in opts}
    if "memory" in v1 and "pids" in v1:
        mem = _usable_dir(v1["memory"], own.get("memory", "/"))
        pids = _usable_dir(v1["pids"], own.get("pids", "/"))
        if mem and pids:
            hier = _Hierarchy(1, mem, pids)
            if _probe(hier):
                return hier
    for mount, kind, _ in mounts:
        if kind != "cgroup2":
            continue
        d = _usable_dir(mount, own.get("", "/"))
        if d is None:
            continue
        try:
            enabled = set((d / "cgroup.subtree_control").read_text().split())
            if not {"memory", "pids"} <= enabled:
                (d / "cgroup.subtree_control").write_text("+memory +pids")
        except OSError:
            continue
        hier = _Hierarchy(2, d, d)
        if _probe(hier):
            return hier
    return None


class RunCgroup:
    """The cgroup(s) of one run: limits, entry, OOM check, kill-all, removal."""

    def __init__(self, hier: _Hierarchy, dirs: list[Path]) -> None:
        self.hier = hier
        self.dirs = dirs

    @classmethod
    def create(cls, limits: Limits) -> RunCgroup | None:
        """A fresh cgroup with ``limits`` applied, or None where cgroups are not usable."""
        hier = cgroup_hierarchy()
        if hier is None:
            return None
        try:
            return cls._make(hier, limits)
        except OSError:
            return None

    @classmethod
    def _make(cls, hier: _Hierarchy, limits: Limits) -> RunCgroup:
        name = f"its-mle-{uuid.uuid4().hex[:12]}"
        dirs = [hier.memory / name] if hier.version == 2 else [hier.memory / name, hier.pids / name]
        made: list[Path] = []
        try:
            for d in dirs:
                d.mkdir()
                made.append(d)
            mem, pids = dirs[0], dirs[-1]
            if hier.version == 1:
                (mem / "memory.limit_in_bytes").write_text(str(limits.memory()))
                _try_write(mem / "memory.memsw.limit_in_bytes", str(limits.memory()))  # no swap either
                (pids / "pids.max").write_text(str(limits.processes))
            else:
                (mem / "memory.max").write_text(str(limits.memory()))
                _try_write(mem / "memory.swap.max", "0")
                (pids / "pids.max").write_text(str(limits.processes))
        except OSError:
            for d in reversed(made):
                _rmdir(d)
            raise
        return cls(hier, dirs)

    def enter_commands(self) -> str:
        """Shell commands that move the running shell into the cgroup."""
        return " && ".join(f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}" for d in self.dirs)

    def oom_killed(self) -> bool:
        """True when the kernel killed a process of this run for exceeding the memory cap."""
        name = "memory.oom_control" if self.hier.version == 1 else "memory.events"
        try:
            for line in (self.dirs[0] / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self.dirs:
            try:
                out |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
            except (OSError, ValueError):
                pass
        return out

    def kill_all(self, wait_s: float = 2.0) -> None:
        """SIGKILL everything left in the cgroup and wait (bounded) until it is empty."""
        if self.hier.version == 2 and (self.dirs[0] / "cgroup.kill").exists():
            _try_write(self.dirs[0] / "cgroup.kill", "1")
        deadline = time.monotonic() + wait_s
        while True:
            left = self.pids()
            if not left or time.monotonic() > deadline:
                return
            for pid in left:  # pids in our cgroup are ours: a recycled pid would be in another
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        for d in reversed(self.dirs):
            _rmdir(d)


def _try_write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError:
        pass


def _rmdir(d: Path) -> None:
    for _ in range(50):  # the kernel may take a moment to release killed tasks
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


# --------------------------------------------------------------------------- rlimits


def _user_tasks(uid: int) -> int:
    """Processes + threads this user has now (what RLIMIT_NPROC counts)."""
    n = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{name}")
            if st.st_uid == uid:
                n += len(os.listdir(f"/proc/{name}/task"))
        except OSError:
            continue
    return n


def rlimit_args(limits: Limits, timeout_s: float, *, cgroup: bool) -> list[str]:
    """``prlimit`` options for one run (cgroup: memory and processes are the cgroup's job)."""
    fsize = limits.file_bytes
    cpu = limits.cpu(timeout_s)
    args = [f"--fsize={fsize}:{fsize}", f"--cpu={cpu}:{cpu + 5}", "--core=0:0"]
    if not cgroup:
        if not limits.gpus:
            mem = limits.memory()
            args.append(f"--as={mem}:{mem}")
        uid = os.getuid()
        if uid != 0:
            nproc = _user_tasks(uid) + limits.processes
            args.append(f"--nproc={nproc}:{nproc}")
    return args


__all__ = ["GiB", "Limits", "MiB", "RunCgroup", "cgroup_hierarchy", "describe_bytes", "rlimit_args"]
