"""Three search steps through the CLI against the real llama.cpp server with the 0.5B model."""

import json
import re
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.timeout(1800)  # the subprocess's own bound; 3 steps with repairs on 2 busy cores
def test_three_steps_on_embedded_model(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "graphs.run", "--task", str(ROOT / "tasks" / "tumor-diagnosis"),
         "--local-model", "0.5b", "--steps", "3", "--run-dir", str(runs), "--exec-timeout", "120",
         "--max-tokens", "1200"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "embedded server ready at http://127.0.0.1:" in proc.stdout
    (run_path,) = runs.iterdir()
    nodes = json.loads((run_path / "tree.json").read_text())["nodes"]
    assert [n["step"] for n in nodes] == [0, 1, 2]
    for n in nodes:
        # every node carries the real server's usage and latency, and a recorded outcome
        assert n["prompt_tokens"] > 500 and n["completion_tokens"] > 0 and n["llm_seconds"] > 0
        assert n["is_buggy"] == (n["bug_reason"] is not None)
        assert n["review"]
    assert any(n["code"] for n in nodes), "the model wrote no code in three tries"
    summary = json.loads((run_path / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["completion_tokens"] == sum(n["completion_tokens"] for n in nodes)
    # the embedded server was stopped with the run: its port no longer answers
    port = int(re.search(r"ready at http://127\.0\.0\.1:(\d+)/v1", proc.stdout).group(1))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    log = (run_path / "llama-server.log").read_text()
    assert "/v1/chat/completions" in log
