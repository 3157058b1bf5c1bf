"""Compute budgets (`--budget-tokens`, `--budget-seconds`): the stop rule, real CLI runs against
the scripted endpoint that stop at the step the rule predicts from the endpoint's own token
counts, the summary, resume with a larger budget, self-consistency counting all its samples, and
concurrent executions sharing the run's sandbox limits."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

import nodes.execute
from benchmark.results import Cell, aggregate, markdown_table, per_run_frame, run_row
from graphs.run import main
from graphs.search import build_search_graph
from graphs.self_consistency import build_self_consistency_graph
from graphs.settings import RunServices, RunSettings, SearchContext
from graphs.strategy import StrategyContext, StrategyServices
from nodes.budget import Budget, Cost, budget_stop
from nodes.sample import SamplingSupport
from nodes.tree import Node, NodeStore, Tree
from sandbox.limits import Limits, MiB
from tasks.competition import load_competition
from tests.conftest import RuleFakeModel, fenced, make_toy_task
from tests.doubles.stub import StubServer, chat_completion
from views import report

# the requests that start a step (draft, improve, debug); the others (review, repair, judge) join it
STEP_MARKERS = ("# Your job: write a first solution", "# Your job: improve a working solution",
                "# Your job: fix a failing solution")
COMPARED = ("id", "step", "parent_id", "stage", "plan", "code", "metric", "is_buggy", "bug_reason",
            "review", "prompt_tokens", "completion_tokens")


def expected_stop(costs: list[float], budget: float) -> int | None:
    """The rule, stated independently of the code: before step k, stop when the use so far has
    reached the budget or the use plus the largest step cost so far would pass it. The step the
    rule stops at, given the costs of the steps that ran (None: it does not stop there)."""
    used, largest = 0.0, 0.0
    for k, cost in enumerate([*costs, None]):
        if used >= budget or used + largest > budget:
            return k
        if cost is None:
            return None
        used, largest = used + cost, max(largest, cost)
    return None


def step_tokens(bodies, *, samples_share_a_step: bool = False) -> list[int]:
    """Prompt + completion tokens per step, as the scripted endpoint counts them for the requests
    it was sent (its usage is a pure function of each request). `samples_share_a_step`: requests
    with the same prompt in a row are one step's samples (self-consistency without `n`)."""
    steps: list[int] = []
    last_prompt = None
    for body in bodies:
        text = "\n".join(str(m.get("content", "")) for m in body.get("messages") or [])
        if any(marker in text for marker in STEP_MARKERS):
            if not (samples_share_a_step and text == last_prompt):
                steps.append(0)
            last_prompt = text
        if not steps:  # before the first step (e.g. asking for the metric's direction)
            continue
        usage = chat_completion(body, model="scripted-model")["usage"]
        steps[-1] += usage["prompt_tokens"] + usage["completion_tokens"]
    return steps


def run_cli(stub: StubServer, *args) -> list[dict]:
    """One real `graphs.run` against the scripted endpoint; the request bodies it sent."""
    stub.bodies.clear()
    assert main([*map(str, args), "--base-url", stub.base_url, "--exec-timeout", "30", "--sandbox", "plain",
                 "--seed", "7"]) == 0
    return list(stub.bodies)


def tree_of(run: Path) -> list[dict]:
    return [{k: n[k] for k in COMPARED} for n in json.loads((run / "tree.json").read_text())["nodes"]]


def summary_of(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


@pytest.fixture(scope="module")
def stub():
    with StubServer() as server:  # honours n: self-consistency samples in one request
        yield server


@pytest.fixture(scope="module")
def reference(tmp_path_factory, stub):
    """A run of 5 steps without a budget: its tree and its steps' token counts."""
    tmp = tmp_path_factory.mktemp("budget-ref")
    task = make_toy_task(tmp / "toy")
    bodies = run_cli(stub, "--task", task, "--steps", 5, "--run-dir", tmp / "runs", "--run-id", "ref")
    costs = step_tokens(bodies)
    assert len(costs) == 5
    nodes = json.loads((tmp / "runs" / "ref" / "tree.json").read_text())["nodes"]
    for node in nodes:  # every execution of a step counts: a repaired script's first run too
        reruns = [r for r in node["extra"].get("repairs", []) if r.get("fixed") is not None]
        assert node["script_seconds"] >= node["exec_seconds"] + 0.01 * len(reruns)
    assert any(node["extra"].get("repairs") for node in nodes)  # the scripted crashes got repaired
    return {"task": task, "tree": tree_of(tmp / "runs" / "ref"), "costs": costs}


# ----------------------------------------------------------------------------- the rule


def test_rule_runs_the_first_step_and_stops_before_a_step_that_would_pass():
    budget = Budget(tokens=1000)
    assert budget_stop(budget, Cost(), Cost()) is None  # nothing used, nothing predicted: step 1 runs
    assert budget_stop(budget, Cost(400), Cost(400)) is None  # 800 <= 1000
    assert budget_stop(budget, Cost(600), Cost(400)) is None  # exactly the budget still fits
    stop = budget_stop(budget, Cost(601), Cost(400))
    assert (stop.measure, stop.used, stop.predicted, stop.limit) == ("tokens", 601, 400, 1000)
    assert budget_stop(budget, Cost(1000), Cost(0)).measure == "tokens"  # spent: no step predicts less
    assert budget_stop(Budget(), Cost(10**9, 10**6), Cost(10**9, 10**6)) is None  # no budget
    assert budget_stop(Budget(seconds=10.0), Cost(10**9, 6.0), Cost(1, 4.5)).measure == "seconds"


def test_tree_tallies_the_branch_and_a_replayed_node_replaces_its_cost():
    tree = Tree(lower_is_better=False)
    tree.add(Node(id="00000-0", step=0, stage="draft", prompt_tokens=100, completion_tokens=50,
                  llm_seconds=1.5, script_seconds=2.0, exec_seconds=2.0))
    # a node written before script_seconds existed counts its kept run
    tree.add(Node(id="00001-0", step=1, stage="draft", prompt_tokens=300, completion_tokens=20,
                  llm_seconds=0.5, exec_seconds=4.0))
    assert tree.spent == Cost(470, 8.0) and tree.largest_step == Cost(320, 4.5)
    tree.add(Node(id="00001-0", step=1, stage="draft", prompt_tokens=10, completion_tokens=0))
    assert tree.spent == Cost(160, 3.5) and tree.largest_step == Cost(150, 3.5)


# ----------------------------------------------------------------------------- CLI runs


def test_token_budget_stops_at_the_predicted_step_and_resume_with_more_continues(
        tmp_path, stub, reference, capsys):
    costs = reference["costs"]
    # a budget the rule must stop at before step 4: the use of 3 steps plus the largest of them
    # passes it by one token
    budget = sum(costs[:3]) + max(costs[:3]) - 1
    expected = expected_stop(costs, budget)
    assert expected == 3  # computed from the endpoint's counts, not read off the run
    runs = tmp_path / "runs"
    bodies = run_cli(stub, "--task", reference["task"], "--steps", 5, "--run-dir", runs, "--run-id", "b",
                     "--budget-tokens", budget)
    out = capsys.readouterr().out
    assert step_tokens(bodies) == costs[:expected]  # no step past the stop was even started
    assert tree_of(runs / "b") == reference["tree"][:expected]
    summary = summary_of(runs / "b")
    assert summary["budget"] == {"tokens": budget, "seconds": None}
    assert summary["used"]["tokens"] == sum(costs[:expected])
    assert summary["used"]["seconds"] > 0  # LLM + script seconds
    assert (summary["stopped_by"], summary["stopped_at_step"]) == ("budget", expected)
    assert summary["budget_stop"]["measure"] == "tokens"
    assert summary["budget_stop"]["predicted"] == max(costs[:expected])
    done = next(line for line in out.splitlines() if line.startswith("done: "))
    assert f"stopped by the tokens budget before step {expected + 1}" in done
    assert json.loads((runs / "b" / "run.json").read_text())["budget_tokens"] == budget
    assert "compute budget" in (runs / "b" / "report" / "report.md").read_text()

    # resumed as it was: the budget kept in run.json stops it again, no step is started
    assert step_tokens(run_cli(stub, "--resume", "b", "--run-dir", runs)) == []
    assert summary_of(runs / "b")["stopped_by"] == "budget"
    # resumed with a larger budget (a flag on resume overrides, as --steps does): on to the steps
    run_cli(stub, "--resume", "b", "--run-dir", runs, "--budget-tokens", 10 * sum(costs))
    assert json.loads((runs / "b" / "run.json").read_text())["budget_tokens"] == 10 * sum(costs)
    assert tree_of(runs / "b") == reference["tree"]
    summary = summary_of(runs / "b")
    assert (summary["stopped_by"], summary["stopped_at_step"]) == ("steps", 5)
    assert summary["used"]["tokens"] == sum(costs)
    assert "budget_stop" not in summary


def test_a_run_without_budget_records_none_and_the_steps(reference, tmp_path, stub):
    runs = tmp_path / "runs"
    run_cli(stub, "--task", reference["task"], "--steps", 1, "--run-dir", runs, "--run-id", "free")
    summary = summary_of(runs / "free")
    assert summary["budget"] == {"tokens": None, "seconds": None}
    assert (summary["stopped_by"], summary["stopped_at_step"]) == ("steps", 1)
    assert summary["used"]["tokens"] == reference["costs"][0]


def test_self_consistency_budget_counts_every_sample(tmp_path, stub):
    task = make_toy_task(tmp_path / "toy")
    # N requests per step (no `n`): the budget must count every sample's request, not the kept one's
    args = ("--task", task, "--strategy", "self_consistency", "--samples", 3, "--workers", 3,
            "--sampling", "concurrent")
    ref_bodies = run_cli(stub, *args, "--steps", 3, "--run-dir", tmp_path / "ref", "--run-id", "sc")
    costs = step_tokens(ref_bodies, samples_share_a_step=True)
    assert len(costs) == 3
    assert sum(any(m in str(b) for m in STEP_MARKERS) for b in ref_bodies) == 9  # 3 samples x 3 steps
    ref_nodes = json.loads((tmp_path / "ref" / "sc" / "tree.json").read_text())["nodes"]
    for node, cost in zip(ref_nodes, costs):  # a node holds every sample's tokens (and judge, review)
        assert node["prompt_tokens"] + node["completion_tokens"] == cost
        assert [c["role"] for c in node["calls"]].count("sampler") == 3
        attempts = node["extra"]["strategy"]["attempts"]
        assert len(attempts) == 3
        # and every candidate's executions, not only the kept one's
        assert node["script_seconds"] == pytest.approx(sum(a["script_seconds"] for a in attempts), abs=0.01)
        assert node["script_seconds"] >= node["exec_seconds"]
    budget = sum(costs[:2]) + max(costs[:2]) - 1
    assert expected_stop(costs, budget) == 2
    run_cli(stub, *args, "--steps", 3, "--run-dir", tmp_path / "runs", "--run-id", "sc", "--budget-tokens",
            budget)
    summary = summary_of(tmp_path / "runs" / "sc")
    assert (summary["steps"], summary["stopped_by"], summary["stopped_at_step"]) == (2, "budget", 2)
    assert summary["used"]["tokens"] == sum(costs[:2])


# ----------------------------------------------------------------------------- seconds, in the graph

SLOW_SCRIPT = """import time
time.sleep(0.3)
import pandas as pd
test = pd.read_csv("input/test.csv")
pd.DataFrame({"id": test.id, "label": 0}).to_csv("submission/submission.csv", index=False)
print("METRIC: 0.5")
"""


def test_seconds_budget_counts_script_seconds_and_stops_by_the_rule(tmp_path, toy_task):
    def rule(text, kw):
        if "Your job: review" in text:
            return '{"is_bug": false, "summary": "works"}'
        return fenced(SLOW_SCRIPT)

    comp = load_competition(toy_task)
    settings = RunSettings(run_id="t", task_dir=str(toy_task), exec_timeout=30, sandbox="plain",
                           lower_is_better=False, repairs=0, steps=12, budget_seconds=2.0)
    store = NodeStore(tmp_path / "nodes.sqlite")
    svc = RunServices(settings=settings, run_dir=tmp_path / "run", competition=comp,
                      llm=RuleFakeModel(rule=rule), system_text="SYSTEM", use_system_prompt=True,
                      store=store, tree=store.load_tree(False), lower_is_better=False)
    graph = build_search_graph().compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}, "recursion_limit": 200}
    events = list(graph.stream({"step": 0}, config, context=SearchContext(services=svc), stream_mode="custom"))
    nodes = store.all()
    # every step sleeps 0.3 s in its script: 12 steps could not fit in 2 s
    assert 1 <= len(nodes) < 12 and all(n.script_seconds >= 0.3 for n in nodes)
    costs = [n.llm_seconds + n.script_seconds for n in nodes]
    assert expected_stop(costs, 2.0) == len(nodes)
    stopped = graph.get_state(config).values["stopped"]
    assert (stopped["by"], stopped["measure"], stopped["step"]) == ("budget", "seconds", len(nodes))
    assert any(e.get("kind") == "info" and "seconds budget" in e["message"] for e in events)
    # the same graph, given a larger budget (as a resume or Studio would send it), goes on
    svc.settings = settings.model_copy(update={"budget_seconds": 10_000.0, "steps": len(nodes) + 1})
    list(graph.stream({}, config, context=SearchContext(services=svc), stream_mode="custom"))
    assert len(store.all()) == len(nodes) + 1
    assert graph.get_state(config).values["stopped"] == {"by": "steps", "step": len(nodes) + 1}
    store.close()


# ----------------------------------------------------------------------------- shared limits


@pytest.mark.parametrize("mem_mb, samples, workers", [(900, 3, 3), (900, 3, 2), (None, 2, 4)])
def test_concurrent_executions_share_the_runs_limits(tmp_path, toy_task, monkeypatch, mem_mb, samples,
                                                     workers):
    seen: list[Limits] = []
    lock = threading.Lock()
    real = nodes.execute.run_script

    def recording(*args, **kwargs):  # what the executor hands the sandbox
        with lock:
            seen.append(kwargs["limits"])
        return real(*args, **kwargs)

    monkeypatch.setattr(nodes.execute, "run_script", recording)
    run_limits = RunSettings(mem_limit_mb=mem_mb, cpu_limit_s=50.0).limits()
    comp = load_competition(toy_task)
    model = RuleFakeModel(rule=lambda text, kw: [fenced('print("METRIC: 0.5")\n')] * kw.get("n", 1))
    svc = StrategyServices(
        coder=model, planner=model, system_text="SYSTEM", coder_system_prompt=True,
        planner_system_prompt=True, public_dir=comp.public_dir, sample_submission=comp.sample_submission,
        work_dir=tmp_path / "ws", exec_timeout=30, sandbox="plain", lower_is_better=False,
        sampling=SamplingSupport("auto"), exec_slots=threading.BoundedSemaphore(workers), limits=run_limits)
    graph = build_self_consistency_graph().compile(checkpointer=InMemorySaver())
    graph.invoke({"request": "REQUEST", "label": "n0", "seed": 1}, {"configurable": {"thread_id": "t"}},
                 context=StrategyContext(services=svc, samples=samples, workers=workers, repairs=0,
                                         judge=False))
    assert len(seen) == samples
    at_once = min(samples, workers)
    run_memory = run_limits.memory()  # the default too: half the RAM
    assert {lim.memory_bytes for lim in seen} == {run_memory // at_once}
    assert at_once * seen[0].memory() <= run_memory  # together within the run's limit
    if mem_mb is not None:
        assert at_once * seen[0].memory() > run_memory - at_once * MiB
    # the rest is per process or per script as it was (the CPU limit is RLIMIT_CPU per process)
    assert {(lim.processes, lim.cpu_seconds, lim.file_bytes) for lim in seen} == {
        (run_limits.processes, 50.0, run_limits.file_bytes)}


def test_one_execution_at_a_time_keeps_the_whole_limit():
    limits = Limits(memory_bytes=600 * MiB)
    assert limits.shared(1) is limits
    assert limits.shared(4).memory_bytes == 150 * MiB


# ----------------------------------------------------------------------------- tables and report


def _cell(tmp_path: Path, run_id: str, summary: dict | None) -> Cell:
    run = tmp_path / run_id
    run.mkdir()
    if summary is not None:
        (run / "summary.json").write_text(json.dumps(summary))
    return Cell(run_id=run_id, task_id="toy", task_dir="", gradable=False, has_medals=False,
                strategy="aide", model="m", seed=0, run_path=run)


BASE = {"steps": 3, "prompt_tokens": 10, "completion_tokens": 5, "valid_submission": True,
        "lower_is_better": False, "selection": {"by": "self_report"}}


def test_results_tables_show_budget_and_use_and_read_old_summaries(tmp_path):
    cells = [
        _cell(tmp_path, "old", BASE),  # written before budgets existed
        _cell(tmp_path, "b1", {**BASE, "budget": {"tokens": 1000, "seconds": None},
                               "used": {"tokens": 900, "seconds": 4.0}, "stopped_by": "budget"}),
        _cell(tmp_path, "b2", {**BASE, "budget": {"tokens": 1000, "seconds": None},
                               "used": {"tokens": 700, "seconds": 2.0}, "stopped_by": "steps"}),
        _cell(tmp_path, "failed", None),
    ]
    rows = [run_row(c) for c in cells]
    assert [(r["budget_tokens"], r["used_tokens"], r["stopped_by"]) for r in rows] == [
        (None, None, None), (1000, 900, "budget"), (1000, 700, "steps"), (None, None, None)]
    agg = aggregate(per_run_frame(rows), k=1)
    (row,) = agg.to_dict("records")
    assert row["budget_tokens"] == 1000 and row["budget_seconds"] is None
    assert (row["mean_used_tokens"], row["mean_used_seconds"], row["budget_stops"]) == (800, 3.0, 1)
    md = markdown_table(agg, 1)
    assert "budget tokens / s" in md.splitlines()[0] and "| 1000 / n/a | 800 / 3.0 | 1 of 4 |" in md
    # a sweep without budgets keeps its table as it was; differing budgets say so
    assert "budget" not in markdown_table(aggregate(per_run_frame(rows[:1]), k=1), 1).splitlines()[0]
    mixed = [*rows, run_row(_cell(tmp_path, "b3", {**BASE, "budget": {"tokens": 5, "seconds": None}}))]
    assert aggregate(per_run_frame(mixed), k=1)["budget_tokens"].tolist() == ["mixed"]


def test_report_has_one_line_about_the_budget():
    tree = {"run_id": "r", "lower_is_better": False, "nodes": []}
    summary = {"budget": {"tokens": 1000, "seconds": None}, "used": {"tokens": 900, "seconds": 4.0},
               "stopped_by": "budget", "stopped_at_step": 3,
               "budget_stop": {"measure": "tokens", "limit": 1000, "used": 900, "predicted": 400}}
    md = report.report_markdown(tree, summary, {})
    (line,) = [x for x in md.splitlines() if "compute budget" in x]
    assert "900 of 1000 tokens used" in line and "stopped by the tokens budget before step 4" in line
    assert "compute budget" not in report.report_markdown(tree, {"budget": {"tokens": None}}, {})
