import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from serving.llm import (
    EndpointError,
    LLMCallError,
    LLMSettings,
    build_messages,
    complete,
    list_endpoint_models,
    make_chat_model,
    reply_from_message,
    split_reasoning,
)


class _Canned:
    """Loopback server answering every chat request with one canned body."""

    def __init__(self, body: dict, status: int = 200):
        canned = self
        self.body, self.status, self.requests = body, status, []

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self._reply({"data": [{"id": "m1"}, {"id": "m2"}]})

            def do_POST(self):
                canned.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self._reply(canned.body, canned.status)

            def _reply(self, body, status=200):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _completion(message: dict, usage: dict) -> dict:
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m1",
            "choices": [{"index": 0, "finish_reason": "stop", "message": message}], "usage": usage}


def test_split_reasoning_inline_and_unopened():
    assert split_reasoning("<think>hmm</think>\nAnswer") == ("Answer", "hmm")
    assert split_reasoning("hmm, thinking\n</think>\nAnswer") == ("Answer", "hmm, thinking")
    assert split_reasoning("plain") == ("plain", "")
    answer, reasoning = split_reasoning("<think>never closed ```python\nx=1```")
    assert answer == "" and "x=1" in reasoning


def test_vllm_reasoning_field_is_kept_and_counted():
    server = _Canned(_completion(
        {"role": "assistant", "content": "Final answer", "reasoning_content": "step by step " * 30},
        {"prompt_tokens": 120, "completion_tokens": 100, "total_tokens": 220,
         "prompt_tokens_details": {"cached_tokens": 96}},
    ))
    try:
        model = make_chat_model(LLMSettings(base_url=server.url, model="deepseek-r1-distill-qwen-7b"))
        reply = complete(model, [HumanMessage(content="hi")])
    finally:
        server.close()
    assert reply.text == "Final answer"
    assert reply.reasoning.startswith("step by step")
    assert reply.prompt_tokens == 120 and reply.completion_tokens == 100
    assert reply.cached_tokens == 96
    assert 80 < reply.reasoning_tokens < 100  # apportioned by characters
    sent = server.requests[0]
    assert sent["temperature"] == 0.6 and sent["top_p"] == 0.95  # R1 model-card defaults


def test_newer_vllm_reasoning_field_name():
    server = _Canned(_completion({"role": "assistant", "content": "A", "reasoning": "R"},
                                 {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}))
    try:
        reply = complete(make_chat_model(LLMSettings(base_url=server.url, model="m1")),
                         [HumanMessage(content="q")])
    finally:
        server.close()
    assert (reply.text, reply.reasoning) == ("A", "R")


def test_server_error_becomes_llm_call_error_after_bounded_retries():
    server = _Canned({"error": {"message": "overloaded"}}, status=500)
    try:
        model = make_chat_model(LLMSettings(base_url=server.url, model="m1", max_retries=1, timeout_s=5))
        with pytest.raises(LLMCallError):
            complete(model, [HumanMessage(content="q")])
    finally:
        server.close()
    assert len(server.requests) == 2  # one try + one retry, then give up


def test_r1_gets_no_system_prompt_and_stable_prefix_first():
    msgs = build_messages("STABLE", "VARYING", system_prompt=False)
    assert len(msgs) == 1 and isinstance(msgs[0], HumanMessage)
    assert msgs[0].content.startswith("STABLE") and msgs[0].content.endswith("VARYING")
    msgs = build_messages("STABLE", "VARYING", system_prompt=True)
    assert isinstance(msgs[0], SystemMessage) and msgs[0].content == "STABLE"


def test_reply_from_message_inline_think():
    msg = AIMessage(content="<think>why</think>```python\nprint(1)\n```",
                    usage_metadata={"input_tokens": 5, "output_tokens": 10, "total_tokens": 15})
    reply = reply_from_message(msg, 1.5)
    assert "<think>" not in reply.text and reply.reasoning == "why"
    assert reply.seconds == 1.5 and reply.reasoning_tokens > 0


def test_list_models_and_unreachable_endpoint():
    server = _Canned({})
    try:
        assert list_endpoint_models(server.url) == ["m1", "m2"]
    finally:
        server.close()
    with pytest.raises(EndpointError, match="cannot reach"):
        list_endpoint_models("http://127.0.0.1:9/v1", timeout_s=2)


def test_generation_cap_is_sent_as_max_tokens():
    """llama-cpp-python's server ignores `max_completion_tokens` (what ChatOpenAI sends)."""
    from serving.llm import complete_choices
    from tests.doubles.stub import StubServer

    with StubServer() as server:
        llm = make_chat_model(LLMSettings(base_url=server.base_url, model="scripted-model", max_tokens=321))
        complete(llm, [HumanMessage(content="hi")])
        complete(llm, [HumanMessage(content="hi")], max_tokens=77)
        replies = complete_choices(llm, [HumanMessage(content="write a script " * 10)], 3, seed=5)
    first, second, third = list(server.bodies)
    assert first["max_tokens"] == 321 and "max_completion_tokens" not in first
    assert second["max_tokens"] == 77
    assert third["n"] == 3 and third["seed"] == 5 and third["max_tokens"] == 321
    assert len(replies) == 3 and len({r.text for r in replies}) == 3
    assert replies[0].prompt_tokens > 0 and replies[1].prompt_tokens == replies[1].completion_tokens == 0
