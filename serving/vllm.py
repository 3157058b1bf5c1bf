"""A vLLM server for a Hugging Face model, started the way the agent relies on it.

``VLLMServer`` runs ``vllm serve MODEL`` in its own process group with:

- the reasoning parser of the model's family, so the chain of thought comes back in its own
  field instead of inline ``<think>`` text (R1 and its distills, QwQ: ``deepseek_r1``; Qwen3's
  thinking models: ``qwen3``; see ``reasoning_parser_for``); none for other models;
- automatic prefix caching (``--enable-prefix-caching``; the run's stable prompt prefix is then
  read once) and cached-token counts in ``usage.prompt_tokens_details``
  (``--enable-prompt-tokens-details``);
- the sampling of the model card (``--generation-config auto``: generation_config.json);
- a served model name, by default the repository's basename (``DeepSeek-R1-Distill-Qwen-7B``).

``start()`` waits until ``GET /v1/models`` answers (loading a 32B model takes minutes, hence
the long default timeout); a server that exits first raises ``LocalModelError`` with the last
lines of its log. It is stopped (SIGTERM to the group, then SIGKILL) on ``stop()``, on leaving
the ``with`` block, at interpreter exit, and by the kernel when this process dies (see
``serving.process.popen_tied``). vLLM itself is not a dependency: ``pip install .[vllm]``, or
name any ``vllm`` executable with ``vllm=`` / ``--vllm``.

CLI::

    python -m serving.vllm --model deepseek-ai/DeepSeek-R1-Distill-Qwen-7B [--port 8000]
        [--tensor-parallel-size N] [--data-parallel-size N] [--max-model-len L]
        [--gpu-memory-utilization F] [--served-model-name NAME] [--host H] [--vllm PATH]
        [--reasoning-parser auto|none|NAME] [--dry-run] [--extra ARG ...]

prints the base URL on stdout once the server answers and serves until Ctrl-C / SIGTERM;
``--dry-run`` prints the shell-quoted command line only. Bad input (no vllm executable, a port in
use, bad numbers) and a server that exits or does not answer in time are one line on stderr
(with the log's last lines) and exit code 2.

Imports nothing from the rest of the project.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .process import ServerProcess, log_tail, popen_tied, port_free
from .weights import LocalModelError

__all__ = ["VLLMNotFound", "VLLMServer", "find_vllm", "reasoning_parser_for", "served_name_for"]

EXIT_USAGE = 2
DEFAULT_PORT = 8000  # vLLM's own default, for the CLI; the Python API picks a free port

# Model families vLLM has a reasoning parser for (names checked against vLLM's "Reasoning
# Outputs" page: DeepSeek R1 series -> deepseek_r1, QwQ-32B -> deepseek_r1, Qwen3 series ->
# qwen3). First match wins: an R1 distill built on Qwen3 (DeepSeek-R1-0528-Qwen3-8B) is R1's.
_REASONING_FAMILIES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"deepseek[-_]?r1|r1[-_]distill", re.IGNORECASE), "deepseek_r1"),
    (re.compile(r"qwq", re.IGNORECASE), "deepseek_r1"),
    (re.compile(r"qwen3", re.IGNORECASE), "qwen3"),
)
# Qwen3 variants that never think (no <think> block): Qwen3-Coder, Qwen3-*-Instruct-2507.
_NON_THINKING = re.compile(r"qwen3[-_]coder|instruct[-_]2507", re.IGNORECASE)


class VLLMNotFound(LocalModelError):
    """No ``vllm`` executable: the one-line message says how to get one."""


def reasoning_parser_for(model: str) -> str | None:
    """vLLM's ``--reasoning-parser`` for a model (repository id or path), None when it does not
    reason (or is a family we do not know: pass the parser explicitly then)."""
    name = model.rstrip("/")
    if _NON_THINKING.search(name) and not _REASONING_FAMILIES[0][0].search(name):
        return None
    for pattern, parser in _REASONING_FAMILIES:
        if pattern.search(name):
            return parser
    return None


def served_name_for(model: str) -> str:
    """The default served model name: the repository's (or directory's) basename."""
    return Path(model.rstrip("/")).name or model


def find_vllm(vllm: str | os.PathLike[str] | None = None) -> Path | None:
    """The ``vllm`` executable to run: `vllm` (a path, or a name looked up on PATH), else the
    one on PATH; None when there is none."""
    if vllm is not None:
        text = str(vllm)
        if os.sep not in text:
            found = shutil.which(text)
            return Path(found) if found else None
        p = Path(text).expanduser()
        return p.absolute() if p.is_file() and os.access(p, os.X_OK) else None
    found = shutil.which("vllm")
    return Path(found) if found else None


def _not_found_message(vllm: str | os.PathLike[str] | None) -> str:
    if vllm is not None:
        return f"vllm executable not found or not executable: {vllm}"
    return "no `vllm` executable on PATH: install it with `pip install '.[vllm]'` or pass --vllm PATH"


class VLLMServer(ServerProcess):
    """``vllm serve MODEL`` as a context manager; ``.base_url`` and ``.served_name`` once started.

    ``port=None`` picks a free loopback port at each start (what a run wants); a named port that
    is taken is refused. ``reasoning_parser="auto"`` picks the family's parser
    (``reasoning_parser_for``), ``None`` / ``"none"`` sends none, any other string is passed as
    is. ``max_model_len`` / ``gpu_memory_utilization`` left ``None`` keep vLLM's defaults.
    ``extra_args`` are appended to the command line (vLLM: later flags win).
    """

    kind = "vLLM server"
    ready_path = "/v1/models"
    poll_s = 0.5
    log_prefix = "its-mle-vllm-"
    bind_errors = ("address already in use",)

    def __init__(
        self,
        model: str,
        *,
        served_model_name: str | None = None,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        port: int | None = None,
        host: str = "127.0.0.1",
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        reasoning_parser: str | None = "auto",
        vllm: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
        startup_timeout_s: float = 1800,
    ) -> None:
        if not model or not model.strip():
            raise ValueError("model must name a Hugging Face repository or a local model directory")
        for name, value in (("tensor_parallel_size", tensor_parallel_size),
                            ("data_parallel_size", data_parallel_size)):
            if int(value) < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if max_model_len is not None and int(max_model_len) < 1:
            raise ValueError(f"max_model_len must be at least 1, got {max_model_len}")
        if gpu_memory_utilization is not None and not 0 < float(gpu_memory_utilization) <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        if port is not None and not 1 <= int(port) <= 65535:
            raise ValueError(f"port must be in 1..65535, got {port}")
        self.model = model.strip()
        self.served_name = served_model_name or served_name_for(self.model)
        self.tensor_parallel_size = int(tensor_parallel_size)
        self.data_parallel_size = int(data_parallel_size)
        self.max_model_len = int(max_model_len) if max_model_len is not None else None
        gpu = gpu_memory_utilization
        self.gpu_memory_utilization = None if gpu is None else float(gpu)
        if reasoning_parser == "auto":
            reasoning_parser = reasoning_parser_for(self.model)
        self.reasoning_parser = None if reasoning_parser in (None, "", "none") else reasoning_parser
        self._vllm_arg = vllm
        self.executable: Path | None = find_vllm(vllm)
        self.extra_args = tuple(str(a) for a in extra_args)
        self._init_process(log_path, startup_timeout_s, port=None if port is None else int(port), host=host)

    def command(self, port: int | None = None) -> list[str]:
        """The server's command line (`port` defaults to the named one, else vLLM's 8000)."""
        port = port if port is not None else (self.requested_port or DEFAULT_PORT)
        exe = str(self.executable) if self.executable else "vllm"
        argv = [
            exe, "serve", self.model,
            "--served-model-name", self.served_name,
            "--host", self.host,
            "--port", str(port),
            "--tensor-parallel-size", str(self.tensor_parallel_size),
        ]  # fmt: skip
        if self.data_parallel_size > 1:  # older vLLM versions have no --data-parallel-size
            argv += ["--data-parallel-size", str(self.data_parallel_size)]
        if self.max_model_len is not None:
            argv += ["--max-model-len", str(self.max_model_len)]
        if self.gpu_memory_utilization is not None:
            argv += ["--gpu-memory-utilization", f"{self.gpu_memory_utilization:g}"]
        if self.reasoning_parser:
            argv += ["--reasoning-parser", self.reasoning_parser]
        argv += [
            "--enable-prefix-caching",
            "--enable-prompt-tokens-details",
            "--generation-config", "auto",
            *self.extra_args,
        ]  # fmt: skip
        return argv

    def _check_startable(self) -> None:
        if self.executable is None or not os.access(self.executable, os.X_OK):
            raise VLLMNotFound(_not_found_message(self._vllm_arg))

    def check(self) -> None:
        """Raise ``LocalModelError`` (one line) when ``start()`` could not even try: no vllm
        executable, or the named port is taken."""
        self._check_startable()
        if self.requested_port is not None and not port_free(self.host, self.requested_port):
            raise LocalModelError(f"port {self.requested_port} is in use on {self.host}")

    def _spawn(self, port: int) -> None:
        cmd = self.command(port)
        with open(self.log_path, "ab") as log:  # type: ignore[arg-type]
            log.write(f"$ {shlex.join(cmd)}\n".encode())
            log.flush()
            self._proc = popen_tied(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: killpg reaches its workers too
                close_fds=True,
            )

    def __repr__(self) -> str:
        state = f"running at {self.base_url}" if self.running else "stopped"
        return f"VLLMServer({self.model!r} as {self.served_name!r}, {state})"


# --------------------------------------------------------------------------- CLI


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 1..65535, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="python -m serving.vllm", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="Hugging Face repository id or local model directory")
    p.add_argument("--tensor-parallel-size", type=_at_least_one, default=1, metavar="N")
    p.add_argument("--data-parallel-size", type=_at_least_one, default=1, metavar="N")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, metavar="P", help=f"default {DEFAULT_PORT}")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (0.0.0.0: all interfaces)")
    p.add_argument("--max-model-len", type=_at_least_one, default=None, metavar="L")
    p.add_argument("--gpu-memory-utilization", type=_fraction, default=None, metavar="F")
    p.add_argument("--served-model-name", default=None, metavar="NAME",
                   help="default: the repository's basename")
    p.add_argument("--reasoning-parser", default="auto", metavar="auto|none|NAME",
                   help="default auto: by model family (R1 distills, QwQ: deepseek_r1; Qwen3: qwen3)")
    p.add_argument("--vllm", default=None, metavar="PATH", help="vllm executable (default: from PATH)")
    p.add_argument("--startup-timeout", type=float, default=1800.0, metavar="SECONDS")
    p.add_argument("--log", type=Path, default=None, help="server log file (default: a temporary file)")
    p.add_argument("--dry-run", action="store_true", help="print the command line and exit")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], metavar="ARG",
                   help="everything after it goes to `vllm serve` as is")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input is one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        server = VLLMServer(
            args.model, served_model_name=args.served_model_name,
            tensor_parallel_size=args.tensor_parallel_size, data_parallel_size=args.data_parallel_size,
            port=args.port, host=args.host, max_model_len=args.max_model_len,
            gpu_memory_utilization=args.gpu_memory_utilization, reasoning_parser=args.reasoning_parser,
            vllm=args.vllm, extra_args=args.extra, log_path=args.log, startup_timeout_s=args.startup_timeout,
        )  # fmt: skip
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        print(shlex.join(server.command()))
        return 0
    try:
        # SIGTERM leaves through the `with` block like Ctrl-C does, so the server is stopped
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        server.check()
        if sys.stderr.isatty():  # for a person waiting; scripts get only the URL or one error line
            print(f"starting: {shlex.join(server.command())}", file=sys.stderr, flush=True)
        with server:
            print(server.base_url, flush=True)
            print(f"serving {server.served_name} (ready in {server.startup_s:.1f} s, log {server.log_path}); "
                  "Ctrl-C to stop", file=sys.stderr, flush=True)  # fmt: skip
            while server.running:
                time.sleep(0.5)
            print(f"error: vLLM server exited (code {server.exit_code}): {log_tail(server.log_path)}",
                  file=sys.stderr)
            return EXIT_USAGE
    except LocalModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
