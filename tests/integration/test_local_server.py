"""The embedded llama.cpp server with the real 0.5B model (needs llama-cpp-python + weights).

Run: python -m pytest -m integration tests/integration/test_local_server.py -s
(`-s` shows the measurements: startup time, decode tokens/s, cached tokens, json_schema.)
"""

from __future__ import annotations

import json
import os
import time
import urllib.request

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
    """Repeat a prompt: report decode speed and whether usage carries cached_tokens."""
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
        f"\n[local-server] prompt {n_prompt} tok: first call {t1 - t0:.2f} s, repeat {t2 - t1:.2f} s"
        f" for {n_out} tokens -> ~{n_out / (t2 - t1):.1f} tok/s decode;"
        f" usage keys {sorted(second['usage'])}, prompt_tokens_details={details!r},"
        f" cached_tokens={cached!r}"
    )
    assert (t2 - t1) < (t1 - t0)  # prefix reuse makes the repeat cheaper


def test_json_schema_response_format(server):
    schema = {
        "type": "object",
        "properties": {"is_bug": {"type": "boolean"}, "summary": {"type": "string"}},
        "required": ["is_bug", "summary"],
    }
    body = {
        "model": ALIAS,
        "messages": [
            {
                "role": "user",
                "content": "The script crashed with KeyError: 'age'. Reply in JSON: "
                "is_bug and a one-sentence summary.",
            }
        ],
        "max_tokens": 64,
        "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    r = _post(f"{server.base_url}/chat/completions", body)
    content = r["choices"][0]["message"]["content"]
    print(f"\n[local-server] json_schema content: {content!r}")
    data = json.loads(content)
    assert isinstance(data["is_bug"], bool) and isinstance(data["summary"], str)


def test_stop_kills_process(tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (make setup)")
    try:
        model = ensure_local_model("0.5b", download=False)
    except LocalModelError as e:
        pytest.skip(f"0.5B weights unavailable: {e}")
    srv = LocalServer(model, model_alias="stop-test", n_ctx=512, log_path=tmp_path / "s.log")
    with srv:
        pid = srv.pid
        assert _alive(pid)
        assert ["stop-test"] == [m["id"] for m in _get(f"{srv.base_url}/models")["data"]]
    assert not srv.running and not _alive(pid)
    srv.stop()  # idempotent
    with pytest.raises(OSError):
        _OPENER.open(f"{srv.base_url}/models", timeout=2)
