"""llama.cpp's native ``llama-server`` with parallel slots (serving.native.NativeServer).

The binary is optional and never built by tests or CI: build it once with
``scripts/build_llama_server.sh``; without it the integration tests here skip. The command-line
and binary-lookup tests at the top need neither the binary nor the weights.

Run: python -m pytest tests/integration/test_native_server.py -s
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from serving.local import LocalModelError, ensure_local_model
from serving.native import LlamaServerNotFound, NativeServer, find_llama_server

ALIAS = "qwen-0.5b-native"
ROOT = Path(__file__).resolve().parents[2]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- no binary needed


def test_command_line_splits_context_across_slots():
    srv = NativeServer(
        Path("/models/m.gguf"), model_alias="m", n_ctx=3000, n_parallel=2, n_threads=3,
        binary=Path("/opt/llama/llama-server"), extra_args=["--metrics"],
    )  # fmt: skip
    cmd = srv.command(4321)
    assert cmd[0] == "/opt/llama/llama-server"

    def arg(flag: str) -> str:
        return cmd[cmd.index(flag) + 1]

    assert arg("--model") == "/models/m.gguf" and arg("--alias") == "m"
    assert arg("--host") == "127.0.0.1" and arg("--port") == "4321"
    assert arg("--ctx-size") == "6000"  # llama-server gives each slot ctx-size / parallel
    assert arg("--parallel") == "2"
    assert arg("--threads") == "3" and arg("--threads-batch") == "3"
    assert cmd[-1] == "--metrics"  # extra args last, so they override


def test_invalid_settings_rejected():
    with pytest.raises(ValueError):
        NativeServer(Path("m.gguf"), model_alias="m", n_parallel=0, binary=Path("/x"))


def _fake_build(cache: Path, content: bytes = b"#!/bin/sh\nexit 0\n") -> Path:
    d = cache / "llama-server" / "0.0.0-0123456789ab"
    (d / "bin").mkdir(parents=True)
    binary = d / "bin" / "llama-server"
    binary.write_bytes(content)
    binary.chmod(0o755)
    (d / "SHA256SUMS").write_text(f"{hashlib.sha256(content).hexdigest()}  bin/llama-server\n")
    return binary


def test_find_llama_server_in_cache_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("ITS_MLE_LLAMA_SERVER", raising=False)
    monkeypatch.setenv("ITS_MLE_CACHE", str(tmp_path))
    assert find_llama_server() is None
    binary = _fake_build(tmp_path)
    assert find_llama_server() == binary
    binary.write_bytes(b"#!/bin/sh\nexit 1\n")  # no longer matches SHA256SUMS
    assert find_llama_server() is None
    monkeypatch.setenv("ITS_MLE_LLAMA_SERVER", str(binary))  # an explicit binary is not hashed
    assert find_llama_server() == binary.resolve()
    monkeypatch.setenv("ITS_MLE_LLAMA_SERVER", str(tmp_path / "missing"))
    assert find_llama_server() is None


def test_missing_binary_names_the_build_script(tmp_path, monkeypatch):
    monkeypatch.delenv("ITS_MLE_LLAMA_SERVER", raising=False)
    monkeypatch.setenv("ITS_MLE_CACHE", str(tmp_path))
    srv = NativeServer(tmp_path / "m.gguf", model_alias="m")
    assert srv.binary is None
    with pytest.raises(LlamaServerNotFound, match="scripts/build_llama_server.sh") as e:
        srv.start()
    assert isinstance(e.value, LocalModelError) and "\n" not in str(e.value)
    assert not srv.running


# --------------------------------------------------------------------------- with the binary


def _binary_or_skip() -> Path:
    binary = find_llama_server()
    if binary is None:
        pytest.skip("llama-server not built (run scripts/build_llama_server.sh; CI does not build it)")
    return binary


def _model_or_skip(download: bool = True) -> Path:
    try:
        return ensure_local_model("0.5b", download=download)
    except LocalModelError as e:
        pytest.skip(f"0.5B weights unavailable: {e}")


def _get(url: str) -> dict | list:
    with _OPENER.open(url, timeout=30) as r:
        assert r.status == 200
        return json.loads(r.read())


def _post(url: str, body: dict, timeout: float = 300) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with _OPENER.open(req, timeout=timeout) as r:
        return json.loads(r.read())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    binary = _binary_or_skip()
    model = _model_or_skip()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    srv = NativeServer(model, model_alias=ALIAS, n_ctx=2048, n_parallel=2, binary=binary, log_path=log)
    srv.start()
    print(f"\n[native-server] startup {srv.startup_s:.1f} s, {srv.base_url}, threads {srv.n_threads}")
    yield srv
    srv.stop()


@pytest.mark.integration
def test_two_slots_reported(server):
    assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
    assert ALIAS in [m["id"] for m in _get(f"{server.base_url}/models")["data"]]
    root = server.base_url.removesuffix("/v1")
    slots = _get(f"{root}/slots")
    assert len(slots) == 2 and all(s["n_ctx"] == 2048 for s in slots)  # n_ctx is per slot
    assert _get(f"{root}/props")["total_slots"] == 2


@pytest.mark.integration
def test_two_concurrent_chat_completions(server):
    def ask(seed: int) -> tuple[dict, float, float]:
        body = {
            "model": ALIAS,
            "messages": [{"role": "user", "content": "Write a Python one-liner that prints 42."}],
            "max_tokens": 16,
            "temperature": 0.7,
            "seed": seed,
        }
        t0 = time.monotonic()
        r = _post(f"{server.base_url}/chat/completions", body)
        return r, t0, time.monotonic()

    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(ask, [1, 2]))
    for r, _, _ in results:
        assert r["choices"][0]["message"]["content"].strip()
        assert r["usage"]["prompt_tokens"] > 0 and 0 < r["usage"]["completion_tokens"] <= 16
    (_, s1, e1), (_, s2, e2) = results
    print(f"\n[native-server] two concurrent requests: {e1 - s1:.2f} s and {e2 - s2:.2f} s")
    assert s2 < e1 and s1 < e2  # in flight together...
    # ...and served by both slots (sequential requests with one prompt would reuse one slot)
    launched = re.findall(r"launch_slot_: id\s+(\d+)", server.log_path.read_text(errors="replace"))
    assert {"0", "1"} <= set(launched), launched


@pytest.mark.integration
def test_stop_kills_process_and_ignores_llama_env(tmp_path, monkeypatch):
    binary = _binary_or_skip()
    model = _model_or_skip(download=False)
    # llama-server reads LLAMA_ARG_* and LLAMA_API_KEY: an API key would make every request
    # (including the readiness probe) fail with 401.
    monkeypatch.setenv("LLAMA_API_KEY", "secret")
    monkeypatch.setenv("LLAMA_ARG_PORT", "1")
    srv = NativeServer(model, model_alias="stop-test", n_ctx=512, binary=binary, log_path=tmp_path / "s.log")
    with srv:
        pid = srv.pid
        assert _alive(pid)
        assert "stop-test" in [m["id"] for m in _get(f"{srv.base_url}/models")["data"]]
    assert not srv.running and not _alive(pid)
    srv.stop()  # idempotent
    with pytest.raises(OSError):
        _OPENER.open(f"{srv.base_url}/models", timeout=2)


@pytest.mark.integration
def test_started_from_a_finished_thread_keeps_running(tmp_path):
    """PDEATHSIG follows the forking thread: a server started from a short-lived thread lives on."""
    binary = _binary_or_skip()
    model = _model_or_skip(download=False)
    srv = NativeServer(model, model_alias="t", n_ctx=512, binary=binary, log_path=tmp_path / "s.log")
    t = threading.Thread(target=srv.start)
    t.start()
    t.join()
    try:
        time.sleep(0.5)
        assert srv.running
        assert _get(f"{srv.base_url}/models")["data"]
    finally:
        srv.stop()


@pytest.mark.integration
def test_server_dies_with_killed_parent(tmp_path):
    """SIGKILL of the process that started the server (no atexit): the kernel kills the server."""
    binary = _binary_or_skip()
    model = _model_or_skip(download=False)
    code = (
        "import time\n"
        "from pathlib import Path\n"
        "from serving.native import NativeServer\n"
        f"s = NativeServer(Path({str(model)!r}), model_alias='orphan', n_ctx=512, binary=Path({str(binary)!r}))\n"
        "s.start()\n"
        "print(s.pid, s.base_url, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        pid = int(parent.stdout.readline().split()[0])
        assert _alive(pid)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid)
    finally:
        parent.kill()
        parent.wait()
        if pid and _alive(pid):  # never leave it behind, even when the test fails
            os.killpg(pid, 9)
