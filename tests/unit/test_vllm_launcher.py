"""serving.vllm: the `vllm serve` command line, the start / wait / stop lifecycle, bad input, and
graphs.run / benchmark.sweep with a launcher, all against a fake `vllm` executable
(tests/doubles/fake_vllm) that serves the reasoning-model emulator."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from serving.vllm import VLLMNotFound, VLLMServer, reasoning_parser_for, served_name_for
from tests.conftest import ROOT, make_toy_task

FAKE = ROOT / "tests" / "doubles" / "fake_vllm"
R1 = "deepseek-ai/DeepSeek-R1-Distill-Qwen-{}"
COMMON_TAIL = ["--enable-prefix-caching", "--enable-prompt-tokens-details", "--generation-config", "auto"]


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    """`vllm` on PATH: the fake, run by this interpreter; returns (executable, record file)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "vllm"
    lines = FAKE.read_text().splitlines(keepends=True)
    exe.write_text(f"#!{sys.executable}\n" + "".join(lines[1:]))
    exe.chmod(0o755)
    record = tmp_path / "vllm-calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(record))
    monkeypatch.setenv("FAKE_VLLM_ROOT", str(ROOT))
    monkeypatch.delenv("FAKE_VLLM_MODE", raising=False)
    monkeypatch.delenv("FAKE_VLLM_DELAY", raising=False)
    return exe, record


def calls(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def wait_gone(*pids: int, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def models_at(base_url: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{base_url}/models", timeout=5) as r:
        return json.loads(r.read())


def launcher(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving.vllm", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def assert_one_line_error(proc: subprocess.CompletedProcess, pattern: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


# --- the command line ---------------------------------------------------------------------------

@pytest.mark.parametrize("size,tp", [("7B", 1), ("14B", 1), ("32B", 2)])
def test_r1_distill_command_lines(fake_vllm, size, tp):
    exe, _ = fake_vllm
    model = R1.format(size)
    server = VLLMServer(model, port=8000, tensor_parallel_size=tp)
    assert server.served_name == f"DeepSeek-R1-Distill-Qwen-{size}"
    assert server.command() == [
        str(exe), "serve", model, "--served-model-name", f"DeepSeek-R1-Distill-Qwen-{size}",
        "--host", "127.0.0.1", "--port", "8000", "--tensor-parallel-size", str(tp),
        "--reasoning-parser", "deepseek_r1", *COMMON_TAIL,
    ]
    # the CLI's --dry-run prints the same line, shell-quoted, and starts nothing
    proc = launcher("--model", model, "--tensor-parallel-size", str(tp), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert shlex.split(proc.stdout.strip()) == server.command()
    assert not calls(fake_vllm[1])


def test_non_reasoning_model_gets_no_parser_and_options_are_passed(fake_vllm):
    exe, _ = fake_vllm
    model = "Qwen/Qwen2.5-Coder-7B-Instruct"
    server = VLLMServer(model, port=9001, data_parallel_size=2, max_model_len=16384,
                        gpu_memory_utilization=0.85, served_model_name="coder", extra_args=["--seed", "3"])
    assert server.command() == [
        str(exe), "serve", model, "--served-model-name", "coder", "--host", "127.0.0.1", "--port", "9001",
        "--tensor-parallel-size", "1", "--data-parallel-size", "2", "--max-model-len", "16384",
        "--gpu-memory-utilization", "0.85", *COMMON_TAIL, "--seed", "3",
    ]
    assert "--reasoning-parser" not in VLLMServer(model).command()
    # an explicit parser wins over the family table; "none" sends none
    assert VLLMServer(model, reasoning_parser="qwen3").command().count("qwen3") == 1
    assert "--reasoning-parser" not in VLLMServer(R1.format("7B"), reasoning_parser="none").command()


@pytest.mark.parametrize("model,parser", [
    ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "deepseek_r1"),
    ("deepseek-ai/DeepSeek-R1", "deepseek_r1"),
    ("deepseek-ai/DeepSeek-R1-0528-Qwen3-8B", "deepseek_r1"),  # an R1 distill on Qwen3 is R1's
    ("Qwen/QwQ-32B", "deepseek_r1"),
    ("Qwen/Qwen3-8B", "qwen3"),
    ("/models/Qwen3-30B-A3B/", "qwen3"),
    ("Qwen/Qwen3-Coder-30B-A3B-Instruct", None),  # Qwen3 variants that never think
    ("Qwen/Qwen3-4B-Instruct-2507", None),
    ("Qwen/Qwen2.5-Coder-32B-Instruct", None),
    ("meta-llama/Llama-3.1-8B-Instruct", None),
])
def test_reasoning_parser_by_family(model, parser):
    assert reasoning_parser_for(model) == parser


def test_served_name_is_the_basename():
    assert served_name_for("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B") == "DeepSeek-R1-Distill-Qwen-7B"
    assert served_name_for("/data/models/my-model/") == "my-model"


# --- lifecycle ----------------------------------------------------------------------------------

def test_cli_waits_until_models_answer_prints_base_url_and_stops_the_group(fake_vllm):
    _, record = fake_vllm
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.vllm", "--model", R1.format("7B"), "--port", str(port),
         "--max-model-len", "4096"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "FAKE_VLLM_DELAY": "1.5"})
    try:
        t0 = time.monotonic()
        first = proc.stdout.readline().strip()  # printed only once /v1/models answers
        waited = time.monotonic() - t0
        assert first == f"http://127.0.0.1:{port}/v1"
        assert waited >= 1.5, f"base URL printed after {waited:.2f} s, before the fake finished loading"
        served = models_at(first)["data"][0]
        assert served["id"] == "DeepSeek-R1-Distill-Qwen-7B" and served["max_model_len"] == 4096
        (call,) = calls(record)
        assert call["argv"] == ["serve", R1.format("7B"), "--served-model-name", "DeepSeek-R1-Distill-Qwen-7B",
                                "--host", "127.0.0.1", "--port", str(port), "--tensor-parallel-size", "1",
                                "--max-model-len", "4096", "--reasoning-parser", "deepseek_r1", *COMMON_TAIL]
        assert alive(call["pid"]) and alive(call["worker_pid"])
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
        assert wait_gone(call["pid"], call["worker_pid"]), "the server's process group outlived the launcher"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_stops_the_server_too(fake_vllm):
    _, record = fake_vllm
    proc = subprocess.Popen([sys.executable, "-m", "serving.vllm", "--model", "some/model", "--port",
                             str(free_port())], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("http://127.0.0.1:")
        (call,) = calls(record)
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        assert wait_gone(call["pid"], call["worker_pid"])
    finally:
        if proc.poll() is None:
            proc.kill()


def test_python_api_context_manager(fake_vllm, tmp_path):
    _, record = fake_vllm
    log = tmp_path / "vllm.log"
    with VLLMServer(R1.format("14B"), log_path=log) as server:  # a free port of its own
        assert server.running and server.base_url.startswith("http://127.0.0.1:")
        assert models_at(server.base_url)["data"][0]["id"] == server.served_name == "DeepSeek-R1-Distill-Qwen-14B"
        (call,) = calls(record)
        assert call["argv"][call["argv"].index("--port") + 1] == str(server.port)
    assert not server.running
    assert wait_gone(call["pid"], call["worker_pid"])
    assert "fake vllm: serving" in log.read_text()  # the server's output goes to the log given


def test_server_dying_during_startup_is_one_line_with_its_log(fake_vllm):
    proc = launcher("--model", R1.format("7B"), "--port", str(free_port()), env={"FAKE_VLLM_MODE": "die"})
    assert_one_line_error(proc, "vLLM server exited during startup (code 1)")
    assert "not enough GPU memory for the KV cache" in proc.stderr


def test_startup_timeout_is_one_line(fake_vllm):
    proc = launcher("--model", "m", "--port", str(free_port()), "--startup-timeout", "1",
                    env={"FAKE_VLLM_DELAY": "30"})
    assert_one_line_error(proc, "vLLM server not ready after 1 s")


def test_no_vllm_executable(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing called vllm there
    proc = launcher("--model", R1.format("7B"), env={"PATH": str(tmp_path)})
    assert_one_line_error(proc, "no `vllm` executable on PATH")
    with pytest.raises(VLLMNotFound):
        VLLMServer("m").start()
    proc = launcher("--model", "m", "--vllm", str(tmp_path / "missing"))
    assert_one_line_error(proc, "vllm executable not found or not executable")


def test_port_in_use(fake_vllm):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = launcher("--model", R1.format("7B"), "--port", str(port))
    assert_one_line_error(proc, f"port {port} is in use")
    assert not calls(fake_vllm[1]), "the server was started although its port was taken"


@pytest.mark.parametrize("args,pattern", [
    (["--tensor-parallel-size", "0"], "--tensor-parallel-size: must be at least 1"),
    (["--data-parallel-size", "x"], "--data-parallel-size"),
    (["--port", "70000"], "--port: must be in 1..65535"),
    (["--max-model-len", "-5"], "--max-model-len: must be at least 1"),
    (["--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization: must be in (0, 1]"),
])
def test_bad_numbers(args, pattern):
    assert_one_line_error(launcher("--model", "m", *args, "--dry-run"), pattern)


# --- graphs.run and the sweep -------------------------------------------------------------------

def test_graphs_run_with_vllm_model_never_touches_the_embedded_model(fake_vllm, tmp_path, monkeypatch):
    from graphs.run import main

    _, record = fake_vllm
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("ITS_MLE_CACHE", str(cache))
    task = make_toy_task(tmp_path / "toy")
    runs = tmp_path / "runs"
    argv = ["--run-dir", str(runs), "--exec-timeout", "20"]
    assert main(["--task", str(task), "--vllm-model", R1.format("7B"), "--max-model-len", "16384",
                 "--steps", "1", "--run-id", "v", *argv]) == 0
    settings = json.loads((runs / "v" / "run.json").read_text())
    assert settings["vllm_model"] == R1.format("7B") and settings["model"] == "DeepSeek-R1-Distill-Qwen-7B"
    assert settings["base_url"] is None and settings["max_model_len"] == 16384
    summary = json.loads((runs / "v" / "summary.json").read_text())
    assert summary["steps"] == 1
    (node,) = json.loads((runs / "v" / "tree.json").read_text())["nodes"]
    assert node["reasoning_tokens"] > 0  # the emulator behind the fake thinks in a separate field
    assert "zthink" not in node["code"]
    (call,) = calls(record)
    assert call["argv"][call["argv"].index("--max-model-len") + 1] == "16384"
    assert call["argv"][call["argv"].index("--reasoning-parser") + 1] == "deepseek_r1"
    assert wait_gone(call["pid"], call["worker_pid"]), "the run left its vLLM server running"
    assert (runs / "v" / "vllm-server.log").is_file()
    # resume restarts the server for the run (new process, same model and settings)
    assert main(["--resume", "v", "--steps", "2", *argv]) == 0
    first, second = calls(record)
    assert second["pid"] != first["pid"] and second["argv"][:2] == ["serve", R1.format("7B")]
    assert json.loads((runs / "v" / "summary.json").read_text())["steps"] == 2
    assert wait_gone(second["pid"], second["worker_pid"])
    assert list(cache.iterdir()) == [], "the embedded model's cache was touched"


def test_graphs_run_vllm_errors_are_one_line(tmp_path, monkeypatch, capsys):
    from graphs.run import main

    monkeypatch.setenv("PATH", str(tmp_path))
    task = make_toy_task(tmp_path / "toy")
    assert main(["--task", str(task), "--vllm-model", "m", "--run-dir", str(tmp_path / "runs")]) == 2
    assert "no `vllm` executable on PATH" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert main(["--task", str(task), "--vllm-model", "m", "--base-url", "http://127.0.0.1:9/v1",
                 "--run-dir", str(tmp_path / "runs")]) == 2
    assert "drop --base-url" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_sweep_starts_one_launcher_per_vllm_model(fake_vllm, tmp_path, monkeypatch):
    from benchmark.sweep import main as sweep

    _, record = fake_vllm
    monkeypatch.setenv("ITS_MLE_CACHE", str(tmp_path / "cache"))
    task = make_toy_task(tmp_path / "toy")
    out = tmp_path / "sweep"
    args = ["--tasks", str(task), "--strategies", "aide", "--models", f"vllm:{R1.format('7B')}",
            "--seeds", "2", "--steps", "1", "--out", str(out), "--exec-timeout", "20", "--max-model-len", "8192"]
    assert sweep(args) == 0
    (call,) = calls(record)  # one server for both cells
    assert call["argv"][call["argv"].index("--max-model-len") + 1] == "8192"
    assert wait_gone(call["pid"], call["worker_pid"])
    runs = sorted((out / "runs").iterdir())
    assert [r.name for r in runs] == ["toy__aide__DeepSeek-R1-Distill-Qwen-7B__s0",
                                      "toy__aide__DeepSeek-R1-Distill-Qwen-7B__s1"]
    assert all((r / "summary.json").is_file() for r in runs)
    assert json.loads((runs[0] / "run.json").read_text())["model"] == "DeepSeek-R1-Distill-Qwen-7B"
    # all cells done: running it again starts no server at all
    assert sweep(args) == 0
    assert len(calls(record)) == 1
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_sweep_refuses_a_vllm_model_without_vllm(tmp_path, monkeypatch, capsys):
    from benchmark.sweep import main as sweep

    monkeypatch.setenv("PATH", str(tmp_path))
    task = make_toy_task(tmp_path / "toy")
    assert sweep(["--tasks", str(task), "--strategies", "aide", "--models", "vllm:org/m", "--seeds", "1",
                  "--steps", "1", "--out", str(tmp_path / "out")]) == 2
    assert "no `vllm` executable on PATH" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_vllm_lines_benchmark_prints_the_three_r1_command_lines():
    proc = subprocess.run([sys.executable, "-m", "benchmark.vllm_lines"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [shlex.split(ln) for ln in proc.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    assert [ln[2] for ln in lines] == [R1.format(s) for s in ("7B", "14B", "32B")]
    for ln in lines:
        assert ln[:2] == ["vllm", "serve"]
        assert ln[ln.index("--reasoning-parser") + 1] == "deepseek_r1"
        assert "--enable-prefix-caching" in ln and "--enable-prompt-tokens-details" in ln
    assert [ln[ln.index("--tensor-parallel-size") + 1] for ln in lines] == ["1", "1", "2"]
