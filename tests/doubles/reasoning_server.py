"""An emulated reasoning model behind an OpenAI-compatible endpoint (vLLM serving an R1 distill).

The *answer* of every request is the scripted answer of `tests.doubles.stub` (scripts for coding
prompts, the requested JSON for review, reflection, plan, judge and metric-direction prompts);
before it the emulator "thinks" for `think_tokens` tokens, and it delivers the thinking the way
one of three server set-ups does:

- ``field``: vLLM with ``--reasoning-parser``: the thinking in ``message.reasoning`` (or
  ``reasoning_content``, per `reasoning_field`), the answer in ``content``. Cut mid-thought, the
  content is null.
- ``inline``: no reasoning parser, a template that lets the model open the tag itself:
  ``<think>...</think>answer`` in ``content``.
- ``open``: no reasoning parser, the R1 chat template opened ``<think>`` in the prompt: the
  content is ``thinking...</think>answer``, with no opening tag.

Token accounting: a token is one whitespace-separated word (of the prompt: of every message's
content; of the output: of the thinking and the answer; the think tags are free, as the special
tokens they are). The thinking is emitted first, then the answer; the combined output is cut at
``max_tokens`` or ``max_completion_tokens`` (whichever the request sends; without either, at
``max_model_len`` minus the prompt), with ``finish_reason: "length"`` when cut and ``"stop"``
otherwise. A request whose prompt plus cap exceeds ``max_model_len`` is refused with HTTP 400,
as vLLM refuses it. Every thinking word starts with `THINK_MARKER`, so a test can tell whether
any thinking leaked into code or parsed JSON.

``n`` choices each think on their own; ``usage`` covers the whole response: prompt and completion
tokens, ``completion_tokens_details.reasoning_tokens`` and ``prompt_tokens_details.cached_tokens``
(a prefix cache: the longest common word prefix with any earlier prompt, rounded down to a block
of 16 tokens, as vLLM's automatic prefix caching counts whole blocks). With ``response_format``
json_schema the answer after the thinking is the bare JSON (vLLM constrains the content only,
not the thinking); without it, a JSON answer comes wrapped in a sentence and a fence, as a chat
model writes it.

Run it with ``python -m tests.doubles.reasoning_server --port P --model NAME --max-model-len L
--think-tokens N --delivery field|inline|open``: it prints nothing and serves until killed.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.doubles.stub import LoopbackServer, scripted_answer

THINK_MARKER = "zthink"
DELIVERIES = ("field", "inline", "open")
REASONING_FIELDS = ("reasoning", "reasoning_content")
CACHE_BLOCK = 16
_KEPT_PROMPTS = 256  # earlier prompts the prefix cache compares against
_WORD_RE = re.compile(r"\S+\s*")


def words_of(text: str) -> list[str]:
    """The text's tokens: whitespace-separated words."""
    return text.split()


def prompt_words(messages: list[dict[str, Any]]) -> list[str]:
    """The prompt's tokens: the words of every message's content, in order."""
    out: list[str] = []
    for m in messages:
        content = m.get("content", "")
        if isinstance(content, list):  # OpenAI content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        out += words_of(str(content or ""))
    return out


def thinking_text(tokens: int, choice: int = 0) -> str:
    """`tokens` words of thinking, each starting with THINK_MARKER (numbered per choice)."""
    return " ".join(f"{THINK_MARKER}{choice}.{i}" for i in range(tokens))


def head_words(text: str, count: int) -> str:
    """The first `count` words of `text`, its own whitespace kept between them."""
    if count <= 0:
        return ""
    pieces = _WORD_RE.findall(text.lstrip())
    return "".join(pieces[:count]).rstrip() if count < len(pieces) else text


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


class ContextExceeded(Exception):
    """The request does not fit in the model's context (HTTP 400)."""


class ReasoningServer(LoopbackServer):
    """The emulated endpoint, served from a daemon thread on loopback."""

    def __init__(self, think_tokens: int = 2000, delivery: str = "field",
                 model: str = "DeepSeek-R1-Distill-Qwen-7B", max_model_len: int = 32768,
                 reasoning_field: str = "reasoning", *, port: int = 0) -> None:
        if delivery not in DELIVERIES:
            raise ValueError(f"delivery must be one of {', '.join(DELIVERIES)}, not {delivery!r}")
        if reasoning_field not in REASONING_FIELDS:
            raise ValueError(f"reasoning_field must be one of {', '.join(REASONING_FIELDS)}")
        if think_tokens < 0 or max_model_len < 1:
            raise ValueError("think_tokens must be >= 0 and max_model_len >= 1")
        self.think_tokens = think_tokens
        self.delivery = delivery
        self.model = model
        self.max_model_len = max_model_len
        self.reasoning_field = reasoning_field
        self.requests: list[dict[str, Any]] = []  # every chat request body received, in order
        self._prompts: list[list[str]] = []
        self._lock = threading.Lock()
        self._listen(port, self._handler())

    # ------------------------------------------------------------------ the model

    def model_list(self) -> dict[str, Any]:
        """The `GET /v1/models` answer (vLLM reports the context length)."""
        return {"object": "list",
                "data": [{"id": self.model, "object": "model", "max_model_len": self.max_model_len}]}

    def _cached(self, prompt: list[str]) -> int:
        """Prompt tokens found in the prefix cache; remembers the prompt for later requests."""
        with self._lock:
            best = 0
            for earlier in self._prompts:
                k, limit = 0, min(len(earlier), len(prompt))
                while k < limit and earlier[k] == prompt[k]:
                    k += 1
                best = max(best, k)
            self._prompts.append(prompt)
            del self._prompts[:-_KEPT_PROMPTS]
        return best // CACHE_BLOCK * CACHE_BLOCK

    def _choice(self, index: int, answer: str, cap: int) -> tuple[dict[str, Any], int, int]:
        """One choice cut at `cap` tokens: (choice, completion tokens, reasoning tokens)."""
        think_words = min(self.think_tokens, cap)
        thinking = thinking_text(think_words, index)
        answer_words = len(words_of(answer))
        room = cap - think_words
        cut = self.think_tokens + answer_words > cap
        said = head_words(answer, room) if room < answer_words else answer
        thought_done = self.think_tokens <= cap  # the thinking ended (its closing tag emitted)
        message: dict[str, Any] = {"role": "assistant"}
        if self.delivery == "field":
            message["content"] = said if thought_done else None
            if thinking:
                message[self.reasoning_field] = thinking
        elif self.delivery == "inline":
            message["content"] = f"<think>{thinking}" + (f"</think>{said}" if thought_done else "")
        else:  # open: the template wrote <think>
            message["content"] = thinking + (f"</think>{said}" if thought_done else "")
        emitted = think_words + min(max(room, 0), answer_words)
        choice = {"index": index, "finish_reason": "length" if cut else "stop", "message": message,
                  "logprobs": None}
        return choice, emitted, think_words

    def respond(self, body: dict[str, Any]) -> dict[str, Any]:
        """The response to one chat request body; raises ContextExceeded for a 400."""
        messages = body.get("messages") or []
        prompt = prompt_words(messages)
        sent = body.get("max_tokens", body.get("max_completion_tokens"))
        if len(prompt) >= self.max_model_len or (sent is not None and len(prompt) + int(sent) > self.max_model_len):
            asked = len(prompt) + int(sent or 0)
            raise ContextExceeded(
                f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                f"requested {asked} tokens ({len(prompt)} in the messages, {int(sent or 0)} in the "
                "completion). Please reduce the length of the messages or completion.")
        cap = int(sent) if sent is not None else self.max_model_len - len(prompt)
        structured = (body.get("response_format") or {}).get("type") == "json_schema"
        n = max(1, int(body.get("n") or 1))
        choices, completion, reasoning = [], 0, 0
        for i in range(n):
            answer = scripted_answer(messages, seed=body.get("seed"), choice=i)
            if not structured and _is_json(answer):
                answer = f"Here is the JSON you asked for:\n```json\n{answer}\n```"
            choice, emitted, thought = self._choice(i, answer, cap)
            choices.append(choice)
            completion += emitted
            reasoning += thought
        usage = {"prompt_tokens": len(prompt), "completion_tokens": completion,
                 "total_tokens": len(prompt) + completion,
                 "prompt_tokens_details": {"cached_tokens": self._cached(prompt)},
                 "completion_tokens_details": {"reasoning_tokens": reasoning}}
        return {"id": f"emul-{len(self.requests)}", "object": "chat.completion", "created": 0,
                "model": self.model, "choices": choices, "usage": usage}

    # ------------------------------------------------------------------ HTTP

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
                    self._send(200, server.model_list())
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._send(400, {"error": {"message": "bad json", "type": "BadRequestError"}})
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                with server._lock:
                    server.requests.append(body)
                try:
                    self._send(200, server.respond(body))
                except ContextExceeded as exc:
                    self._send(400, {"object": "error", "message": str(exc), "type": "BadRequestError",
                                     "param": None, "code": 400})

        return Handler


def main(argv: list[str] | None = None) -> None:
    """Serve until killed (prints nothing)."""
    p = argparse.ArgumentParser(prog="python -m tests.doubles.reasoning_server",
                                description="emulated reasoning model (OpenAI-compatible)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default="DeepSeek-R1-Distill-Qwen-7B")
    p.add_argument("--max-model-len", type=int, default=32768)
    p.add_argument("--think-tokens", type=int, default=2000)
    p.add_argument("--delivery", choices=DELIVERIES, default="field")
    p.add_argument("--reasoning-field", choices=REASONING_FIELDS, default="reasoning")
    args = p.parse_args(argv)
    server = ReasoningServer(args.think_tokens, args.delivery, args.model, args.max_model_len,
                             args.reasoning_field, port=args.port)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    main()
