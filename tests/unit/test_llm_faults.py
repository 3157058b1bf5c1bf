"""LLM faults: the real CLI against a scripted fault server on loopback.

Each test makes one chat call misbehave (a hang past the client timeout, 429 / 500 / 503 with and
without Retry-After, a connection dropped mid-response, malformed JSON, no code block, truncated
code, empty choices, an oversized answer) and checks: how many attempts the server saw (retries
are bounded by --llm-retries) and the backoff between them, the reason recorded on the node, that
the next step ran normally and the run finished with its tree exported, and that resuming the
finished run asks nothing and keeps the tree. Timing is asserted by lower bounds and order only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from graphs.run import main
from nodes.code_extract import extract_plan_and_code
from nodes.operators import candidate_from_reply
from nodes.usage import Usage
from serving.llm import LLMCallError, LLMReply, LLMSettings, complete, make_chat_model
from tests.doubles.fault import PROSE_ONLY, Fault, FaultRule, FaultServer
from tests.doubles.stub import scripted_answer

# the SDK's backoff: 0.5 s then 1 s, each minus up to 25 % jitter
FIRST_BACKOFF, SECOND_BACKOFF = 0.5 * 0.75, 1.0 * 0.75


@pytest.fixture(autouse=True)
def _no_run_report(monkeypatch):
    """The HTML/markdown run report (0.7 s a run here) is not what these tests look at."""
    import graphs.run

    monkeypatch.setattr(graphs.run, "write_report_safely", lambda *a, **k: None, raising=False)


def run_cli(server: FaultServer, task: Path, runs: Path, *extra: str, steps: int = 2,
            retries: int = 2) -> int:
    return main(["--task", str(task), "--base-url", server.base_url, "--run-dir", str(runs), "--run-id", "r",
                 "--steps", str(steps), "--exec-timeout", "30", "--sandbox", "plain", "--llm-timeout", "1",
                 "--llm-retries", str(retries), *extra])


def finished_tree(runs: Path, nodes: int) -> list[dict]:
    """The exported tree of a finished run with `nodes` nodes."""
    summary = json.loads((runs / "r" / "summary.json").read_text())
    tree = json.loads((runs / "r" / "tree.json").read_text())
    assert summary["steps"] == nodes and len(tree["nodes"]) == nodes
    assert [n["step"] for n in tree["nodes"]] == list(range(nodes))
    return tree["nodes"]


def assert_resume_is_a_no_op(server: FaultServer, runs: Path) -> None:
    before = json.loads((runs / "r" / "tree.json").read_text())["nodes"]
    seen = len(server.records)
    assert main(["--resume", "r", "--run-dir", str(runs)]) == 0
    assert len(server.records) == seen  # not one chat request more
    assert json.loads((runs / "r" / "tree.json").read_text())["nodes"] == before


def assert_next_step_ran(server: FaultServer, node: dict, call: int = 2) -> None:
    """The step after the fault asked once, got a script and ran it."""
    assert [(r.attempt, r.answer) for r in server.call(call)] == [(0, "ok")]
    assert node["llm_error"] is None and node["exit_code"] is not None
    assert node["calls"][0]["role"] == "coder" and node["calls"][0]["error"] is None


def assert_backoff_grows(gaps: list[float], base: float = 0.0) -> None:
    assert len(gaps) == 2
    assert gaps[0] >= base + FIRST_BACKOFF and gaps[1] >= base + SECOND_BACKOFF
    assert gaps[1] > gaps[0]


def failed_call(node: dict) -> dict:
    (call,) = node["calls"]  # the failed coder call is the node's only call: no execution, no review
    assert call["role"] == "coder"
    return call


def not_executed(runs: Path, node: dict) -> bool:
    return node["exit_code"] is None and not (runs / "r" / "workspaces" / node["id"]).exists()


# ----------------------------------------------------------------------------- retried faults


def test_hang_is_cut_at_the_timeout_and_retried_twice(tmp_path, toy_task):
    runs = tmp_path / "runs"
    with FaultServer([FaultRule(Fault("hang", hang_s=20), calls={1})]) as server:
        assert run_cli(server, toy_task, runs) == 0
        attempts = server.call(1)
        assert [(r.attempt, r.answer) for r in attempts] == [(0, "hang"), (1, "hang"), (2, "hang")]
        assert_backoff_grows(server.gaps(attempts), base=1.0)  # each attempt waited the 1 s timeout
        first, second = finished_tree(runs, 2)
        assert first["llm_error"] == "LLM call failed: timeout (no answer within 1 s) after 3 attempts"
        assert first["is_buggy"] and first["bug_reason"] == first["llm_error"] and not_executed(runs, first)
        call = failed_call(first)
        assert call["error"] == "timeout (no answer within 1 s) after 3 attempts" and call["attempts"] == 3
        assert call["seconds"] >= 3 * 1.0 + FIRST_BACKOFF + SECOND_BACKOFF
        assert_next_step_ran(server, second)
        assert_resume_is_a_no_op(server, runs)


def test_http_errors_are_retried_with_growing_backoff(tmp_path, toy_task):
    runs = tmp_path / "runs"
    statuses = {1: 429, 2: 500, 3: 503}  # the first three steps' calls; the fourth is answered
    rules = [FaultRule(Fault("status", status), calls={call}) for call, status in statuses.items()]
    with FaultServer(rules) as server:
        assert run_cli(server, toy_task, runs, steps=4) == 0
        nodes = finished_tree(runs, 4)
        for call, status in statuses.items():
            attempts = server.call(call)
            assert [(r.attempt, r.answer) for r in attempts] == [(i, f"status {status}") for i in range(3)]
            assert_backoff_grows(server.gaps(attempts))
            node = nodes[call - 1]
            reason = f"HTTP {status} after 3 attempts: scripted fault: HTTP {status}"
            assert node["llm_error"] == node["bug_reason"] == f"LLM call failed: {reason}"
            assert failed_call(node)["error"] == reason and failed_call(node)["attempts"] == 3
            assert not_executed(runs, node)
        assert_next_step_ran(server, nodes[3], call=4)
        assert_resume_is_a_no_op(server, runs)


def test_retry_after_is_waited_for(tmp_path, toy_task):
    runs = tmp_path / "runs"
    statuses = {1: 429, 2: 503}
    rules = [FaultRule(Fault("status", status, retry_after="1"), calls={call})
             for call, status in statuses.items()]
    with FaultServer(rules) as server:
        assert run_cli(server, toy_task, runs, steps=3) == 0
        nodes = finished_tree(runs, 3)
        for call, status in statuses.items():
            attempts = server.call(call)
            assert [r.attempt for r in attempts] == [0, 1, 2]
            assert all(gap >= 1.0 for gap in server.gaps(attempts))  # the server's delay, not 0.5 s / 1 s
            reason = f"HTTP {status} after 3 attempts (Retry-After 1 s): scripted fault: HTTP {status}"
            node = nodes[call - 1]
            assert node["llm_error"] == f"LLM call failed: {reason}" and failed_call(node)["error"] == reason
        assert_next_step_ran(server, nodes[2], call=3)
        assert_resume_is_a_no_op(server, runs)


def test_retry_after_beyond_two_minutes_is_not_waited_for(tmp_path, toy_task):
    runs = tmp_path / "runs"
    with FaultServer([FaultRule(Fault("status", 429, retry_after="600"), calls={1})]) as server:
        assert run_cli(server, toy_task, runs) == 0
        assert [r.attempt for r in server.call(1)] == [0]  # the SDK gives up rather than wait 10 minutes
        first, second = finished_tree(runs, 2)
        assert first["llm_error"] == ("LLM call failed: HTTP 429 after 1 attempt (Retry-After 600 s): "
                                      "scripted fault: HTTP 429")
        assert_next_step_ran(server, second)
        assert_resume_is_a_no_op(server, runs)


def test_one_503_then_success_costs_one_retry_and_nothing_else(tmp_path, toy_task):
    runs = tmp_path / "runs"
    with FaultServer([FaultRule(Fault("status", 503), calls={1}, times=1)]) as server:
        assert run_cli(server, toy_task, runs, steps=1) == 0
        assert [(r.attempt, r.answer) for r in server.call(1)] == [(0, "status 503"), (1, "ok")]
        assert server.gaps(server.call(1))[0] >= FIRST_BACKOFF
        (first,) = finished_tree(runs, 1)
        assert first["llm_error"] is None and first["exit_code"] is not None  # the script ran
        assert first["calls"][0]["attempts"] == 2 and first["calls"][0]["error"] is None
        assert first["calls"][0]["completion_tokens"] > 0


def test_retries_flag_bounds_the_attempts(tmp_path, toy_task):
    runs = tmp_path / "runs"
    with FaultServer([FaultRule(Fault("status", 503), calls={1})]) as server:
        assert run_cli(server, toy_task, runs, retries=0, steps=1) == 0
        assert [r.attempt for r in server.call(1)] == [0]
        (first,) = finished_tree(runs, 1)
        assert first["llm_error"] == "LLM call failed: HTTP 503 after 1 attempt: scripted fault: HTTP 503"
        assert json.loads((runs / "r" / "run.json").read_text())["llm_retries"] == 0


def test_connection_dropped_mid_response_is_retried(tmp_path, toy_task):
    runs = tmp_path / "runs"
    with FaultServer([FaultRule(Fault("drop"), calls={1})]) as server:
        assert run_cli(server, toy_task, runs) == 0
        attempts = server.call(1)
        assert [(r.attempt, r.answer) for r in attempts] == [(0, "drop"), (1, "drop"), (2, "drop")]
        assert_backoff_grows(server.gaps(attempts))
        first, second = finished_tree(runs, 2)
        assert first["llm_error"].startswith(
            "LLM call failed: connection error after 3 attempts: RemoteProtocolError: "
            "peer closed connection without sending complete message body")
        assert failed_call(first)["attempts"] == 3 and not_executed(runs, first)
        assert_next_step_ran(server, second)
        assert_resume_is_a_no_op(server, runs)


# ----------------------------------------------------------------------------- answered, unusable


def test_malformed_json_is_recorded_without_retry(tmp_path, toy_task):
    runs = tmp_path / "runs"
    with FaultServer([FaultRule(Fault("malformed"), calls={1})]) as server:
        assert run_cli(server, toy_task, runs) == 0
        assert [(r.attempt, r.answer) for r in server.call(1)] == [(0, "malformed")]
        first, second = finished_tree(runs, 2)
        assert first["llm_error"].startswith("LLM call failed: malformed JSON response: Unterminated string")
        assert failed_call(first)["attempts"] == 1 and not_executed(runs, first)
        assert_next_step_ran(server, second)
        assert_resume_is_a_no_op(server, runs)


def test_empty_choices_are_recorded(tmp_path, toy_task):
    runs = tmp_path / "runs"
    with FaultServer([FaultRule(Fault("empty_choices"), calls={1})]) as server:
        assert run_cli(server, toy_task, runs) == 0
        assert [(r.attempt, r.answer) for r in server.call(1)] == [(0, "empty_choices")]
        first, second = finished_tree(runs, 2)
        assert first["llm_error"] == first["bug_reason"] == "LLM call failed: no choices in the response"
        assert failed_call(first)["error"] == "no choices in the response" and not_executed(runs, first)
        assert_next_step_ran(server, second)
        assert_resume_is_a_no_op(server, runs)


def test_answer_without_code_is_recorded_and_not_run(tmp_path, toy_task):
    runs = tmp_path / "runs"
    with FaultServer([FaultRule(Fault("no_code"), calls={1})]) as server:
        assert run_cli(server, toy_task, runs) == 0
        assert [(r.attempt, r.answer) for r in server.call(1)] == [(0, "no_code")]
        first, second = finished_tree(runs, 2)
        assert first["llm_error"] == first["bug_reason"] == "no Python code block in the answer"
        assert first["plan"] == PROSE_ONLY and first["code"] == "" and not_executed(runs, first)
        call = failed_call(first)  # the call itself succeeded: its tokens are counted
        assert call["error"] is None and call["completion_tokens"] == len(PROSE_ONLY) // 4
        assert_next_step_ran(server, second)
        assert_resume_is_a_no_op(server, runs)


def test_code_truncated_at_the_token_limit_is_kept_but_not_run(tmp_path, toy_task):
    runs = tmp_path / "runs"
    with FaultServer([FaultRule(Fault("truncated"), calls={1})]) as server:
        assert run_cli(server, toy_task, runs) == 0
        assert [(r.attempt, r.answer) for r in server.call(1)] == [(0, "truncated")]
        first, second = finished_tree(runs, 2)
        assert first["llm_error"] == first["bug_reason"] == (
            "answer truncated at the token limit (finish_reason=length, no closing fence)")
        _, full_code = extract_plan_and_code(scripted_answer(server.call(1)[0].body["messages"]))
        kept = first["code"].rstrip("\n")
        assert 0 < len(kept) < len(full_code) and full_code.startswith(kept)  # the partial script is kept
        assert not_executed(runs, first)
        assert_next_step_ran(server, second)
        assert_resume_is_a_no_op(server, runs)


def test_oversized_answer_is_cut_and_kept_out_of_later_prompts(tmp_path, toy_task):
    runs = tmp_path / "runs"
    with FaultServer([FaultRule(Fault("oversized", size=3_000_000), calls={1})]) as server:
        assert run_cli(server, toy_task, runs) == 0
        assert [(r.attempt, r.answer) for r in server.call(1)] == [(0, "oversized")]
        first, second = finished_tree(runs, 2)
        assert first["llm_error"] == "answer oversized: 3,000,000 characters (limit 200,000); not used"
        assert first["code"] == "" and not_executed(runs, first)
        assert len(first["plan"]) < 1100
        assert first["plan"].endswith("[... cut: the answer had 3,000,000 characters]")
        assert (runs / "r" / "tree.json").stat().st_size < 100_000
        next_prompt = json.dumps(server.call(2)[0].body)
        assert "lorem ipsum" not in next_prompt and len(next_prompt) < 50_000
        assert_next_step_ran(server, second)
        assert_resume_is_a_no_op(server, runs)


@pytest.mark.parametrize("announced", [True, False])
def test_response_body_over_the_byte_limit_is_not_read(announced):
    with FaultServer([FaultRule(Fault("oversized", size=2_000_000, content_length=announced))]) as server:
        llm = make_chat_model(LLMSettings(base_url=server.base_url, model="scripted-model", timeout_s=5,
                                          max_response_bytes=1_000_000))
        with pytest.raises(LLMCallError) as info:
            complete(llm, [HumanMessage(content="write a script")])
        assert len(server.records) == 1  # refused, not retried
    assert info.value.kind == "too_large" and info.value.attempts == 1
    if announced:  # refused on its Content-Length, before reading the body
        assert str(info.value) == "response too large: 1.9 MiB announced, the limit is 1,000,000 bytes"
    else:  # close-delimited: refused once a millionth byte came in
        assert str(info.value) == "response too large: over 1,000,000 bytes, not read further"


def test_unterminated_block_runs_only_when_it_parses():
    def cand(text, finish="stop"):
        return candidate_from_reply(LLMReply(text=text, finish_reason=finish), Usage())

    assert cand("Plan\n```python\nprint(1)\n").llm_error is None  # the model forgot the closing fence
    broken = cand("Plan\n```python\nx = (1,\n")
    assert broken.llm_error == ("answer truncated (no closing fence): "
                                "the code does not parse ('(' was never closed, line 1)")
    assert broken.code == "x = (1,\n"
    closed_then_cut = cand("Plan\n```python\nprint(1)\n```\nand then the prose went on", finish="length")
    assert closed_then_cut.llm_error is None and closed_then_cut.code == "print(1)\n"  # the code was whole


# ----------------------------------------------------------------------------- review and fan-out


def test_failed_review_is_recorded_and_structured_output_stays_on(tmp_path, toy_task):
    runs = tmp_path / "runs"
    with FaultServer([FaultRule(Fault("status", 503), calls={2})]) as server:  # call 2: node 0's review
        # every run reviewed, failed or not, so call 2 is a review whatever the script did
        assert run_cli(server, toy_task, runs, "--review-failed-runs", "--repairs", "0") == 0
        review = server.call(2)
        assert [r.attempt for r in review] == [0, 1, 2] and "response_format" in review[0].body
        first, second = finished_tree(runs, 2)
        assert first["exit_code"] is not None  # the script ran; only its LLM verdict is missing
        assert first["llm_error"] == "HTTP 503 after 3 attempts: scripted fault: HTTP 503"
        assert [(c["role"], c["attempts"], c["error"]) for c in first["calls"]] == [
            ("coder", 1, None), ("reviewer", 3, "HTTP 503 after 3 attempts: scripted fault: HTTP 503")]
        # an overloaded server is no refusal of JSON schemas: the next review still asks for one
        assert "response_format" in server.call(4)[0].body and second["llm_error"] is None
        assert_resume_is_a_no_op(server, runs)


def test_fan_out_siblings_run_while_one_sample_keeps_failing(tmp_path, toy_task):
    from graphs.strategy import seed_of

    seeds = [seed_of({"seed": 0}, "sample", i) for i in range(3)]  # run seed 0, step 0
    runs = tmp_path / "runs"
    with FaultServer([FaultRule(Fault("status", 500), seed=seeds[1])]) as server:
        assert run_cli(server, toy_task, runs, "--strategy", "self_consistency", "--samples", "3",
                       "--sampling", "concurrent", "--seed", "0", steps=1) == 0
        faulted = server.calls_with(seeds[1])
        assert [(r.attempt, r.answer) for r in faulted] == [(i, "status 500") for i in range(3)]
        for i in (0, 2):
            (sibling,) = server.calls_with(seeds[i])
            assert sibling.answer == "ok" and sibling.at < faulted[-1].at  # asked while the other retried
        (node,) = finished_tree(runs, 1)
        details = node["extra"]["strategy"]
        reason = "HTTP 500 after 3 attempts: scripted fault: HTTP 500"
        assert details["attempts"][1]["failure"] == f"LLM call failed: {reason}"
        for i in (0, 2):  # the siblings got scripts and ran them
            assert not (details["attempts"][i]["failure"] or "").startswith("LLM call failed")
        assert details["kept"] in (0, 2) and node["llm_error"] is None
        samplers = [(c["attempts"], c["error"]) for c in node["calls"] if c["role"] == "sampler"]
        assert sorted(samplers, key=str) == sorted([(1, None), (1, None), (3, reason)], key=str)
        workspaces = runs / "r" / "workspaces" / node["id"]
        assert (workspaces / "s0").is_dir() and (workspaces / "s2").is_dir()
        assert not (workspaces / "s1").exists()
        assert_resume_is_a_no_op(server, runs)
