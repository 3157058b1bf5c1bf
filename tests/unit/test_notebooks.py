"""The notebooks in notebooks/ run top to bottom against the scripted stub and show what they say.

Each notebook is executed with nbclient in a kernel of this interpreter (a kernelspec written to a
temporary directory, so no user- or system-wide `python3` kernelspec can take its place), with the
repository root as working directory and the stub's URL, task directories and output folders in
`ITS_MLE_NOTEBOOK_*` environment variables. The executed notebooks are kept in
test-artifacts/notebooks/ (also when a cell fails); the committed ones carry no outputs.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from langgraph.checkpoint.sqlite import SqliteSaver
from nbclient import NotebookClient

from graphs.search import build_search_graph
from nodes.tree import NodeStore
from tests.conftest import ROOT, make_toy_task
from tests.doubles.stub import StubServer

NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "test-artifacts" / "notebooks"
CELL_TIMEOUT = 180  # seconds per cell
STEPS, FORK_STEP = 4, 2


@pytest.fixture(scope="module")
def kernels(tmp_path_factory) -> Path:
    """A directory holding one kernelspec, `python3`, that starts this interpreter's ipykernel."""
    root = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(root / "python3")
    return root


@pytest.fixture(scope="module")
def stub():
    with StubServer() as server:
        yield server


def execute(name: str, kernels: Path, env: dict[str, str]) -> nbformat.NotebookNode:
    """Run notebooks/<name> in a fresh kernel; the executed copy goes to test-artifacts/."""
    source = NOTEBOOKS / name
    nb = nbformat.read(source, as_version=4)
    # the committed notebook is clean: no outputs, no execution counts
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code"), f"{name} is committed with outputs"
    specs = KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(ROOT)}})
    try:
        client.execute(env={**os.environ, **env})
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, ARTIFACTS / name)
    return nb


def tagged(nb: nbformat.NotebookNode, tag: str) -> list:
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert cells, f"no cell tagged {tag!r}"
    return cells


def stream_text(cells: list) -> str:
    return "".join(o.get("text", "") for c in cells for o in c.outputs if o.output_type == "stream")


def recap(nb: nbformat.NotebookNode) -> dict:
    return json.loads(stream_text(tagged(nb, "recap")))


def pngs(nb: nbformat.NotebookNode, tag: str | None = None) -> list[bytes]:
    cells = tagged(nb, tag) if tag else [c for c in nb.cells if c.cell_type == "code"]
    return [base64.b64decode(o["data"]["image/png"]) for c in cells for o in c.outputs
            if "image/png" in o.get("data", {})]


def test_step_through_search_notebook(tmp_path, kernels, stub):
    task = make_toy_task(tmp_path / "toy")
    work = tmp_path / "work"
    before = stub.requests
    nb = execute("01_step_through_search.ipynb", kernels, {
        "ITS_MLE_NOTEBOOK_TASK": str(task), "ITS_MLE_NOTEBOOK_BASE_URL": stub.base_url,
        "ITS_MLE_NOTEBOOK_WORKDIR": str(work), "ITS_MLE_NOTEBOOK_STEPS": str(STEPS),
        "ITS_MLE_NOTEBOOK_FORK_STEP": str(FORK_STEP), "ITS_MLE_NOTEBOOK_EXEC_TIMEOUT": "60",
    })
    r = recap(nb)

    # one line per step, each state one step further and the tree one node larger
    lines = re.findall(r"after step (\d+): state step=(\d+) next=\('choose',\) nodes=(\d+)",
                       stream_text(tagged(nb, "steps")))
    assert [tuple(map(int, line)) for line in lines] == [(k, k, k) for k in range(1, STEPS + 1)]
    assert r["node_counts"] == list(range(1, STEPS + 1)) and r["state_steps"] == list(range(1, STEPS + 1))

    # five checkpoints per search step, two at the start (input, before the first choose), one at the end
    assert r["history_before_fork"] == 5 * STEPS + 3
    assert f"history: {5 * STEPS + 3} checkpoints for {STEPS} search steps" in stream_text(tagged(nb, "history"))
    # the fork adds its update checkpoint (in place of the fork step's choose), five per step it
    # ran after that, and the final choose; and keeps every checkpoint of the original
    fork_steps = STEPS - FORK_STEP
    assert r["history_after_fork"] == r["history_before_fork"] + 5 * fork_steps + 1
    assert r["shared_checkpoints"] == 5 * FORK_STEP + 3  # input .. the choose of the fork step
    assert r["original_branch"] == r["history_before_fork"]
    assert r["fork_branch"] == r["shared_checkpoints"] + 5 * fork_steps + 1

    # the fork took another action at the fork step, and its node differs from the original's
    orig, fork = r["original_node"], r["fork_node"]
    # same run directory, same step, a name of its own: the fork never writes over the original
    assert (orig["id"], fork["id"]) == (f"{FORK_STEP:05d}-0", f"{FORK_STEP:05d}-1")
    assert r["fork_action"] != r["original_action"]
    assert orig["stage"] == r["original_action"]["stage"] and fork["stage"] == r["fork_action"]["stage"]
    assert fork["parent"] == r["fork_action"]["parent_id"] and fork["stage"] != orig["stage"]
    assert r["original_head_unchanged"] is True and r["original_nodes_unchanged"] is True

    # the same facts, read back from the files the notebook left
    conn = sqlite3.connect(str(work / "checkpoints.sqlite"), check_same_thread=False)
    try:
        saver = SqliteSaver(conn)
        thread = {"configurable": {"thread_id": "notebook"}}
        assert len(list(saver.list(thread))) == r["history_after_fork"]
        graph = build_search_graph().compile(checkpointer=saver)
        heads = {}
        for key in ("original_head", "fork_head"):
            snap = graph.get_state({"configurable": {"thread_id": "notebook", "checkpoint_id": r[key]}})
            assert snap.values["step"] == STEPS and snap.next == ()
            heads[key] = snap
        assert graph.get_state(thread).config["configurable"]["checkpoint_id"] == r["fork_head"]
        fork_point = graph.get_state({"configurable": {"thread_id": "notebook", "checkpoint_id": r["fork_checkpoint"]}})
        assert fork_point.next == ("generate",) and fork_point.values["step"] == FORK_STEP
        assert fork_point.values["action"] == r["original_action"]
    finally:
        conn.close()
    store = NodeStore(work / "runs" / "notebook" / "nodes.sqlite")  # both branches, one store
    try:
        nodes = {name: {n.step: n for n in store.branch(heads[key].values["head"])}
                 for name, key in (("original", "original_head"), ("fork", "fork_head"))}
        assert store.count() == STEPS + (STEPS - FORK_STEP)
    finally:
        store.close()
    assert not (work / "fork-runs").exists()
    for name in nodes:
        assert sorted(nodes[name]) == list(range(STEPS))
    # the model answered every step of both branches: a generate call per step, and a review for
    # each run that did not fail (a failed run is not reviewed); nothing else
    made = [n for n in nodes["original"].values()] + [nodes["fork"][s] for s in range(FORK_STEP, STEPS)]
    assert stub.requests - before == sum(n.llm_calls for n in made)
    assert sum(n.llm_calls for n in made) == len(made) + sum(not n.is_buggy for n in made)
    for step in range(FORK_STEP):  # the shared past is the same node in both trees
        assert nodes["fork"][step].model_dump() == nodes["original"][step].model_dump()
    at_fork = nodes["fork"][FORK_STEP]
    assert (at_fork.stage, at_fork.parent_id) == (r["fork_action"]["stage"], r["fork_action"]["parent_id"])
    assert nodes["original"][FORK_STEP].stage == r["original_action"]["stage"]
    assert at_fork.metric == fork["metric"] and nodes["original"][FORK_STEP].metric == orig["metric"]
    # the best node per branch is what each head's state says
    for name, key in (("original", "original_head"), ("fork", "fork_head")):
        good = [n for n in nodes[name].values() if n.score is not None]  # selection's number
        best = max(good, key=lambda n: (n.score, -n.step)) if good else None
        assert heads[key].values["best_id"] == (best.id if best else None)

    # the metric plots of both branches were drawn
    images = pngs(nb)
    assert len(images) == 2 and all(img.startswith(b"\x89PNG\r\n\x1a\n") for img in images)


def _task(root: Path, comp_id: str, variant: int, leaderboard: list[float]) -> Path:
    """A toy task with its own id and leaderboard; the stub's answers differ by variant."""
    task = make_toy_task(root)
    (task / "config.yaml").write_text((task / "config.yaml").read_text().replace("id: toy", f"id: {comp_id}"))
    (task / "description.md").write_text((task / "description.md").read_text() + f"\nVariant {variant}.\n")
    pd.DataFrame({"score": leaderboard}).to_csv(task / "leaderboard.csv", index=False)
    return task


def test_compare_strategies_notebook(tmp_path, kernels, stub):
    # the toy submission scores 0.5: a medal on a 0..0.6 board, below median on a 0.2..1.0 board
    ta = _task(tmp_path / "ta", "toy-a", 1, [0.6 * i / 29 for i in range(30)])
    tb = _task(tmp_path / "tb", "toy-b", 0, [0.2 + 0.8 * i / 29 for i in range(30)])
    out = tmp_path / "sweep"
    nb = execute("02_compare_strategies.ipynb", kernels, {
        "ITS_MLE_NOTEBOOK_TASKS": os.pathsep.join([str(ta), str(tb)]), "ITS_MLE_NOTEBOOK_BASE_URL": stub.base_url,
        "ITS_MLE_NOTEBOOK_STRATEGIES": "aide self_consistency", "ITS_MLE_NOTEBOOK_SEEDS": "2",
        "ITS_MLE_NOTEBOOK_STEPS": "2", "ITS_MLE_NOTEBOOK_OUT": str(out),
    })
    r = recap(nb)
    rows = [[stub.model, "aide"], [stub.model, "self_consistency"]]
    assert r["cells"] == 8 and r["exit_code"] == 0 and r["rows"] == rows
    assert r["per_run_rows"] == 8 and r["statuses"] == ["ok"]

    # the table shown is the sweep's results table: one row per model + strategy
    (table_cell,) = tagged(nb, "results-table")
    shown = next(o["data"] for o in table_cell.outputs if o.output_type == "execute_result")
    assert "<table" in shown["text/html"]
    results = pd.read_csv(out / "results.csv")
    assert sorted(map(list, zip(results["model"], results["strategy"]))) == rows
    text = shown["text/plain"]
    for model, strategy in rows:
        assert re.search(rf"{re.escape(model)}\s+{strategy}\b", text), text
    # ... with the sweep's own numbers: every rate, as pass@k and as mean, for both rows
    assert len(r["rates"]) == 2
    for row in results.to_dict("records"):
        shown_rates = r["rates"][f"{row['model']} / {row['strategy']}"]
        assert len(shown_rates) == 6
        for column, value in shown_rates.items():
            assert value == pytest.approx(row[column], nan_ok=True), column
    per_run = pd.read_csv(out / "per_run.csv")
    assert len(per_run) == 8 and set(per_run["status"]) == {"ok"}
    assert sorted(per_run["strategy"]) == ["aide"] * 4 + ["self_consistency"] * 4

    # rates, cost/score, and a self-consistency run's metric, outcomes, cost and candidates
    images = pngs(nb, "figures")
    assert r["figures"] == 6 and len(images) == 6
    assert all(img.startswith(b"\x89PNG\r\n\x1a\n") for img in images)
    assert Path(r["sweep_report"]).is_file() and Path(r["sweep_report"]).is_relative_to(out)
    run_report = Path(r["run_report"])
    assert run_report.is_file() and "__self_consistency__" in run_report.parent.parent.name
