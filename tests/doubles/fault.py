"""An OpenAI-compatible endpoint on loopback that misbehaves on a script, for fault tests.

A `FaultServer` answers like `tests.doubles.stub` (the same deterministic answers, computed by the
stub's own functions) except where one of its rules matches a chat request; the first matching
rule's `Fault` decides what is sent instead:

    hang           wait `hang_s` (longer than the client's timeout), then answer normally
    status         HTTP `status` (429, 500, 503 ...) with an error body, `Retry-After` if given
    drop           headers and part of a normal body, then the socket is closed
    malformed      a 200 whose JSON body is cut in the middle
    no_code        a 200 completion whose answer is prose only
    truncated      a 200 completion cut inside its ```python block, finish_reason "length"
    empty_choices  a 200 completion with `"choices": []`
    oversized      a 200 completion whose answer is `size` characters long

A rule picks requests by chat *call* (a request and its retries: the openai SDK resends the same
body with an `x-stainless-retry-count` header), by request number, by `seed`, or by a predicate
on the body, at most `times` times. Every chat request is recorded (arrival time, call, attempt,
body, what was answered) so tests can count attempts and measure the backoff between them.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.doubles.stub import LoopbackServer, chat_completion, completion_body, model_list

FAULT_KINDS = ("hang", "status", "drop", "malformed", "no_code", "truncated", "empty_choices", "oversized")
PROSE_ONLY = ("I would fit a gradient-boosted model on the numeric columns, validate it on a held-out "
              "fifth of the training rows and write the test predictions in the sample's format.")


@dataclass(frozen=True)
class Fault:
    """What to answer instead of a normal completion."""

    kind: str
    status: int = 500  # status: the HTTP status
    retry_after: str | None = None  # status: the Retry-After header, when set
    hang_s: float = 30.0  # hang: seconds before answering (cut short when the server stops)
    keep: float = 0.5  # drop: the share of the body sent before the socket is closed
    size: int = 3_000_000  # oversized: characters in the answer
    content_length: bool = True  # oversized: announce the body's length (False: close-delimited)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(FAULT_KINDS)}")

    @property
    def label(self) -> str:
        """How the request log names this answer."""
        return f"status {self.status}" if self.kind == "status" else self.kind


@dataclass
class FaultRule:
    """Which chat requests get `fault`: every given selector must match (none given: all)."""

    fault: Fault
    calls: Collection[int] | None = None  # 1-based chat calls, each with all its retries
    requests: Collection[int] | None = None  # 1-based chat requests
    seed: int | None = None  # requests whose body has this `seed`
    when: Callable[[dict[str, Any]], bool] | None = None  # a predicate on the request body
    times: int | None = None  # fault at most this many requests
    used: int = field(default=0, init=False)

    def matches(self, index: int, call: int, body: dict[str, Any]) -> bool:
        """Whether the request (number `index`, of chat call `call`) gets this rule's fault."""
        return ((self.times is None or self.used < self.times)
                and (self.calls is None or call in self.calls)
                and (self.requests is None or index in self.requests)
                and (self.seed is None or body.get("seed") == self.seed)
                and (self.when is None or bool(self.when(body))))


@dataclass(frozen=True)
class Record:
    """One chat request as the server saw it."""

    index: int  # 1-based, in arrival order
    call: int  # 1-based chat call it belongs to
    attempt: int  # 0 for the first request of its call, then 1, 2 ... for the retries
    at: float  # time.monotonic() on arrival
    body: dict[str, Any]
    answer: str  # "ok" or the fault's label


class FaultServer(LoopbackServer):
    """The endpoint, served from a background thread (a context manager)."""

    def __init__(self, rules: list[FaultRule] | None = None, *, port: int = 0, model: str = "scripted-model",
                 exec_sleep: float = 0.0, supports_n: bool = True) -> None:
        self.rules = list(rules or [])
        self.model = model
        self.exec_sleep = exec_sleep
        self.supports_n = supports_n
        self.records: list[Record] = []
        self._call_of_body: dict[str, int] = {}
        self._calls = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listen(port, self._handler())

    def add(self, rule: FaultRule) -> FaultRule:
        """Add a rule (after those already there)."""
        with self._lock:
            self.rules.append(rule)
        return rule

    def call(self, k: int) -> list[Record]:
        """The requests of chat call `k` (1-based), first attempt first."""
        with self._lock:
            return [r for r in self.records if r.call == k]

    def calls_with(self, seed: int) -> list[Record]:
        """The requests whose body had `seed`."""
        with self._lock:
            return [r for r in self.records if r.body.get("seed") == seed]

    @staticmethod
    def gaps(records: list[Record]) -> list[float]:
        """Seconds between the arrivals of consecutive requests (e.g. a call's attempts)."""
        return [b.at - a.at for a, b in zip(records, records[1:], strict=False)]

    def _admit(self, raw: bytes, body: dict[str, Any], retry_header: str | None
               ) -> tuple[Record, Fault | None]:
        key = hashlib.sha256(raw).hexdigest()
        with self._lock:
            index = len(self.records) + 1
            previous = self._call_of_body.get(key)
            # the SDK numbers its retries; other clients: an identical body is taken as a retry
            is_retry = previous is not None and (retry_header is None or retry_header.strip() != "0")
            if is_retry:
                call = previous
            else:
                self._calls += 1
                call = self._calls
                self._call_of_body[key] = call
            attempt = sum(1 for r in self.records if r.call == call)
            rule = next((r for r in self.rules if r.matches(index, call, body)), None)
            if rule is not None:
                rule.used += 1
            fault = rule.fault if rule is not None else None
            record = Record(index=index, call=call, attempt=attempt, at=time.monotonic(), body=body,
                            answer=fault.label if fault else "ok")
            self.records.append(record)
        return record, fault

    def _normal(self, body: dict[str, Any]) -> dict[str, Any]:
        return chat_completion(body, model=self.model, exec_sleep=self.exec_sleep, supports_n=self.supports_n)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _send_bytes(self, code: int, data: bytes, headers: dict[str, str] | None = None, *,
                            length: bool = True) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                if length:
                    self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _send(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                self._send_bytes(code, json.dumps(body).encode(), headers)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, model_list(server.model))
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    self._send(400, {"error": {"message": "bad json"}})
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                _record, fault = server._admit(raw, body, self.headers.get("x-stainless-retry-count"))
                try:
                    if fault is None:
                        self._send(200, server._normal(body))
                    else:
                        self._fault(fault, body)
                except OSError:  # the client gave up (e.g. after its timeout) or the server stopped
                    self.close_connection = True

            def _fault(self, fault: Fault, body: dict[str, Any]) -> None:
                messages = body.get("messages") or []
                if fault.kind == "hang":
                    server._stopping.wait(fault.hang_s)
                    self._send(200, server._normal(body))
                elif fault.kind == "status":
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                    error = {"message": f"scripted fault: HTTP {fault.status}", "type": "server_error",
                             "code": fault.status}
                    self._send(fault.status, {"error": error}, headers)
                elif fault.kind == "drop":
                    data = json.dumps(server._normal(body)).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: int(len(data) * fault.keep)])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif fault.kind == "malformed":
                    data = json.dumps(server._normal(body)).encode()
                    self._send_bytes(200, data[: len(data) // 2])
                elif fault.kind == "no_code":
                    self._send(200, completion_body([PROSE_ONLY], messages, model=server.model))
                elif fault.kind == "truncated":
                    answer = server._normal(body)["choices"][0]["message"]["content"]
                    self._send(200, completion_body([truncate_mid_code(answer)], messages, model=server.model,
                                                    finish_reason="length"))
                elif fault.kind == "empty_choices":
                    self._send(200, completion_body([], messages, model=server.model))
                else:  # oversized
                    answer = server._normal(body)["choices"][0]["message"]["content"]
                    filler = "lorem ipsum dolor sit amet " * (fault.size // 27 + 1)
                    content = (answer + "\n" + filler)[: fault.size]
                    data = json.dumps(completion_body([content], messages, model=server.model)).encode()
                    self.close_connection = not fault.content_length
                    self._send_bytes(200, data, {} if fault.content_length else {"Connection": "close"},
                                     length=fault.content_length)

        return Handler

    def stop(self) -> None:
        """Stop serving (hanging requests are released)."""
        self._stopping.set()
        super().stop()


def truncate_mid_code(answer: str) -> str:
    """The answer cut inside its first code block, in the middle of a line, with no closing fence."""
    fence = answer.find("```")
    if fence < 0:
        return answer[: max(1, len(answer) // 2)]
    start = answer.find("\n", fence) + 1
    end = answer.find("```", start)
    code = answer[start:end if end > 0 else len(answer)]
    cut = len(code) // 2
    while cut < len(code) - 1 and (code[cut] == "\n" or code[cut - 1] == "\n"):
        cut += 1  # inside a line, not at its start or end
    return answer[:start] + code[:cut]
