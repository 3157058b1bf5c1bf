"""A scripted OpenAI-compatible endpoint on loopback, for tests and benchmarks without a model.

Answers are a pure function of the request's messages (hashed), so a run resumed after a crash
gets exactly the answers an uninterrupted run would have got. Script requests get one of a few
generic scripts (working, crashing, printing no metric); review, reflection, plan, judge and
metric-direction requests get the JSON they ask for. A request's `seed` and `n` choices vary
the answer deterministically; `supports_n=False` answers one choice, as llama.cpp does.
Run it with `python -m tests.doubles.stub --port 0`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

# A working script: copies the sample submission's layout, prints a hash-derived metric.
_GOOD = '''import glob, os
import pandas as pd
samples = sorted(glob.glob("input/**/*sample_submission*.csv", recursive=True))
os.makedirs("submission", exist_ok=True)
if samples:
    pd.read_csv(samples[0]).to_csv("submission/submission.csv", index=False)
else:
    pd.DataFrame({{"id": [0], "prediction": [0]}}).to_csv("submission/submission.csv", index=False)
{sleep}print("training done")
print("METRIC: {metric}")
'''
_CRASH = '''import pandas as pd
{sleep}raise ValueError("scripted failure {tag}")
'''
_NO_METRIC = '''import os
{sleep}print("finished but forgot the metric {tag}")
'''


_FORCED_OUTCOME = re.compile(r"stub-outcome: (working|crash|no-metric)")


def _digest(messages: list[dict[str, Any]], *salt: object) -> bytes:
    payload = [messages, *salt] if salt else messages
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).digest()


def scripted_answer(messages: list[dict[str, Any]], *, exec_sleep: float = 0.0, seed: int | None = None,
                    choice: int = 0) -> str:
    """The deterministic answer to one chat request (its `seed` and choice index vary it)."""
    text = "\n".join(str(m.get("content", "")) for m in messages)
    digest = _digest(messages) if seed is None and choice == 0 else _digest(messages, seed, choice)
    if "Your job: reflect" in text:
        ran = "It ran cleanly" in text
        target = "planner" if '"planner"' in text and digest[2] % 3 == 0 else "coder"
        return json.dumps({"accept": ran and digest[2] % 2 == 0, "target": target,
                           "critique": f"scripted critique {digest.hex()[:8]}"})
    if "Your job now: plan" in text:
        return json.dumps({"approach": f"scripted approach {digest.hex()[:6]}", "libraries": ["pandas"],
                           "feature_steps": ["read the data", "predict"], "validation_scheme": "holdout"})
    if "Your job: pick the most promising" in text:
        numbers = [int(x) for x in re.findall(r"^## Candidate (\d+)$", text, re.MULTILINE)]
        pick = numbers[digest[2] % len(numbers)] if numbers else 0
        return json.dumps({"best": pick, "reason": "scripted judge"})
    if "Your job: review" in text:
        is_bug = "exit code: 0" not in text or "METRIC line: missing" in text
        return json.dumps({"is_bug": is_bug, "summary": f"scripted review {digest.hex()[:8]}"})
    if "Your job: read the evaluation metric" in text:
        return json.dumps({"metric": "accuracy", "lower_is_better": False})
    sleep = f"import time; time.sleep({exec_sleep})\n" if exec_sleep else ""
    tag = digest.hex()[:8]
    # a task can pin the outcome of every script (tests that need a known outcome, whatever the
    # prompt's other content): "stub-outcome: working|crash|no-metric" anywhere in the prompt
    forced = _FORCED_OUTCOME.search(text)
    kind = {"working": 0, "crash": 2, "no-metric": 3}[forced.group(1)] if forced else digest[0] % 4
    if kind in (0, 1):
        metric = round(0.5 + digest[1] / 512, 6)
        code = _GOOD.format(sleep=sleep, metric=metric)
    elif kind == 2:
        code = _CRASH.format(sleep=sleep, tag=tag)
    else:
        code = _NO_METRIC.format(sleep=sleep, tag=tag)
    return f"Plan {tag}: a scripted solution.\n\n```python\n{code}```\n"


def completion_body(contents: list[str], messages: list[dict[str, Any]], *, model: str,
                    finish_reason: str = "stop") -> dict[str, Any]:
    """An OpenAI chat-completion response with one choice per content, and usage by characters."""
    prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
    usage = {"prompt_tokens": prompt_chars // 4, "completion_tokens": sum(len(c) for c in contents) // 4}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    choices = [{"index": i, "finish_reason": finish_reason, "message": {"role": "assistant", "content": c}}
               for i, c in enumerate(contents)]
    return {"id": "stub-" + _digest(messages).hex()[:12], "object": "chat.completion", "created": 0,
            "model": model, "choices": choices, "usage": usage}


def chat_completion(body: dict[str, Any], *, model: str, exec_sleep: float = 0.0,
                    supports_n: bool = True) -> dict[str, Any]:
    """The stub's deterministic response to one chat request body (`n` choices unless not supported)."""
    messages = body.get("messages") or []
    n = int(body.get("n") or 1) if supports_n else 1
    contents = [scripted_answer(messages, exec_sleep=exec_sleep, seed=body.get("seed"), choice=i)
                for i in range(max(1, n))]
    return completion_body(contents, messages, model=model)


def model_list(model: str) -> dict[str, Any]:
    """The `GET /v1/models` answer for one served model."""
    return {"object": "list", "data": [{"id": model, "object": "model"}]}


class LoopbackServer:
    """An HTTP server on loopback served from a daemon thread: the lifecycle (start, stop, context
    manager, base URL) that the scripted endpoints share. Subclasses call `_listen` with their
    request handler class."""

    httpd: ThreadingHTTPServer

    def _listen(self, port: int, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> Self:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class StubServer(LoopbackServer):
    """The endpoint, served from a background thread."""

    def __init__(self, port: int = 0, *, delay_s: float = 0.0, exec_sleep: float = 0.0,
                 model: str = "scripted-model", supports_n: bool = True) -> None:
        self.supports_n = supports_n  # False: ignore `n` and answer one choice, as llama.cpp does
        self.delay_s = delay_s
        self.exec_sleep = exec_sleep
        self.model = model
        self.requests = 0
        self.bodies: deque[dict[str, Any]] = deque(maxlen=200)  # the latest request bodies
        self._lock = threading.Lock()
        self._listen(port, self._handler())

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, model_list(server.model))
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._send(400, {"error": {"message": "bad json"}})
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                with server._lock:
                    server.requests += 1
                    server.bodies.append(body)
                if server.delay_s:
                    time.sleep(server.delay_s)
                self._send(200, chat_completion(body, model=server.model, exec_sleep=server.exec_sleep,
                                                supports_n=server.supports_n))

        return Handler


def main() -> None:
    """Serve until killed; prints the base URL first."""
    p = argparse.ArgumentParser(description="scripted OpenAI-compatible endpoint")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    p.add_argument("--exec-sleep", type=float, default=0.0, help="scripts sleep this long")
    args = p.parse_args()
    server = StubServer(args.port, delay_s=args.delay, exec_sleep=args.exec_sleep)
    print(server.base_url, flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
