"""Repairs inside a step for the strategy graphs: a self-consistency candidate or a round of
self-reflection / planner -> coder that fails the static check or crashes early is repaired
before it is selected or reflected on, every repair call is a `repairer` call of the node, and
`repairs=0` asks for none.

The fakes say exactly what the model said: fixed answers per kind of prompt (the repair prompt,
the sample request, the reflector), so concurrent branches do not race over a scripted list.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from graphs.planner_coder import build_planner_coder_graph
from graphs.search import build_search_graph
from graphs.self_consistency import build_self_consistency_graph
from graphs.self_reflection import build_self_reflection_graph
from graphs.services import strategy_context
from graphs.settings import RunServices, RunSettings, SearchContext
from graphs.strategy import StrategyContext, seed_of
from nodes.tree import NodeStore
from tasks.competition import load_competition
from tests.conftest import RuleFakeModel, ai, fenced, script_with_metric, scripted_model
from tests.unit.test_strategies import REQUEST, make_services

REPAIR = "# Your job: repair a script"
REFLECT = "Your job: reflect"
# line 4 reads a name nobody defined: the static check stops it before it runs
UNDEFINED = script_with_metric(0.9).replace('print("METRIC: 0.9")', "print('METRIC:', X_val)")
# crashes within a second: the toy task has no valid.csv
EARLY_CRASH = 'import pandas as pd\n\nvalid = pd.read_csv("./input/valid.csv")\nprint(valid.shape)\n'
REPAIRED = script_with_metric(0.95)
OTHER = script_with_metric(0.6)


def run(builder, svc, checkpointer=None, thread="t", **ctx):
    graph = builder().compile(checkpointer=checkpointer or InMemorySaver())
    config = {"configurable": {"thread_id": thread}}
    events, final = [], None
    for mode, chunk in graph.stream({"request": REQUEST, "label": "n0", "seed": 3}, config,
                                    context=StrategyContext(services=svc, **ctx),
                                    stream_mode=["custom", "values"]):
        if mode == "custom":
            events.append(chunk)
        else:
            final = chunk
    return final["result"], events


def sc_rule(text, kw):
    """One request for both samples (n=2): candidate 0 has an undefined name, candidate 1 runs
    (0.6); a repair call answers with a script that runs (0.95)."""
    if REPAIR in text:
        return fenced(REPAIRED, plan="Define the metric before printing it.")
    return [fenced(UNDEFINED), fenced(OTHER)][: kw.get("n", 1)]


# ----------------------------------------------------------------------------- self-consistency


def test_sc_candidate_with_an_undefined_name_is_repaired_and_selected(tmp_path, toy_task):
    model = RuleFakeModel(rule=sc_rule)
    svc = make_services(tmp_path, toy_task, model, sampling="n")
    res, events = run(build_self_consistency_graph, svc, samples=2)
    details = res["details"]
    # without the repair candidate 0 would be a static failure and candidate 1 (0.6) the kept one
    assert details["kept"] == 0 and res["execution"]["metric"] == 0.95
    assert res["candidate"]["code"] == REPAIRED
    (rep,) = details["attempts"][0]["repairs"]
    assert rep["stage"] == "static" and rep["fixed"] is True and rep["line"] == 4
    assert "undefined name 'X_val'" in rep["error"] and rep["then"] == "valid, metric 0.95"
    assert "repairs" not in details["attempts"][1]
    assert [a["metric"] for a in details["attempts"]] == [0.95, 0.6]
    # the repair call: the stable prefix, the static problem, the numbered line, the whole script
    (repair_prompt,) = model.texts(REPAIR)
    assert repair_prompt.startswith("SYSTEM") and "line 4: undefined name 'X_val'" in repair_prompt
    assert "> 4 | print('METRIC:', X_val)" in repair_prompt and UNDEFINED.rstrip() in repair_prompt
    assert "n" not in model.calls[-1][1]  # the repair asks for one script
    # the expansion's cost lists the repair call with its role
    assert [(c["role"], c["choices"]) for c in res["candidate"]["usage"]["calls"]] == [
        ("sampler", 2), ("repairer", 1)]
    assert res["candidate"]["usage"]["prompt_tokens"] == 200
    repairing = [e for e in events if e.get("stage") == "repairing"]
    assert [(e["candidate"], e["attempt"]) for e in repairing] == [(1, 1)]
    # the repaired script ran in a workspace of its own beside the first
    assert "METRIC: 0.95" in (tmp_path / "ws" / "n0" / "s0-1" / "output.log").read_text()


def test_sc_zero_repairs_makes_no_repair_call(tmp_path, toy_task):
    model = RuleFakeModel(rule=sc_rule)
    svc = make_services(tmp_path, toy_task, model, sampling="n")
    res, events = run(build_self_consistency_graph, svc, samples=2, repairs=0)
    details = res["details"]
    assert details["kept"] == 1 and res["execution"]["metric"] == 0.6
    assert "undefined name 'X_val'" in details["attempts"][0]["failure"]
    assert all("repairs" not in a for a in details["attempts"])
    assert model.texts(REPAIR) == [] and len(model.calls) == 1
    assert [c["role"] for c in res["candidate"]["usage"]["calls"]] == ["sampler"]
    assert not any(e.get("stage") == "repairing" for e in events)


class Crash(BaseException):
    """Not an LLM error (those are recorded): the process dying under the graph."""


def test_sc_killed_during_a_repair_resumes_that_branch_as_a_unit(tmp_path, toy_task):
    died = threading.Event()
    other = tmp_path / "ws" / "n0" / "s1" / "output.log"  # candidate 1 needs no repair

    def rule(text, kw):
        if REPAIR in text and not died.is_set():
            died.set()
            deadline = time.monotonic() + 20  # let the other branch finish first
            while time.monotonic() < deadline and not (other.is_file() and "METRIC" in other.read_text()):
                time.sleep(0.05)
            time.sleep(0.5)
            raise Crash()
        return sc_rule(text, kw)

    model = RuleFakeModel(rule=rule)
    svc = make_services(tmp_path, toy_task, model, sampling="n")
    graph = build_self_consistency_graph().compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    ctx = StrategyContext(services=svc, samples=2)
    with pytest.raises(Crash):
        graph.invoke({"request": REQUEST, "label": "n0", "seed": 3}, config, context=ctx)
    model.calls.clear()
    out = graph.invoke(None, config, context=ctx)  # resume
    # the sample request and the finished branch are not asked again; the killed branch repairs again
    assert len(model.calls) == 1 and REPAIR in model.calls[0][0]
    details = out["result"]["details"]
    assert details["kept"] == 0 and details["attempts"][0]["repairs"][0]["fixed"] is True
    assert [c["role"] for c in out["result"]["candidate"]["usage"]["calls"]] == ["sampler", "repairer"]


# ----------------------------------------------------------------------------- self-reflection


def test_sr_early_crash_is_repaired_before_the_reflector_sees_it(tmp_path, toy_task):
    llm = scripted_model([
        ai(fenced(EARLY_CRASH), 300, 80),                      # coder, round 1
        ai(fenced(REPAIRED), 120, 60),                         # repairer
        ai(json.dumps({"accept": True, "critique": "fine", "target": "coder"}), 50, 5),  # reflector
    ])
    svc = make_services(tmp_path, toy_task, llm)
    res, events = run(build_self_reflection_graph, svc, rounds=3)
    (round1,) = res["details"]["rounds"]
    assert round1["metric"] == 0.95 and round1["failure"] is None and round1["accept"] is True
    (rep,) = round1["repairs"]
    assert rep["stage"] == "early_crash" and rep["fixed"] is True and rep["line"] == 3
    assert "FileNotFoundError" in rep["error"] and rep["then"] == "valid, metric 0.95"
    assert res["candidate"]["code"] == REPAIRED and res["execution"]["metric"] == 0.95
    # the repair request shows the traceback and the failing line; the reflector sees the repaired run
    repair_request = llm.seen[1][-1].content
    assert REPAIR in repair_request and 'File "solution.py", line 3' in repair_request
    assert '> 3 | valid = pd.read_csv("./input/valid.csv")' in repair_request
    reflector_request = llm.seen[2][-1].content
    assert REFLECT in reflector_request and "METRIC: 0.95" in reflector_request
    assert "valid.csv" not in reflector_request and "FileNotFoundError" not in reflector_request
    calls = res["candidate"]["usage"]["calls"]
    assert [c["role"] for c in calls] == ["coder", "repairer", "reflector"]
    assert res["candidate"]["usage"]["prompt_tokens"] == 470  # each call counted once
    assert [e["round"] for e in events if e.get("stage") == "repairing"] == [1]


def test_sr_zero_repairs_makes_no_repair_call(tmp_path, toy_task):
    llm = scripted_model([ai(fenced(EARLY_CRASH))])
    res, _ = run(build_self_reflection_graph, make_services(tmp_path, toy_task, llm), rounds=1, repairs=0)
    (round1,) = res["details"]["rounds"]
    assert "repairs" not in round1 and "FileNotFoundError" in round1["failure"]
    assert [c["role"] for c in res["candidate"]["usage"]["calls"]] == ["coder"] and len(llm.seen) == 1


def test_sr_late_crash_is_left_to_the_reflector(tmp_path, toy_task):
    late = "import time\ntime.sleep(0.6)\nraise RuntimeError('late')\n"
    llm = scripted_model([ai(fenced(late))])
    res, _ = run(build_self_reflection_graph, make_services(tmp_path, toy_task, llm), rounds=1,
                 repair_window_s=0.3)
    (round1,) = res["details"]["rounds"]
    assert "repairs" not in round1 and "RuntimeError: late" in round1["failure"] and len(llm.seen) == 1


def test_pc_shares_the_loop_repair(tmp_path, toy_task):
    plan = {"approach": "threshold x1", "libraries": ["pandas"], "feature_steps": ["x1"],
            "validation_scheme": "holdout"}

    def coder_rule(text, kw):
        if REPAIR in text:
            return fenced(REPAIRED)
        if REFLECT in text:
            return json.dumps({"accept": True, "critique": "fine", "target": "coder"})
        return fenced(EARLY_CRASH)

    coder = RuleFakeModel(rule=coder_rule)
    planner = RuleFakeModel(rule=lambda text, kw: json.dumps(plan))
    res, _ = run(build_planner_coder_graph, make_services(tmp_path, toy_task, coder, planner), rounds=2)
    (round1,) = res["details"]["rounds"]
    assert round1["repairs"][0]["stage"] == "early_crash" and round1["metric"] == 0.95
    assert [c["role"] for c in res["candidate"]["usage"]["calls"]] == [
        "planner", "coder", "repairer", "reflector"]
    assert "METRIC: 0.95" in coder.texts(REFLECT)[0]


# ----------------------------------------------------------------------------- in the tree search


def search_services(tmp_path, task, llm, **overrides) -> RunServices:
    comp = load_competition(task)
    settings = RunSettings(run_id="t", task_dir=str(task), exec_timeout=30, sandbox="plain",
                           lower_is_better=False, strategy="self_consistency", samples=2, steps=1,
                           llm_review=False, **overrides)
    store = NodeStore(tmp_path / "nodes.sqlite")
    svc = RunServices(settings=settings, run_dir=tmp_path / "run", competition=comp, llm=llm,
                      system_text="SYSTEM", use_system_prompt=True, store=store,
                      tree=store.load_tree(False), lower_is_better=False)
    svc.expander = build_self_consistency_graph().compile()
    svc.strategy_context = strategy_context(settings, svc, "", "")
    return svc


def test_strategy_context_carries_the_run_repair_settings(tmp_path, toy_task):
    svc = search_services(tmp_path, toy_task, RuleFakeModel(rule=sc_rule), repairs=1, repair_window_s=3.0,
                          known_errors=False)
    ctx = svc.strategy_context
    assert (ctx.repairs, ctx.repair_window_s, ctx.known_errors) == (1, 3.0, False)
    assert StrategyContext().repairs == RunSettings(run_id="x", task_dir="x").repairs  # same default


def test_repair_calls_land_in_the_tree_node(tmp_path, toy_task):
    seeds: list[int] = []

    def rule(text, kw):  # the embedded-server path samples concurrently, one seed per candidate
        if REPAIR in text:
            return fenced(REPAIRED)
        return fenced(UNDEFINED if kw.get("seed") == seeds[0] else OTHER)

    svc = search_services(tmp_path, toy_task, RuleFakeModel(rule=rule))
    seeds += [seed_of({"seed": svc.settings.seed * 1_000_003}, "sample", i) for i in range(2)]
    graph = build_search_graph().compile(checkpointer=InMemorySaver())
    list(graph.stream({"step": 0}, {"configurable": {"thread_id": "t"}, "recursion_limit": 100},
                      context=SearchContext(services=svc), stream_mode="custom"))
    (node,) = svc.store.all()
    assert not node.is_buggy and node.metric == 0.95 and node.code == REPAIRED
    assert sorted(c.role for c in node.calls) == ["repairer", "sampler", "sampler"]
    assert node.llm_calls == 3 and node.prompt_tokens == 300
    attempts = node.extra["strategy"]["attempts"]
    assert attempts[0]["repairs"][0]["stage"] == "static" and "repairs" not in attempts[1]
    assert (svc.run_dir / "submissions" / f"{node.id}.csv").is_file()


# ------------------------------------------------------------------ fragments of the shown script


def run_with_parent(builder, svc, parent, **ctx):
    graph = builder().compile(checkpointer=InMemorySaver())
    out = graph.invoke({"request": REQUEST, "label": "n0", "seed": 3, "parent_code": parent},
                       {"configurable": {"thread_id": "p"}}, context=StrategyContext(services=svc, **ctx))
    return out["result"]


def test_sr_answers_that_are_fragments_go_in_the_script_they_change(tmp_path, toy_task):
    """Round 1 answers a debug request with the lines it changed of the parent's script, round 2
    revises its own script with the lines it changed: each runs in the place it covers there."""
    from tests.unit.test_revert_repairs import FIX_FRAGMENT, LONG

    revised = FIX_FRAGMENT.replace("limit = 3", "limit = 2")
    llm = scripted_model([
        ai(fenced(FIX_FRAGMENT)),                                                    # coder, round 1
        ai(json.dumps({"accept": False, "critique": "lower the limit", "target": "coder"})),
        ai(fenced(revised)),                                                         # coder, round 2
    ])
    svc = make_services(tmp_path, toy_task, llm)
    res = run_with_parent(build_self_reflection_graph, svc, LONG, rounds=2, repairs=0)
    round1, round2 = res["details"]["rounds"]
    fixed = LONG.replace("np.float(1.0)", "float(1.0)")
    for rnd, replaced in ((round1, [7, 9]), (round2, [7, 9])):
        (rec,) = rnd["repairs"]
        assert rec["stage"] == "parent" and rec["fixed"] is True and rec["fragment"]["replaced"] == replaced
        assert rnd["metric"] == 0.9 and rnd["failure"] is None
    assert res["candidate"]["code"] == fixed  # the first of two equal results
    ran = sorted(svc.work_dir.rglob("solution.py"))
    assert [p.read_text() for p in ran] == [fixed, fixed.replace("limit = 3", "limit = 2")]
    assert [c["role"] for c in res["candidate"]["usage"]["calls"]] == ["coder", "reflector", "coder"]
    # splicing off: the fragment runs as it is, and fails the static check
    llm = scripted_model([ai(fenced(FIX_FRAGMENT)), ai(json.dumps({"accept": True, "critique": "", "target": "coder"}))])
    res = run_with_parent(build_self_reflection_graph, make_services(tmp_path / "off", toy_task, llm), LONG,
                          rounds=1, repairs=0, splice_fragments=False)
    (round1,) = res["details"]["rounds"]
    assert "repairs" not in round1 and "undefined name 'test'" in round1["failure"]


def test_sc_samples_that_are_fragments_of_the_parent_go_in_its_place(tmp_path, toy_task):
    from tests.unit.test_revert_repairs import FIX_FRAGMENT, LONG

    rule = RuleFakeModel(rule=lambda text, kw: [fenced(FIX_FRAGMENT)] * kw.get("n", 1))
    res = run_with_parent(build_self_consistency_graph, make_services(tmp_path, toy_task, rule), LONG,
                          samples=2, repairs=0)
    attempts = res["details"]["attempts"]
    assert len(attempts) == 2
    for att in attempts:
        (rec,) = att["repairs"]
        assert rec["stage"] == "parent" and rec["fixed"] is True
    assert res["execution"]["metric"] == 0.9 and res["candidate"]["code"] == LONG.replace("np.float(1.0)", "float(1.0)")
