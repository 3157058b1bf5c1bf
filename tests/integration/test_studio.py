"""`langgraph dev` (the local LangGraph API server Studio talks to) serves our langgraph.json.

Starts the in-memory API server on loopback with the repository's langgraph.json (its paths made
absolute, the server run from a temporary directory so its `.langgraph_api/` files stay there),
lists the graphs over HTTP, and completes one run of each strategy graph against the scripted
endpoint on the toy task. Also checks that the runs' checkpoints went to the SQLite file of
`graphs.studio.make_checkpointer` (langgraph.json's "checkpointer"), not to the server's memory.
Needs no model weights and no internet (runs in `make test`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_toy_task
from tests.doubles.stub import StubServer

ROOT = Path(__file__).resolve().parents[2]
STRATEGIES = ["self_consistency", "self_reflection", "planner_coder"]
GRAPHS = {"tree_search", *STRATEGIES}
START_TIMEOUT_S = 60

pytestmark = pytest.mark.timeout(180)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _absolute(path: str) -> str:
    return str(ROOT / path[2:]) if path.startswith("./") else path


def _config(tmp: Path) -> Path:
    """The repository's langgraph.json with its relative paths made absolute."""
    cfg = json.loads((ROOT / "langgraph.json").read_text())
    cfg["graphs"] = {k: _absolute(v) for k, v in cfg["graphs"].items()}
    cfg["dependencies"] = [str(ROOT) if d == "." else d for d in cfg["dependencies"]]
    cfg["checkpointer"]["path"] = _absolute(cfg["checkpointer"]["path"])
    out = tmp / "langgraph.json"
    out.write_text(json.dumps(cfg, indent=2))
    return out


def _offline_env(db: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("ITS_MLE_BASE_URL", "LANGSMITH_API_KEY", "LANGCHAIN_API_KEY"):
        env.pop(key, None)
    env.update(
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
        LANGGRAPH_CLI_NO_ANALYTICS="1",  # the CLI posts usage analytics otherwise
        LANGGRAPH_NO_VERSION_CHECK="true",  # the server asks PyPI for a newer version otherwise
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        ITS_MLE_STUDIO_DB=str(db),
        PYTHONUNBUFFERED="1",
    )
    return env


def _tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """The API server's URL, its SQLite checkpoint file and its log; stopped afterwards."""
    tmp = tmp_path_factory.mktemp("studio")
    db = tmp / "checkpoints.sqlite"
    log = tmp / "server.log"
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "langgraph_cli",
        "dev",
        "--config",
        str(_config(tmp)),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-browser",
        "--no-reload",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=tmp, env=_offline_env(db), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(trust_env=False, timeout=5) as client:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"langgraph dev exited with {proc.returncode}:\n{_tail(log)}")
                try:
                    if client.get(f"{url}/ok").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"langgraph dev not ready after {START_TIMEOUT_S} s:\n{_tail(log)}")
                time.sleep(0.25)
        yield {"url": url, "db": db, "log": log, "cwd": tmp}
    finally:
        for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue


@pytest.fixture(scope="module")
def stub():
    with StubServer() as server:
        yield server


@pytest.fixture(scope="module")
def http():
    with httpx.Client(trust_env=False, timeout=httpx.Timeout(120, connect=5)) as client:
        yield client


def test_lists_all_graphs(studio, http):
    r = http.post(f"{studio['url']}/assistants/search", json={"limit": 100})
    r.raise_for_status()
    assert GRAPHS <= {a["graph_id"] for a in r.json()}


@pytest.mark.parametrize("graph", STRATEGIES)
def test_strategy_run_completes(studio, stub, http, tmp_path, graph):
    url = studio["url"]
    task = make_toy_task(tmp_path / "toy")
    thread = http.post(f"{url}/threads", json={}).json()["thread_id"]
    context = {
        "task_dir": str(task),
        "base_url": stub.base_url,
        "sandbox": "plain",
        "exec_timeout": 30,
        "run_dir": str(tmp_path / "work"),
        "samples": 3,
        "rounds": 2,
    }
    r = http.post(
        f"{url}/threads/{thread}/runs/wait",
        json={"assistant_id": graph, "input": {"seed": 1}, "context": context},
    )
    assert r.status_code == 200, r.text
    final = r.json()
    assert "__error__" not in final, f"{final}\n{_tail(studio['log'])}"
    result = final.get("result")
    assert isinstance(result, dict), f"no result in {final}\n{_tail(studio['log'])}"
    assert result["candidate"]["code"].strip()
    assert isinstance(result["execution"], dict)

    # The thread's state is served back, and its checkpoints are in make_checkpointer's SQLite file.
    state = http.get(f"{url}/threads/{thread}/state").json()
    assert state["values"]["result"]["candidate"]["code"] == result["candidate"]["code"]
    with sqlite3.connect(studio["db"]) as db:
        (n,) = db.execute("SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?", (thread,)).fetchone()
    assert n > 0, "the run's checkpoints are not in the custom checkpointer's database"


def test_tree_search_run_completes(studio, stub, http, tmp_path):
    url = studio["url"]
    task = make_toy_task(tmp_path / "toy")
    thread = http.post(f"{url}/threads", json={}).json()["thread_id"]
    context = {"task_dir": str(task), "base_url": stub.base_url, "sandbox": "plain", "exec_timeout": 30,
               "run_dir": str(tmp_path / "runs"), "strategy": "self_consistency", "samples": 2, "steps": 2}
    r = http.post(f"{url}/threads/{thread}/runs/wait",
                  json={"assistant_id": "tree_search", "input": {"step": 0}, "context": context})
    assert r.status_code == 200, r.text
    final = r.json()
    assert final.get("step") == 2, f"{final}\n{_tail(studio['log'])}"
    assert final["best_id"] in {"00000-0", "00001-0", None}
    store = tmp_path / "runs" / thread / "nodes.sqlite"
    with sqlite3.connect(store) as db:
        (n,) = db.execute("SELECT COUNT(*) FROM nodes").fetchone()
    assert n == 2


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for sub in ("workspaces", "submissions")
            for p in sorted((run / sub).rglob("*")) if p.is_file()}


def _branch(store: Path, head: str) -> list[str]:
    """The node ids of the branch ending at `head`, oldest first (the store's prev links)."""
    with sqlite3.connect(store) as db:
        rows = {i: json.loads(d) for i, d in db.execute("SELECT id, data FROM nodes")}
    out, current = [], head
    while current is not None:
        out.append(current)
        current = rows[current]["prev_id"]
    return out[::-1]


def test_tree_search_forks_over_http_as_studio_does(studio, stub, http, tmp_path):
    """Studio's two ways back in time, through the API server: run again from a past checkpoint,
    and edit a past state (a new action) then run from the edit. Every branch finishes on the
    same run directory; no branch changes a byte of another's files."""
    url = studio["url"]
    task = make_toy_task(tmp_path / "toy")
    thread = http.post(f"{url}/threads", json={}).json()["thread_id"]
    context = {"task_dir": str(task), "base_url": stub.base_url, "sandbox": "plain", "exec_timeout": 30,
               "run_dir": str(tmp_path / "runs"), "steps": 4, "repairs": 0}
    run = tmp_path / "runs" / thread
    store = run / "nodes.sqlite"

    def wait(**body):
        r = http.post(f"{url}/threads/{thread}/runs/wait",
                      json={"assistant_id": "tree_search", "context": context, **body})
        assert r.status_code == 200, f"{r.text}\n{_tail(studio['log'])}"
        final = r.json()
        assert final.get("step") == 4, f"{final}\n{_tail(studio['log'])}"
        return final

    first = wait(input={"step": 0})
    assert _branch(store, first["head"]) == ["00000-0", "00001-0", "00002-0", "00003-0"]
    files = _files(run)
    history = http.post(f"{url}/threads/{thread}/history", json={"limit": 200}).json()
    after_step_1 = next(s for s in history if s["next"] == ["choose"] and s["values"]["step"] == 2)
    # 1. run again from the checkpoint after step 1: steps 2 and 3 again, on a branch of their own
    again = wait(input=None, checkpoint_id=after_step_1["checkpoint"]["checkpoint_id"])
    assert _branch(store, again["head"]) == ["00000-0", "00001-0", "00002-1", "00003-1"]
    # 2. edit the state where step 1's action was chosen (a fresh draft instead), run from there
    at_choice = next(s for s in history if s["next"] == ["generate"] and s["values"]["step"] == 1)
    r = http.post(f"{url}/threads/{thread}/state", json={
        "values": {"action": {"stage": "draft", "parent_id": None}}, "as_node": "choose",
        "checkpoint_id": at_choice["checkpoint"]["checkpoint_id"]})
    assert r.status_code == 200, r.text
    edited = wait(input=None, checkpoint_id=r.json()["checkpoint"]["checkpoint_id"])
    ids = _branch(store, edited["head"])
    assert ids == ["00000-0", "00001-1", "00002-2", "00003-2"]
    with sqlite3.connect(store) as db:
        stage = json.loads(db.execute("SELECT data FROM nodes WHERE id = '00001-1'").fetchone()[0])["stage"]
        (count,) = db.execute("SELECT COUNT(*) FROM nodes").fetchone()
    assert stage == "draft" and count == 4 + 2 + 3
    after = _files(run)
    assert {k: after.get(k) for k in files} == files  # the first branch's files, byte for byte
    # the thread's state is the last branch's; the first branch's head still names its own
    state = http.get(f"{url}/threads/{thread}/state").json()
    assert state["values"]["head"] == edited["head"]
