"""Reasoning models: the emulated R1 endpoint, generation caps with reasoning budgets, answers cut
at the cap (retried once, else recorded and counted), and whole runs of every strategy on it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from langchain_core.messages import HumanMessage

from nodes.operators import candidate_from_reply
from nodes.review import Verdict
from nodes.structured import StructuredOutputSupport, ask_json
from nodes.usage import Usage
from serving.llm import (
    CONTEXT_MARGIN,
    DEFAULT_REASONING_BUDGET,
    LLMSettings,
    TokenBudget,
    complete,
    endpoint_context_length,
    make_chat_model,
    token_budget,
)
from tests.conftest import ROOT, make_toy_task
from tests.doubles.reasoning_server import CACHE_BLOCK, THINK_MARKER, ReasoningServer

R1 = "DeepSeek-R1-Distill-Qwen-7B"
REVIEW_PROMPT = "# Your job: review a script's run\n- exit code: 0\n- METRIC line: 0.5\n"
CODE_PROMPT = "# Your job: write a first solution\nstub-outcome: working\n"


def post(server: ReasoningServer, **body) -> httpx.Response:
    body.setdefault("messages", [{"role": "user", "content": REVIEW_PROMPT}])
    return httpx.post(server.base_url + "/chat/completions", json=body, timeout=10)


# ----------------------------------------------------------------------------- the emulator


@pytest.mark.parametrize("delivery", ["field", "inline", "open"])
@pytest.mark.parametrize("cap_key", ["max_tokens", "max_completion_tokens"])
def test_emulator_cuts_at_the_cap_in_every_delivery(delivery, cap_key):
    with ReasoningServer(think_tokens=50, delivery=delivery) as server:
        cut = post(server, **{cap_key: 20}).json()
        whole = post(server, **{cap_key: 500}).json()
    (choice,) = cut["choices"]
    assert choice["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 20
    message = choice["message"]
    thinking = " ".join(f"{THINK_MARKER}0.{i}" for i in range(20))
    if delivery == "field":
        assert message["content"] is None and message["reasoning"] == thinking
    elif delivery == "inline":
        assert message["content"] == f"<think>{thinking}"
    else:  # the template opened <think>: no tag at all before the thought ends
        assert message["content"] == thinking
    done = whole["choices"][0]
    assert done["finish_reason"] == "stop"
    content = done["message"]["content"]
    assert content.endswith("```") and '"is_bug": false' in content  # plain request: JSON in a fence
    assert ("</think>" in content) == (delivery != "field")
    assert whole["usage"]["completion_tokens_details"]["reasoning_tokens"] == 50


def test_emulator_cut_inside_the_answer_keeps_its_first_words():
    with ReasoningServer(think_tokens=5, delivery="field") as server:
        body = post(server, max_tokens=8, response_format={"type": "json_schema"}).json()
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == '{"is_bug": false, "summary":'  # 3 words after 5 of thinking
    assert body["usage"]["completion_tokens"] == 8


def test_emulator_n_choices_usage_and_prefix_cache():
    with ReasoningServer(think_tokens=30, reasoning_field="reasoning_content") as server:
        long_prompt = " ".join(f"w{i}" for i in range(100))
        first = post(server, n=3, messages=[{"role": "user", "content": long_prompt + " " + REVIEW_PROMPT}]).json()
        second = post(server, messages=[{"role": "user", "content": long_prompt + " other ending"}]).json()
        assert len(server.requests) == 2 and server.requests[0]["n"] == 3
    thoughts = [c["message"]["reasoning_content"] for c in first["choices"]]
    assert len(set(thoughts)) == 3 and all(len(t.split()) == 30 for t in thoughts)
    answer_words = sum(len(c["message"]["content"].split()) for c in first["choices"])
    usage = first["usage"]
    assert usage["completion_tokens"] == 90 + answer_words
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 90
    assert usage["prompt_tokens"] == 100 + len(REVIEW_PROMPT.split())
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    # 100 common words with the first prompt, counted in whole blocks
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == 100 // CACHE_BLOCK * CACHE_BLOCK


def test_emulator_refuses_a_request_over_its_context_and_lists_its_length():
    with ReasoningServer(think_tokens=10, max_model_len=100) as server:
        refused = post(server, max_tokens=95)
        fits = post(server, max_tokens=80)
        models = httpx.get(server.base_url + "/models").json()
        default_cap = post(server).json()
    assert refused.status_code == 400
    assert "This model's maximum context length is 100 tokens" in refused.json()["message"]
    assert fits.status_code == 200
    assert models["data"] == [{"id": R1, "object": "model", "max_model_len": 100}]
    prompt = len(REVIEW_PROMPT.split())  # no cap sent: the context's rest is the cap
    assert default_cap["choices"][0]["finish_reason"] == "stop" and default_cap["usage"]["prompt_tokens"] == prompt


def test_emulator_json_schema_answer_is_the_bare_json_after_the_thinking():
    with ReasoningServer(think_tokens=40, delivery="inline") as server:
        body = post(server, response_format={"type": "json_schema", "json_schema": {"name": "verdict"}}).json()
    content = body["choices"][0]["message"]["content"]
    thinking, answer = content.split("</think>")
    assert thinking.startswith(f"<think>{THINK_MARKER}")
    assert json.loads(answer) == {"is_bug": False, "summary": json.loads(answer)["summary"]}


def test_emulator_command_line_serves_until_killed():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.doubles.reasoning_server", "--port", str(port), "--model", "m1",
         "--max-model-len", "4096", "--think-tokens", "7", "--delivery", "open"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).json()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("the emulator did not start")
        assert models["data"][0] == {"id": "m1", "object": "model", "max_model_len": 4096}
        body = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                          json={"messages": [{"role": "user", "content": "hi"}]}).json()
        assert body["choices"][0]["message"]["content"].count(THINK_MARKER) == 7
    finally:
        proc.kill()
        out, err = proc.communicate(timeout=10)
    assert out == b"" and err == b""  # prints nothing


# ----------------------------------------------------------------------------- caps and cut answers


def client(server: ReasoningServer, **settings):
    settings.setdefault("context_len", endpoint_context_length(server.base_url, server.model))
    return make_chat_model(LLMSettings(base_url=server.base_url, model=server.model, **settings))


def test_caps_add_the_reasoning_budget_and_stay_inside_the_context():
    thinker = TokenBudget(model=R1, context_len=32768)
    assert thinker.reasoning and thinker.thinking_tokens() == DEFAULT_REASONING_BUDGET
    assert thinker.cap(400, prompt_chars=3000) == 400 + DEFAULT_REASONING_BUDGET
    # 90,000 characters are counted as 30,000 tokens: the cap is what the context leaves
    room = 32768 - 30_000 - CONTEXT_MARGIN
    assert thinker.cap(4096, prompt_chars=90_000) == room
    assert thinker.larger(1000, prompt_chars=90_000) == 2000
    assert thinker.larger(2000, prompt_chars=90_000) == room
    assert thinker.larger(room, prompt_chars=90_000) is None
    assert thinker.cap(400, prompt_chars=200_000) == 256  # never below MIN_CAP: the server decides
    plain = TokenBudget(model="qwen2.5-coder-1.5b-instruct-q4_k_m")  # the embedded model: caps unchanged
    assert not plain.reasoning and plain.cap(4096, 10_000) == 4096 and plain.cap(400, 10_000) == 400
    assert TokenBudget(model=R1, reasoning_budget=0).cap(400, 100) == 400
    assert TokenBudget(model="any", reasoning_budget=1000).cap(400, 100) == 1400


def test_embedded_model_requests_keep_their_caps(tmp_path):
    from tests.doubles.stub import StubServer

    with StubServer(model="qwen2.5-coder-1.5b-instruct-q4_k_m") as server:
        llm = make_chat_model(LLMSettings(base_url=server.base_url, model=server.model,
                                          context_len=endpoint_context_length(server.base_url, server.model)))
        complete(llm, [HumanMessage(content=CODE_PROMPT)])
        ask_json(llm, "S", REVIEW_PROMPT, Verdict, StructuredOutputSupport(), name="verdict", max_tokens=400)
        assert [b["max_tokens"] for b in server.bodies] == [4096, 400]
    assert token_budget(llm).context_len is None  # the stub (like llama.cpp) reports no context length


@pytest.mark.parametrize("delivery", ["field", "inline", "open"])
def test_a_thought_cut_short_is_never_read_as_the_answer(delivery):
    with ReasoningServer(think_tokens=3000, delivery=delivery) as server:
        llm = client(server)
        reply = complete(llm, [HumanMessage(content=CODE_PROMPT)], max_tokens=500)
        usage = Usage()
        verdict, usage, error = ask_json(llm, "S", REVIEW_PROMPT, Verdict, StructuredOutputSupport(),
                                         name="verdict", max_tokens=400, system_prompt=False)
    assert reply.finish_reason == "length" and reply.text == ""
    assert reply.reasoning.startswith(THINK_MARKER) and len(reply.reasoning.split()) == 500
    cand = candidate_from_reply(reply, Usage())
    assert cand.code == "" and cand.llm_error == "answer cut off at the token limit before any code"
    # with the default budget (400 + 8192) the 3,000-token thought fits: a real verdict
    assert error is None and verdict.summary.startswith("scripted review")
    assert THINK_MARKER not in verdict.summary and usage.calls[0].reasoning_tokens == 3000


@pytest.mark.parametrize("delivery", ["field", "inline"])
def test_a_model_that_thinks_is_detected_from_its_first_answer(delivery):
    lines = []
    with ReasoningServer(think_tokens=600, delivery=delivery, model="my-served-model") as server:
        llm = make_chat_model(LLMSettings(base_url=server.base_url, model=server.model,
                                          context_len=server.max_model_len), on_detect=lines.append)
        assert not token_budget(llm).reasoning  # nothing in the name says so
        first = complete(llm, [HumanMessage(content=CODE_PROMPT)])  # 4096: room for this thought
        verdict, usage, error = ask_json(llm, "S", REVIEW_PROMPT, Verdict, StructuredOutputSupport(),
                                         name="verdict", max_tokens=400)
        sent = [b["max_tokens"] for b in server.requests]
    assert first.finish_reason == "stop" and "```python" in first.text and THINK_MARKER not in first.text
    assert token_budget(llm).reasoning and len(lines) == 1 and "reasoning budget of 8192" in lines[0]
    assert sent == [4096, 400 + DEFAULT_REASONING_BUDGET]
    assert error is None and verdict is not None and [c.cut for c in usage.calls] == [False]


def test_a_cut_json_answer_is_asked_again_once_with_twice_the_cap():
    with ReasoningServer(think_tokens=500) as server:  # 500 > 400, 500 + the JSON < 800
        llm = client(server, reasoning_budget=0)  # the old fixed caps
        support = StructuredOutputSupport()
        verdict, usage, error = ask_json(llm, "S", REVIEW_PROMPT, Verdict, support, name="verdict",
                                         max_tokens=400)
        sent = [b["max_tokens"] for b in server.requests]
    assert sent == [400, 800] and all("response_format" in b for b in server.requests)
    assert error is None and verdict.summary.startswith("scripted review")
    assert [(c.finish_reason, c.retried, c.cut) for c in usage.calls] == [("length", True, False),
                                                                          ("stop", False, False)]
    assert support.supported is True  # a cut answer says nothing against structured output
    assert usage.reasoning_tokens == 400 + 500


def test_a_json_answer_still_cut_is_recorded_as_cut():
    with ReasoningServer(think_tokens=2000) as server:
        llm = client(server, reasoning_budget=0)
        verdict, usage, error = ask_json(llm, "S", REVIEW_PROMPT, Verdict, StructuredOutputSupport(),
                                         name="verdict", max_tokens=400)
    assert verdict is None
    assert error == ("the verdict answer was cut at the token cap (800 tokens while still thinking, "
                     "after a first answer cut at 400)")
    assert [(c.max_tokens, c.retried, c.cut, c.answers_cut) for c in usage.calls] == [
        (400, True, False, 0), (800, False, True, 1)]


def test_no_retry_when_the_context_leaves_no_room():
    with ReasoningServer(think_tokens=2000, max_model_len=1200) as server:
        llm = client(server)
        verdict, usage, error = ask_json(llm, "S", REVIEW_PROMPT, Verdict, StructuredOutputSupport(),
                                         name="verdict", max_tokens=400)
        sent = [b["max_tokens"] for b in server.requests]
    room = 1200 - -(-len("S" + REVIEW_PROMPT) // 3) - CONTEXT_MARGIN  # system + user message
    assert sent == [room]  # bounded by the context, no HTTP 400 and no pointless retry
    assert verdict is None and "the context leaves no room for a larger cap" in error
    assert [c.cut for c in usage.calls] == [True] and usage.calls[0].error is None


# ----------------------------------------------------------------------------- whole runs


def run_cli(server: ReasoningServer, task: Path, runs: Path, strategy: str, *extra: str) -> tuple[dict, dict]:
    from graphs.run import main

    rc = main(["--task", str(task), "--strategy", strategy, "--steps", "2", "--samples", "2", "--rounds", "2",
               "--base-url", server.base_url, "--run-dir", str(runs), "--run-id", "r", "--exec-timeout", "20",
               "--sandbox", "plain", *extra])
    assert rc == 0
    return (json.loads((runs / "r" / "tree.json").read_text()),
            json.loads((runs / "r" / "summary.json").read_text()))


def forced(task: Path, outcome: str) -> Path:
    """Pin every script's outcome (the stub's rule), so the reflector and judge always get asked."""
    desc = task / "description.md"
    desc.write_text(desc.read_text() + f"\nstub-outcome: {outcome}\n")
    return task


@pytest.mark.parametrize(("strategy", "delivery"), [
    ("aide", "field"), ("aide", "open"), ("self_consistency", "field"), ("self_reflection", "inline"),
    ("planner_coder", "field"),
])
def test_every_strategy_runs_a_thinking_model_without_cut_answers(tmp_path, toy_task, strategy, delivery, capsys):
    task = toy_task if strategy == "aide" else forced(toy_task, "crash")
    if delivery == "open":  # a plain folder: the model is also asked which way the metric goes
        task = make_toy_task(tmp_path / "plain", with_config=False)
    with ReasoningServer(think_tokens=2000, delivery=delivery) as server:
        tree, summary = run_cli(server, task, tmp_path / "runs", strategy)
        requests = server.requests
    assert summary["answers_cut"] == 0 and summary["answers_cut_retried"] == 0
    assert summary["reasoning_tokens"] >= 2000 * summary["llm_calls"]
    assert all(b["max_tokens"] >= 2000 + 200 for b in requests)  # every role got thinking room
    for node in tree["nodes"]:
        assert node["reasoning_tokens"] > 0
        assert all(c["reasoning_tokens"] >= 2000 and not c["cut"] and c["error"] is None for c in node["calls"])
        assert THINK_MARKER not in node["code"] + node["plan"] + node["review"]
        assert THINK_MARKER not in json.dumps(node["extra"])
        assert node["reasoning"].startswith(THINK_MARKER)  # the coder's thinking is kept apart
        if any(c["role"] == "reviewer" for c in node["calls"]):
            assert node["review"].startswith("scripted review")  # the model's verdict, not the facts
        details = node["extra"].get("strategy", {})
        if strategy == "self_consistency":
            assert details["rule"].endswith("; LLM judge")  # every script crashed: the judge decided
            assert [c["role"] for c in node["calls"]].count("judge") == 1
        if strategy in ("self_reflection", "planner_coder"):
            critiques = [r for r in details["rounds"] if "critique" in r]
            assert critiques and all(r["critique"].startswith("scripted critique") and not r["fallback"]
                                     for r in critiques)
        if strategy == "planner_coder":
            assert details["plan_fallbacks"] == []
    if strategy == "planner_coder":  # the coder implemented the planner's own plan
        code_prompts = [m["content"] for b in requests for m in b["messages"] if "# Implement this plan" in m["content"]]
        assert code_prompts and all("Approach: scripted approach" in p and THINK_MARKER not in p
                                    for p in code_prompts)
    if delivery == "open":
        assert "metric: accuracy, higher is better (asked the model)" in capsys.readouterr().out


def test_old_small_caps_get_cut_answers_retried(tmp_path, toy_task):
    with ReasoningServer(think_tokens=500) as server:  # the verdict's 400 is too small, 800 is enough
        tree, summary = run_cli(server, forced(toy_task, "working"), tmp_path / "runs", "aide",
                                "--reasoning-budget", "0")
    assert summary["answers_cut"] == 0 and summary["answers_cut_retried"] == 2
    assert summary["cost_by_role"]["reviewer"]["retried"] == 2
    for node in tree["nodes"]:
        reviews = [(c["max_tokens"], c["finish_reason"]) for c in node["calls"] if c["role"] == "reviewer"]
        assert reviews == [(400, "length"), (800, "stop")]
        assert node["review"].startswith("scripted review") and node["llm_error"] is None


def test_a_context_too_small_records_and_counts_the_cut_answers(tmp_path, toy_task):
    with ReasoningServer(think_tokens=3000, max_model_len=2600) as server:
        tree, summary = run_cli(server, toy_task, tmp_path / "runs", "planner_coder", "--steps", "1",
                                "--rounds", "1")
    (node,) = tree["nodes"]
    roles = {c["role"]: c for c in node["calls"]}
    assert roles["planner"]["cut"] and roles["coder"]["cut"]  # both thoughts outgrew the context
    assert all(c["error"] is None for c in node["calls"])  # caps kept inside it: no HTTP 400
    assert summary["answers_cut"] == 2 and summary["cost_by_role"]["planner"]["cut"] == 1
    (fallback,) = node["extra"]["strategy"]["plan_fallbacks"]
    assert fallback.startswith("planner fallback") and "cut at the token cap" in fallback
    assert node["llm_error"] == "answer cut off at the token limit before any code"
    assert THINK_MARKER not in node["code"] + node["plan"]


def test_bad_budget_flags_are_one_line_errors(tmp_path, toy_task, capsys):
    from graphs.run import main

    for flag, value in (("--reasoning-budget", "-1"), ("--context-length", "0")):
        with pytest.raises(SystemExit) as info:
            main(["--task", str(toy_task), flag, value, "--run-dir", str(tmp_path / "runs")])
        assert info.value.code == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"error: argument {flag}")
    assert not (tmp_path / "runs").exists()
