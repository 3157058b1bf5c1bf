"""llama.cpp's native OpenAI-compatible server (``llama-server``) on loopback, with parallel slots.

``NativeServer`` has the public shape of ``serving.local.LocalServer`` but runs the C++
``llama-server`` binary, which serves ``n_parallel`` requests at once (continuous batching
over slots) -- what self-consistency fan-out needs. The binary is not a dependency: build it
once with ``scripts/build_llama_server.sh`` (cached under ``$ITS_MLE_CACHE/llama-server``), or
point ``$ITS_MLE_LLAMA_SERVER`` (or ``binary=``) at any ``llama-server``.

The child runs in its own process group on ``127.0.0.1`` and a free port; ``start()`` waits
until ``GET /health`` answers 200 (model loaded). It is stopped (SIGTERM to the group, then
SIGKILL) on ``stop()``, on leaving the ``with`` block, at interpreter exit, and by the kernel
(``PR_SET_PDEATHSIG``) when this process dies, even on SIGKILL.

CLI::

    python -m serving.native which           # print the binary found, or explain how to build it
    python -m serving.native serve 0.5b -np 2

Imports nothing from the rest of the project.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .process import ServerProcess, default_threads, popen_tied
from .weights import LOCAL_MODELS, LocalModelError, cache_dir, ensure_local_model

__all__ = ["LlamaServerNotFound", "NativeServer", "find_llama_server"]

ENV_BINARY = "ITS_MLE_LLAMA_SERVER"
BUILD_SCRIPT = "scripts/build_llama_server.sh"


class LlamaServerNotFound(LocalModelError):
    """No ``llama-server`` binary: the one-line message says how to build one."""


# --------------------------------------------------------------------------- finding the binary

_verified: dict[tuple[str, int, int], bool] = {}


def _sha256_ok(binary: Path) -> bool:
    """``<dir>/SHA256SUMS`` (written by the build script, next to ``bin/``) matches the binary."""
    sums = binary.parent.parent / "SHA256SUMS"
    try:
        st = binary.stat()
        key = (str(binary), st.st_size, st.st_mtime_ns)
        if key in _verified:
            return _verified[key]
        want = None
        for line in sums.read_text().splitlines():
            digest, _, name = line.strip().partition(" ")
            if name.strip().lstrip("*").removeprefix("./") == "bin/llama-server":
                want = digest.lower()
        h = hashlib.sha256()
        with open(binary, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return False
    _verified[key] = ok = want is not None and h.hexdigest() == want
    return ok


def _executable(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


def find_llama_server() -> Path | None:
    """The ``llama-server`` to use, or None.

    ``$ITS_MLE_LLAMA_SERVER`` if set (it must name an executable file, else None); otherwise the
    newest build of ``scripts/build_llama_server.sh`` in ``$ITS_MLE_CACHE/llama-server`` whose
    hash matches its ``SHA256SUMS``.
    """
    env = os.environ.get(ENV_BINARY)
    if env:
        p = Path(env).expanduser()
        return p.resolve() if _executable(p) else None
    root = cache_dir() / "llama-server"
    try:
        found = [p for p in root.glob("*/bin/llama-server") if _executable(p)]
    except OSError:
        return None
    for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True):
        if _sha256_ok(p):
            return p
    return None


def _not_found_message() -> str:
    env = os.environ.get(ENV_BINARY)
    if env:
        return f"${ENV_BINARY}={env} is not an executable llama-server (unset it or run {BUILD_SCRIPT})"
    return (
        f"llama-server not built: run {BUILD_SCRIPT} (about 8 minutes on 2 cores) "
        f"or set ${ENV_BINARY} to a llama-server binary"
    )


# --------------------------------------------------------------------------- spawning


def _child_env() -> dict[str, str]:
    # llama-server reads LLAMA_ARG_* (ctx size, port, API key, ...) and LLAMA_API_KEY from the
    # environment: only our command line configures it.
    return {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_")}


# --------------------------------------------------------------------------- the server


class NativeServer(ServerProcess):
    """llama.cpp's ``llama-server`` on loopback with ``n_parallel`` slots, as a context manager.

    ``n_ctx`` is the context of *one* request (slot): llama-server splits its ``--ctx-size``
    evenly across ``--parallel`` slots, so it is started with ``n_ctx * n_parallel``. Up to
    ``n_parallel`` requests are decoded together (continuous batching); more queue. On CPU the
    slots share the same cores: batching raises total tokens/s, not per-request speed.

    Each slot keeps its own KV cache and reuses the longest common prefix with its previous
    request (usage reports it as ``usage.prompt_tokens_details.cached_tokens``); a new request
    goes to the idle slot whose cached prompt matches best.

    ``n_threads`` (decode and prompt processing) defaults to half the CPUs this process may use.
    ``extra_args`` are appended to the command line (later flags win), e.g. ``["--metrics"]``.
    ``binary`` defaults to ``find_llama_server()``; ``start()`` raises ``LlamaServerNotFound``
    (a ``LocalModelError``) with a one-line message when there is none.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        model_alias: str,
        n_ctx: int = 8192,
        n_parallel: int = 1,
        n_threads: int | None = None,
        log_path: Path | None = None,
        startup_timeout_s: float = 180,
        binary: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if int(n_parallel) < 1:
            raise ValueError("n_parallel must be at least 1")
        if int(n_ctx) < 1:
            raise ValueError("n_ctx must be positive")
        self.model_path = Path(model_path)
        self.model_alias = model_alias
        self.n_ctx = int(n_ctx)
        self.n_parallel = int(n_parallel)
        self.n_threads = int(n_threads) if n_threads else default_threads()
        self.binary: Path | None = Path(binary) if binary is not None else find_llama_server()
        self.extra_args = tuple(str(a) for a in extra_args)
        self._init_process(log_path, startup_timeout_s)

    # ------------------------------------------------------------------ lifecycle

    def command(self, port: int) -> list[str]:
        """The child's command line (for logs and debugging)."""
        if self.binary is None:
            raise LlamaServerNotFound(_not_found_message())
        return [
            str(self.binary),
            "--model", str(self.model_path),
            "--alias", self.model_alias,
            "--host", "127.0.0.1",
            "--port", str(port),
            # total KV context, split evenly across the slots
            "--ctx-size", str(self.n_ctx * self.n_parallel),
            "--parallel", str(self.n_parallel),
            "--threads", str(self.n_threads),
            "--threads-batch", str(self.n_threads),
            "--no-webui",
            *self.extra_args,  # last: later flags override earlier ones
        ]  # fmt: skip

    kind = "llama-server"
    ready_path = "/health"  # 503 while the model loads, 200 once requests can be served
    poll_s = 0.1
    log_prefix = "its-mle-llama-server-"
    bind_errors = ("address already in use", "couldn't bind")

    def _check_startable(self) -> None:
        if self.binary is None or not _executable(self.binary):
            raise LlamaServerNotFound(
                _not_found_message()
                if self.binary is None
                else f"llama-server binary is not executable: {self.binary} (run {BUILD_SCRIPT})"
            )
        if not self.model_path.is_file():
            raise LocalModelError(f"model file not found: {self.model_path}")

    def _spawn(self, port: int) -> None:
        cmd = self.command(port)
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/v1"
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = popen_tied(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                start_new_session=True,  # own process group: killpg reaches all of it
                close_fds=True,
            )

    def __repr__(self) -> str:
        state = f"running at {self.base_url}" if self.running else "stopped"
        return f"NativeServer({self.model_alias!r}, n_parallel={self.n_parallel}, {state})"


# --------------------------------------------------------------------------- CLI


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.native", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("which", help="print the llama-server binary that would be used")
    s = sub.add_parser("serve", help="start the server, print base_url, wait for Ctrl-C")
    s.add_argument("model", help=f"one of {', '.join(LOCAL_MODELS)} or a GGUF path")
    s.add_argument("--alias", help="model name the server answers to (default: the model's)")
    s.add_argument("--n-ctx", type=int, default=8192, help="context per slot")
    s.add_argument("-np", "--n-parallel", type=int, default=2)
    s.add_argument("--n-threads", type=int, default=None)
    s.add_argument("--log", type=Path, default=None, help="server log file")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "which":
            found = find_llama_server()
            if found is None:
                raise LlamaServerNotFound(_not_found_message())
            print(found)
            return 0
        path = ensure_local_model(args.model, progress=lambda m: print(m, file=sys.stderr, flush=True))
        spec = LOCAL_MODELS.get(args.model.strip().lower())
        alias = args.alias or (spec.model_name if spec else path.stem)
        server = NativeServer(
            path, model_alias=alias, n_ctx=args.n_ctx, n_parallel=args.n_parallel,
            n_threads=args.n_threads, log_path=args.log,
        )  # fmt: skip
        with server:
            print(server.base_url, flush=True)
            print(f"serving {alias} with {server.n_parallel} slots (ready in {server.startup_s:.1f} s); "
                  "Ctrl-C to stop", file=sys.stderr, flush=True)  # fmt: skip
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            while server.running:
                time.sleep(0.5)
            print("llama-server exited", file=sys.stderr)
            return 2
    except LocalModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(_main())
