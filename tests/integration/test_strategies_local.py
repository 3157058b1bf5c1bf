"""Each strategy expands one tree node through the CLI against the real llama.cpp server with
the 0.5B model: real sampling (the server ignores or refuses `n`, so self-consistency falls back
to concurrent requests), real structured plans and reflections, real sandboxed executions."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

EXPECTED_ROLES = {
    "self_consistency": {"sampler"},
    "self_reflection": {"coder"},
    "planner_coder": {"planner", "coder"},
}


@pytest.mark.timeout(1500)  # the subprocess's own bound
@pytest.mark.parametrize("strategy", ["self_consistency", "self_reflection", "planner_coder"])
def test_strategy_on_embedded_model(tmp_path, strategy):
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "graphs.run", "--task", str(ROOT / "tasks" / "tumor-diagnosis"),
         "--local-model", "0.5b", "--strategy", strategy, "--steps", "1", "--samples", "2",
         "--rounds", "2", "--run-dir", str(runs), "--run-id", strategy, "--exec-timeout", "120",
         "--max-tokens", "900", "--no-llm-review"],
        cwd=ROOT, capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (node,) = json.loads((runs / strategy / "tree.json").read_text())["nodes"]
    details = node["extra"]["strategy"]
    assert details["strategy"] == strategy
    roles = [c["role"] for c in node["calls"]]
    assert EXPECTED_ROLES[strategy] <= set(roles), roles
    answered = [c for c in node["calls"] if c["error"] is None]
    assert answered and all(c["prompt_tokens"] > 200 and c["seconds"] > 0 for c in answered)
    assert node["llm_calls"] == len(node["calls"])
    assert node["is_buggy"] == (node["bug_reason"] is not None)
    if strategy == "self_consistency":
        assert len(details["attempts"]) == 2 and roles.count("sampler") >= 2
        assert details["sampling"] != "n"  # llama-cpp-python's server answers one choice
    else:
        assert 1 <= len(details["rounds"]) <= 2
    if strategy == "planner_coder":
        assert roles[0] == "planner" and details["plans_made"] >= 1
    summary = json.loads((runs / strategy / "summary.json").read_text())
    assert summary["strategy"] == strategy and summary["llm_calls"] == len(roles)
