"""Tests for the sandbox package: real processes, no mocks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from sandbox import (
    ExecutionResult,
    SandboxError,
    Workspace,
    bwrap_available,
    create_workspace,
    run_script,
    truncate_middle,
)

BACKENDS = ["plain", "bwrap"]


def need(backend: str) -> None:
    if backend == "bwrap" and not bwrap_available():
        pytest.skip("bubblewrap (bwrap) is not installed or cannot create a sandbox here")


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    public = tmp_path / "public"
    public.mkdir()
    (public / "train.csv").write_text("id,y\n1,0.5\n2,1.5\n")
    return create_workspace(tmp_path / "node", public)


def run(code: str, ws: Workspace, backend: str, **kw) -> ExecutionResult:
    kw.setdefault("timeout_s", 30)
    return run_script(textwrap.dedent(code), ws, backend=backend, **kw)


def alive(pid: int) -> bool:
    """True if pid exists and is not a zombie (zombies may linger if init does not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[-1].split()[0] not in (b"Z", b"X")


# ----------------------------------------------------------------------------- workspace


def test_create_workspace_layout(ws: Workspace, tmp_path: Path):
    assert ws.root == (tmp_path / "node").resolve()
    assert ws.input_dir == ws.root / "input"
    assert ws.input_dir.is_symlink()
    assert os.readlink(ws.input_dir) == str((tmp_path / "public").resolve())
    assert (ws.input_dir / "train.csv").read_text().startswith("id,y")
    assert ws.working_dir.is_dir() and ws.submission_dir.is_dir()
    assert ws.public_dir == (tmp_path / "public").resolve()


def test_recreate_workspace_wipes_submission_and_working(ws: Workspace, tmp_path: Path):
    (ws.submission_dir / "submission.csv").write_text("stale")
    (ws.working_dir / "sub").mkdir()
    (ws.working_dir / "sub" / "f.bin").write_bytes(b"x")
    os.chmod(ws.working_dir / "sub", 0o500)  # read-only leftovers must not block the wipe
    ws.input_dir.unlink()  # a broken link gets repaired
    ws2 = create_workspace(tmp_path / "node", tmp_path / "public")
    assert ws2 == ws
    assert list(ws2.submission_dir.iterdir()) == []
    assert list(ws2.working_dir.iterdir()) == []
    assert (ws2.input_dir / "train.csv").exists()


def test_missing_public_dir_raises(tmp_path: Path):
    with pytest.raises(SandboxError, match="does not exist"):
        create_workspace(tmp_path / "node", tmp_path / "nope")


def test_nested_public_dir_rejected(tmp_path: Path):
    (tmp_path / "node" / "pub").mkdir(parents=True)
    with pytest.raises(SandboxError):
        create_workspace(tmp_path / "node", tmp_path / "node" / "pub")


def test_unknown_backend(ws: Workspace):
    with pytest.raises(ValueError):
        run_script("print(1)", ws, timeout_s=5, backend="docker")


# ----------------------------------------------------------------------------- truncate


def test_truncate_middle_short_text_unchanged():
    assert truncate_middle("abcdef", 3, 3) == "abcdef"
    assert truncate_middle("", 0, 0) == ""


def test_truncate_middle_long_text():
    text = "H" * 10 + "M" * 100 + "T" * 20
    out = truncate_middle(text, 10, 20)
    assert out == "H" * 10 + "\n... [100 characters omitted] ...\n" + "T" * 20


def test_truncate_middle_zero_tail_and_head():
    assert truncate_middle("abcdef", 2, 0) == "ab\n... [4 characters omitted] ...\n"
    assert truncate_middle("abcdef", 0, 2) == "\n... [4 characters omitted] ...\nef"


# ----------------------------------------------------------------------------- running


@pytest.mark.parametrize("backend", BACKENDS)
def test_success_metric_and_submission(ws: Workspace, backend: str):
    need(backend)
    r = run(
        """
        import pandas as pd
        df = pd.read_csv("input/train.csv")
        pd.DataFrame({"id": df.id, "y": df.y * 2}).to_csv("submission/submission.csv", index=False)
        open("working/scratch.txt", "w").write("ok")
        print(f"METRIC: {df.y.mean():.4f}")
        """,
        ws,
        backend,
    )
    assert r.succeeded, r.output
    assert r.exit_code == 0 and not r.timed_out and r.killed_reason is None
    assert r.backend == backend
    assert "METRIC: 1.0000" in r.output
    assert (ws.submission_dir / "submission.csv").read_text().splitlines()[1] == "1,1.0"
    assert (ws.working_dir / "scratch.txt").read_text() == "ok"
    assert (ws.root / "solution.py").read_text().startswith("\nimport pandas")
    assert r.output_bytes == len(r.output.encode())
    assert (ws.root / "output.log").read_text() == r.output


@pytest.mark.parametrize("backend", BACKENDS)
def test_nonzero_exit_traceback(ws: Workspace, backend: str):
    need(backend)
    r = run("print('before')\nraise ValueError('boom-42')\n", ws, backend)
    assert not r.succeeded
    assert r.exit_code == 1 and r.killed_reason is None and not r.timed_out
    assert "before" in r.output
    assert "Traceback (most recent call last)" in r.output
    assert "ValueError: boom-42" in r.output


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_by_own_signal_reports_128_plus_n(ws: Workspace, backend: str):
    need(backend)
    r = run("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", ws, backend)
    assert r.exit_code == 128 + signal.SIGKILL
    assert r.killed_reason is None and not r.succeeded


@pytest.mark.parametrize("backend", BACKENDS)
def test_output_of_subprocesses_captured(ws: Workspace, backend: str):
    need(backend)
    r = run(
        """
        import os, subprocess, sys
        print("from-parent")
        sys.stderr.write("from-stderr\\n")
        os.system("echo from-child")
        subprocess.run(["echo", "from-subprocess"], check=True)
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('py-child-err')"])
        """,
        ws,
        backend,
    )
    assert r.succeeded, r.output
    for s in ("from-parent", "from-stderr", "from-child", "from-subprocess", "py-child-err"):
        assert s in r.output
    # unbuffered: the parent's line comes before the child's
    assert r.output.index("from-parent") < r.output.index("from-child")


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_run_starts_with_fresh_log(ws: Workspace, backend: str):
    need(backend)
    run("print('first-run')", ws, backend)
    r = run("print('second-run')", ws, backend)
    assert "second-run" in r.output and "first-run" not in r.output


@pytest.mark.parametrize("backend", BACKENDS)
def test_timeout_kills_loop_ignoring_signals(ws: Workspace, backend: str):
    need(backend)
    t0 = time.monotonic()
    r = run(
        """
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("looping", flush=True)
        while True:
            pass
        """,
        ws,
        backend,
        timeout_s=1.0,
    )
    elapsed = time.monotonic() - t0
    assert r.timed_out and r.killed_reason == "timeout"
    assert r.exit_code is None and not r.succeeded
    assert 1.0 <= r.seconds < 3.0 and elapsed < 3.0
    assert "looping" in r.output


DAEMON = """
import os, subprocess, sys, time
bg = subprocess.Popen(["sleep", "60"])          # same process group
open("bg.pid", "w").write(str(bg.pid))
pid = os.fork()
if pid == 0:                                    # double fork + setsid: a real daemon
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    open("daemon.pid.tmp", "w").write(str(os.getpid()))
    os.rename("daemon.pid.tmp", "daemon.pid")
    while True:
        with open("beat.txt", "a") as f:
            f.write("x")
        time.sleep(0.01)
os.waitpid(pid, 0)
while not (os.path.exists("daemon.pid") and os.path.getsize("beat.txt") >= 5):
    time.sleep(0.01)
print("daemon-started", flush=True)
"""


@pytest.mark.parametrize("ending", ["exit", "timeout"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_daemon_does_not_survive(ws: Workspace, backend: str, ending: str):
    need(backend)
    code = DAEMON + ("time.sleep(60)\n" if ending == "timeout" else "")
    r = run(code, ws, backend, timeout_s=2.0 if ending == "timeout" else 30)
    assert "daemon-started" in r.output, r.output
    assert r.timed_out == (ending == "timeout")
    beat = ws.root / "beat.txt"
    size = beat.stat().st_size
    assert size > 0
    time.sleep(0.3)
    assert beat.stat().st_size == size, "daemon kept running after run_script returned"
    if backend == "plain":  # pids are host pids only without a pid namespace
        for name in ("daemon.pid", "bg.pid"):
            pid = int((ws.root / name).read_text())
            assert not alive(pid), f"{name} {pid} survived"


@pytest.mark.parametrize("source", ["python", "child"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_output_flood_is_killed(ws: Workspace, backend: str, source: str):
    need(backend)
    code = {
        "python": "import sys\nprint('FIRST-LINE')\nwhile True:\n    sys.stdout.write('x'*9999)\n",
        "child": "import subprocess\nprint('FIRST-LINE', flush=True)\nsubprocess.run(['yes'])\n",
    }[source]
    cap = 2**20
    r = run(
        code,
        ws,
        backend,
        timeout_s=20,
        max_output_bytes=cap,
        output_head_chars=100,
        output_tail_chars=200,
    )
    assert r.killed_reason.startswith("output limit")
    assert r.exit_code is None and not r.timed_out and not r.succeeded
    assert r.output_bytes > cap
    assert (ws.root / "output.log").stat().st_size == r.output_bytes
    assert r.output_bytes < 2**30  # the poller stopped it long before a disk fill
    assert r.output.startswith("FIRST-LINE")
    assert "bytes omitted]" in r.output
    assert len(r.output) < 100 + 200 + 80
    assert r.seconds < 10


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_output_is_head_tail_truncated(ws: Workspace, backend: str):
    need(backend)
    r = run(
        "for i in range(100000):\n    print(f'line-{i}-é')\n",
        ws,
        backend,
        output_head_chars=50,
        output_tail_chars=60,
    )
    assert r.succeeded
    assert r.output.startswith("line-0-é\nline-1-é\n")
    assert r.output.endswith("line-99999-é\n")
    assert "omitted] ..." in r.output
    assert r.output_bytes == sum(len(f"line-{i}-é\n".encode()) for i in range(100000))
    assert len(r.output) < 50 + 60 + 60


@pytest.mark.parametrize("backend", BACKENDS)
def test_env_is_clean(ws: Workspace, backend: str, monkeypatch: pytest.MonkeyPatch):
    need(backend)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-should-not-leak")
    monkeypatch.setenv("SOME_OTHER_TOKEN", "tok")
    r = run(
        """
        import os
        print("KEY=" + repr(os.environ.get("OPENAI_API_KEY")))
        print("TOK=" + repr(os.environ.get("SOME_OTHER_TOKEN")))
        print("HOME=" + os.environ["HOME"])
        print("EXTRA=" + os.environ["EXTRA_VAR"])
        print("LANG=" + os.environ["LANG"], "UNBUF=" + os.environ["PYTHONUNBUFFERED"])
        """,
        ws,
        backend,
        env={"EXTRA_VAR": "extra-ok"},
    )
    assert r.succeeded, r.output
    assert "KEY=None" in r.output and "TOK=None" in r.output
    assert "sk-secret" not in r.output
    assert f"HOME={ws.root}" in r.output
    assert "EXTRA=extra-ok" in r.output
    assert "LANG=C.UTF-8 UNBUF=1" in r.output


@pytest.mark.parametrize("backend", BACKENDS)
def test_network(ws: Workspace, backend: str):
    """bwrap blocks a connection to a port the host listens on; plain (control) does not."""
    need(backend)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    try:
        r = run(
            f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
                print("NET-CONNECTED")
            except OSError as e:
                print("NET-BLOCKED", e)
            """,
            ws,
            backend,
        )
    finally:
        srv.close()
    assert r.succeeded, r.output
    expected = "NET-BLOCKED" if backend == "bwrap" else "NET-CONNECTED"
    assert expected in r.output, r.output


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_write(ws: Workspace, backend: str):
    """bwrap: input/ is read-only; plain (control): it is the host dir itself."""
    need(backend)
    r = run(
        """
        for target in ("input/evil.csv", "input/train.csv"):
            try:
                open(target, "w").write("overwritten")
                print("WROTE", target)
            except OSError as e:
                print("DENIED", target, e.errno)
        """,
        ws,
        backend,
    )
    assert r.succeeded, r.output
    if backend == "bwrap":
        assert r.output.count("DENIED") == 2, r.output
        assert not (ws.public_dir / "evil.csv").exists()
        assert (ws.public_dir / "train.csv").read_text().startswith("id,y")
    else:
        assert r.output.count("WROTE") == 2, r.output


def test_bwrap_filesystem_isolation(ws: Workspace, tmp_path: Path):
    need("bwrap")
    marker = f"/tmp/its-mle-sandbox-test-{uuid.uuid4().hex}"
    secret = tmp_path / "private_answers.csv"  # next to public/, never bound
    secret.write_text("answers")
    r = run(
        f"""
        import os
        for target in ("/evil", "/usr/evil", "/etc/evil", {str(Path.home() / "evil")!r}):
            try:
                open(target, "w").write("x")
                print("WROTE", target)
            except OSError as e:
                print("DENIED", target)
        open({marker!r}, "w").write("private tmp")
        print("TMP-OK", open({marker!r}).read())
        print("SECRET-VISIBLE" if os.path.exists({str(secret)!r}) else "SECRET-HIDDEN")
        print("TESTS-VISIBLE" if os.path.exists({__file__!r}) else "TESTS-HIDDEN")
        """,
        ws,
        "bwrap",
    )
    assert r.succeeded, r.output
    assert "WROTE" not in r.output and r.output.count("DENIED") == 4, r.output
    assert "TMP-OK private tmp" in r.output
    assert not os.path.exists(marker)  # /tmp inside was private
    assert "SECRET-HIDDEN" in r.output and "TESTS-HIDDEN" in r.output
    assert not Path("/evil").exists()


def test_auto_prefers_bwrap(ws: Workspace):
    need("bwrap")
    assert run("print(1)", ws, "auto").backend == "bwrap"


def test_python_interpreter_is_the_requested_one(ws: Workspace):
    backend = "bwrap" if bwrap_available() else "plain"
    r = run("import sys; print('PREFIX=' + sys.prefix)", ws, backend, python=sys.executable)
    assert r.succeeded, r.output
    assert f"PREFIX={sys.prefix}" in r.output


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_runs_in_threads(tmp_path: Path, backend: str):
    """The agent runs nodes in parallel threads: runs must not mix up output or results."""
    need(backend)
    from concurrent.futures import ThreadPoolExecutor

    public = tmp_path / "public"
    public.mkdir()
    wss = [create_workspace(tmp_path / f"node{i}", public) for i in range(4)]

    def one(i: int) -> ExecutionResult:
        code = f"import sys, time\ntime.sleep(0.2)\nprint('node-{i}')\nsys.exit({i})\n"
        return run_script(code, wss[i], timeout_s=20, backend=backend)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    for i, r in enumerate(results):
        assert r.exit_code == i and r.output == f"node-{i}\n"


def test_bwrap_extra_ro_binds(ws: Workspace, tmp_path: Path):
    need("bwrap")
    models = tmp_path / "models"
    models.mkdir()
    (models / "w.txt").write_text("weights")
    code = f"""
        print("READ", open({str(models / "w.txt")!r}).read())
        try:
            open({str(models / "new.txt")!r}, "w")
            print("WROTE")
        except OSError:
            print("DENIED")
        """
    r = run(code, ws, "bwrap", extra_ro_binds=[models])
    assert r.succeeded, r.output
    assert "READ weights" in r.output and "DENIED" in r.output
    r = run(code, ws, "bwrap")  # not bound -> not visible at all
    assert r.exit_code == 1 and "FileNotFoundError" in r.output
    with pytest.raises(SandboxError, match="does not exist"):
        run("print(1)", ws, "bwrap", extra_ro_binds=[tmp_path / "missing"])


def test_gpus_are_bound_only_when_asked(monkeypatch):
    from sandbox import runner
    from sandbox.limits import Limits

    runner._gpu_args.cache_clear()
    monkeypatch.setattr(runner.glob, "glob", lambda pattern: ["/dev/nvidia0", "/dev/nvidiactl"]
                        if pattern == "/dev/nvidia*" else [])
    try:
        def argv(limits):
            return runner._bwrap_argv(["python", "solution.py"], "/ws", "/data", sys.executable, [], {}, 3, limits)

        with_gpus = argv(Limits(gpus=True))
        assert "--dev-bind" not in argv(Limits())
        i = with_gpus.index("/dev/nvidia0")
        assert with_gpus[i - 1] == "--dev-bind" and "/dev/nvidiactl" in with_gpus
        j = with_gpus.index("/tmp")  # the private /tmp is capped at the file-size limit
        assert with_gpus[j - 3: j] == ["--size", str(Limits().file_bytes), "--tmpfs"]
    finally:
        runner._gpu_args.cache_clear()


def test_rlimits_without_a_cgroup():
    from sandbox.limits import GiB, Limits, rlimit_args

    args = rlimit_args(Limits(memory_bytes=GiB, cpu_seconds=7, file_bytes=5 * GiB), 10, cgroup=False)
    assert f"--as={GiB}:{GiB}" in args and "--cpu=7:12" in args and f"--fsize={5 * GiB}:{5 * GiB}" in args
    assert "--core=0:0" in args
    gpu = rlimit_args(Limits(memory_bytes=GiB, gpus=True), 10, cgroup=False)
    assert not any(a.startswith("--as=") for a in gpu)  # an address-space cap breaks CUDA init
    assert not any(a.startswith(("--as=", "--nproc=")) for a in rlimit_args(Limits(), 10, cgroup=True))


def test_a_run_whose_agent_is_gone_does_not_start():
    """The run's first process checks that the agent is still its parent (after setting its
    parent-death signal), so an agent killed between fork and exec leaves no orphan script."""
    from sandbox.runner import _entry

    direct = subprocess.run([*_entry(None), "/bin/echo", "ran"], capture_output=True, text=True)
    assert direct.stdout == "ran\n" and direct.returncode == 0
    # started by someone else (here a shell standing in for "reparented after the agent died")
    other = subprocess.run(["/bin/sh", "-c", '"$@"; echo "rc=$?"', "x", *_entry(None), "/bin/echo", "ran"],
                           capture_output=True, text=True)
    assert other.stdout == "rc=125\n"
