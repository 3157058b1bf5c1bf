"""The embedded llama.cpp server with the real 0.5B model (needs llama-cpp-python + weights).

Run: python -m pytest -m integration tests/integration/test_local_server.py -s
(`-s` shows the measurements: startup time, decode tokens/s, cached tokens, json_schema.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from serving.local import LocalModelError, LocalServer, ensure_local_model

pytestmark = pytest.mark.integration

ALIAS = "qwen-0.5b-test"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str) -> dict:
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
    # A zombie is gone for our purposes (reaped by Popen.wait already, so this is rare).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (make setup)")
    try:
        model = ensure_local_model("0.5b")
    except LocalModelError as e:
        pytest.skip(f"0.5B weights unavailable: {e}")
    log = tmp_path_factory.mktemp("llama") / "server.log"
    srv = LocalServer(model, model_alias=ALIAS, n_ctx=4096, log_path=log)
    srv.start()
    print(f"\n[local-server] startup {srv.startup_s:.1f} s, {srv.base_url}, threads {srv.n_threads}")
    yield srv
    srv.stop()


def test_models_lists_alias(server):
    assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
    ids = [m["id"] for m in _get(f"{server.base_url}/models")["data"]]
    assert ALIAS in ids


def test_chat_completion_and_usage(server):
    body = {
        "model": ALIAS,
        "messages": [{"role": "user", "content": "Write a Python one-liner that prints 42."}],
        "max_tokens": 16,
        "temperature": 0,
    }
    t0 = time.monotonic()
    r = _post(f"{server.base_url}/chat/completions", body)
    dt = time.monotonic() - t0
    text = r["choices"][0]["message"]["content"]
    usage = r["usage"]
    assert isinstance(text, str) and text.strip()
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 16
    print(f"\n[local-server] 16-token answer in {dt:.2f} s: {text!r}; usage {usage}")


def test_decode_speed_and_cached_tokens(server):
    """Repeat a prompt: the server reuses the prefix; report decode speed and cached_tokens."""
    system = "You are a careful Python expert. " * 40  # a stable prefix of a few hundred tokens
    body = {
        "model": ALIAS,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "Count from 1 to 40, separated by spaces."},
        ],
        "max_tokens": 64,
        "temperature": 0,
    }
    url = f"{server.base_url}/chat/completions"
    t0 = time.monotonic()
    first = _post(url, body)
    t1 = time.monotonic()
    second = _post(url, body)
    t2 = time.monotonic()
    for r in (first, second):
        assert r["usage"]["completion_tokens"] > 0
    details = second["usage"].get("prompt_tokens_details")
    cached = (details or {}).get("cached_tokens")
    n_prompt = second["usage"]["prompt_tokens"]
    n_out = second["usage"]["completion_tokens"]
    # The repeat re-uses the KV cache for the whole prompt, so its time is almost all decode.
    print(
        f"\n[local-server] prompt {n_prompt} tok: first call {t1 - t0:.2f} s,"
        f" repeat {t2 - t1:.2f} s for {n_out} tokens -> ~{n_out / (t2 - t1):.1f} tok/s decode;"
        f" usage keys {sorted(second['usage'])}, prompt_tokens_details={details!r},"
        f" cached_tokens={cached!r}"
    )
    # llama-cpp-python 0.3.36 reuses the prefix (its verbose log says so) but does not report
    # it in usage; if a later version does, the number must be sensible.
    assert "prefix-match hit" in server.log_path.read_text(errors="replace")
    if cached is not None:
        assert 0 < cached <= n_prompt


SCHEMA = {
    "type": "object",
    "properties": {"is_bug": {"type": "boolean"}, "summary": {"type": "string"}},
    "required": ["is_bug", "summary"],
}
PROMPT = "The script crashed with KeyError: 'age'. Reply in JSON with is_bug and a one-sentence summary."


@pytest.mark.parametrize(
    "response_format",
    [
        # OpenAI's form (what ChatOpenAI's method="json_schema" sends): 0.3.36 rejects it with
        # HTTP 500 "Input should be 'text' or 'json_object'"; LocalServer translates it.
        {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": SCHEMA}},
        # llama-cpp-python's own form.
        {"type": "json_object", "schema": SCHEMA},
    ],
    ids=["json_schema", "json_object+schema"],
)
def test_structured_response_format(server, response_format):
    body = {
        "model": ALIAS,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 64,
        "temperature": 0,
        "response_format": response_format,
    }
    r = _post(f"{server.base_url}/chat/completions", body)
    content = r["choices"][0]["message"]["content"]
    print(f"\n[local-server] {response_format['type']} content: {content!r}")
    data = json.loads(content)
    assert isinstance(data["is_bug"], bool) and isinstance(data["summary"], str)


def test_chatopenai_structured_output(server):
    """The client the project uses: with_structured_output(method="json_schema")."""
    lc = pytest.importorskip("langchain_openai")
    from pydantic import BaseModel

    class Verdict(BaseModel):
        is_bug: bool
        summary: str

    llm = lc.ChatOpenAI(base_url=server.base_url, api_key="none", model=ALIAS, temperature=0, max_tokens=64)
    out = llm.with_structured_output(Verdict, method="json_schema").invoke(PROMPT)
    print(f"\n[local-server] ChatOpenAI json_schema -> {out!r}")
    assert isinstance(out, Verdict)


def test_stop_kills_process(tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (make setup)")
    try:
        model = ensure_local_model("0.5b", download=False)
    except LocalModelError as e:
        pytest.skip(f"0.5B weights unavailable: {e}")
    # Settings the server would read from the environment must not leak in (API_KEY would
    # make every request, including the readiness probe, fail with 401).
    monkeypatch.setenv("API_KEY", "secret")
    monkeypatch.setenv("PORT", "1")
    srv = LocalServer(model, model_alias="stop-test", n_ctx=512, log_path=tmp_path / "s.log")
    with srv:
        pid = srv.pid
        assert _alive(pid)
        assert ["stop-test"] == [m["id"] for m in _get(f"{srv.base_url}/models")["data"]]
    assert not srv.running and not _alive(pid)
    srv.stop()  # idempotent
    with pytest.raises(OSError):
        _OPENER.open(f"{srv.base_url}/models", timeout=2)


def test_server_dies_with_killed_parent(tmp_path):
    """SIGKILL of the process that started the server (no atexit): the server exits too."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (make setup)")
    try:
        model = ensure_local_model("0.5b", download=False)
    except LocalModelError as e:
        pytest.skip(f"0.5B weights unavailable: {e}")
    code = (
        "import sys, time\n"
        "from serving.local import LocalServer\n"
        f"s = LocalServer({str(model)!r}, model_alias='orphan', n_ctx=512).start()\n"
        "print(s.pid, s.base_url, flush=True)\n"
        "time.sleep(600)\n"
    )
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        pid = int(parent.stdout.readline().split()[0])
        assert _alive(pid)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(pid)
    finally:
        parent.kill()
        parent.wait()
        if pid and _alive(pid):  # never leave it behind, even when the test fails
            os.killpg(pid, 9)
