"""The three strategy graphs with scripted fake models, a real sandbox and a checkpointer:
sampling modes, fan-out order and reduction, the selection rule, loop bounds, routing, and
resuming a fan-out that failed half-way (only the unfinished branches run again)."""

import json
import threading
import time

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from graphs.planner_coder import NO_PLAN, build_planner_coder_graph
from graphs.self_consistency import build_self_consistency_graph
from graphs.self_reflection import build_self_reflection_graph
from graphs.strategy import StrategyContext, StrategyServices
from nodes.sample import SamplingSupport
from tasks.competition import load_competition
from tests.conftest import RuleFakeModel, fenced, script_with_metric

REQUEST = "# Your job: write a first solution\nREQUEST-MARKER"


def make_services(tmp_path, task, coder, planner=None, *, lower=False, sampling="auto", workers=2):
    comp = load_competition(task)
    return StrategyServices(
        coder=coder, planner=planner or coder, system_text="SYSTEM", coder_system_prompt=True,
        planner_system_prompt=True, public_dir=comp.public_dir, sample_submission=comp.sample_submission,
        work_dir=tmp_path / "ws", exec_timeout=30, sandbox="plain", lower_is_better=lower,
        sampling=SamplingSupport(sampling), exec_slots=threading.BoundedSemaphore(workers))


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


# ----------------------------------------------------------------------------- self-consistency

SC_SCRIPTS = [script_with_metric(0.7), script_with_metric(None, crash=True), script_with_metric(0.9)]


def test_sc_asks_once_with_n_and_keeps_the_best_metric(tmp_path, toy_task):
    model = RuleFakeModel(rule=lambda text, kw: [fenced(s) for s in SC_SCRIPTS[: kw.get("n", 1)]])
    svc = make_services(tmp_path, toy_task, model)
    # a crash here is the point: no repair calls (tests/unit/test_strategy_repairs.py)
    res, events = run(build_self_consistency_graph, svc, samples=3, repairs=0)
    assert len(model.calls) == 1 and model.calls[0][1]["n"] == 3  # one request for all samples
    assert svc.sampling.n_supported is True
    details = res["details"]
    assert details["kept"] == 2 and details["rule"] == "best validation metric"
    assert [a["index"] for a in details["attempts"]] == [0, 1, 2]  # reduction in index order
    assert [a["metric"] for a in details["attempts"]] == [0.7, None, 0.9]
    assert "boom" in details["attempts"][1]["failure"]
    assert res["execution"]["metric"] == 0.9 and "METRIC: 0.9" in res["candidate"]["code"]
    calls = res["candidate"]["usage"]["calls"]
    assert [(c["role"], c["choices"]) for c in calls] == [("sampler", 3)]  # usage counted once
    assert res["candidate"]["usage"]["prompt_tokens"] == 100
    assert sorted(p.name for p in (tmp_path / "ws" / "n0").iterdir()) == ["s0", "s1", "s2"]
    executed = sorted(e["candidate"] for e in events if e.get("stage") == "executed")
    assert executed == [1, 2, 3]


def test_sc_falls_back_to_concurrent_seeded_requests_when_n_is_ignored(tmp_path, toy_task):
    by_seed: dict[int, str] = {}

    def rule(text, kw):  # a server that ignores n: one choice, varied by the seed only
        seed = kw["seed"]
        by_seed.setdefault(seed, SC_SCRIPTS[len(by_seed) % 3])
        return fenced(by_seed[seed])

    model = RuleFakeModel(rule=rule)
    svc = make_services(tmp_path, toy_task, model)
    # a crash here is the point: no repair calls (tests/unit/test_strategy_repairs.py)
    res, _ = run(build_self_consistency_graph, svc, samples=3, repairs=0)
    # first the n=3 probe (answered with one choice), then the 2 missing samples concurrently
    assert [kw.get("n") for _, kw in model.calls].count(3) == 1
    assert len(model.calls) == 3
    assert len({kw["seed"] for _, kw in model.calls}) == 3  # distinct seeds, distinct samples
    assert svc.sampling.n_supported is False and "1 of n=3" in svc.sampling.why
    assert res["details"]["sampling"].startswith("n returned 1")
    assert res["execution"]["metric"] == 0.9
    # the run remembers: the next fan-out does not probe again
    model.calls.clear()
    run(build_self_consistency_graph, svc, thread="t2", samples=3, repairs=0)
    assert len(model.calls) == 3 and all("n" not in kw for _, kw in model.calls)


def test_sc_forced_concurrent_never_sends_n(tmp_path, toy_task):
    model = RuleFakeModel(rule=lambda text, kw: fenced(script_with_metric(kw["seed"] % 9973 / 9973)))
    svc = make_services(tmp_path, toy_task, model, sampling="concurrent")
    res, _ = run(build_self_consistency_graph, svc, samples=4)
    assert len(model.calls) == 4 and all("n" not in kw for _, kw in model.calls)
    assert len(res["details"]["attempts"]) == 4
    assert res["candidate"]["usage"]["llm_calls"] == 4


def test_sc_lower_is_better_and_judge_when_nothing_runs(tmp_path, toy_task):
    scripts = [script_with_metric(0.3), script_with_metric(0.2), script_with_metric(0.25)]
    model = RuleFakeModel(rule=lambda text, kw: [fenced(s) for s in scripts])
    res, _ = run(build_self_consistency_graph, make_services(tmp_path, toy_task, model, lower=True), samples=3)
    assert res["details"]["kept"] == 1

    crashes = [script_with_metric(i, crash=True) for i in range(3)]

    def rule(text, kw):
        if "Your job: pick the most promising" in text:
            return '{"best": 2, "reason": "gets furthest"}'
        return [fenced(s) for s in crashes]

    judge_model = RuleFakeModel(rule=rule)
    # a crash here is the point: no repair calls (tests/unit/test_strategy_repairs.py)
    res, _ = run(build_self_consistency_graph, make_services(tmp_path / "j", toy_task, judge_model), samples=3,
                 repairs=0)
    assert res["details"]["kept"] == 2 and res["details"]["rule"].endswith("LLM judge")
    (judge_prompt,) = judge_model.texts("Your job: pick the most promising")
    assert all(f"## Candidate {i}" in judge_prompt for i in range(3))
    assert [c["role"] for c in res["candidate"]["usage"]["calls"]] == ["sampler", "judge"]


class Crash(BaseException):
    """Not an LLM error (those are recorded): the process dying under the graph."""


def _finished(log):
    return log.is_file() and "METRIC" in log.read_text()


def test_sc_resume_reruns_only_the_unfinished_branch(tmp_path, toy_task):
    failed_once = threading.Event()

    def rule(text, kw):
        if kw["seed"] == seeds[2] and not failed_once.is_set():
            failed_once.set()
            deadline = time.monotonic() + 20  # let the other two branches finish first
            while time.monotonic() < deadline and not all(
                    _finished(tmp_path / "ws" / "n0" / f"s{i}" / "output.log") for i in (0, 1)):
                time.sleep(0.05)
            time.sleep(0.5)
            raise Crash()
        return fenced(script_with_metric(0.5 + (kw["seed"] % 7) / 100))

    from graphs.strategy import seed_of
    seeds = [seed_of({"seed": 3}, "sample", i) for i in range(3)]
    model = RuleFakeModel(rule=rule)
    svc = make_services(tmp_path, toy_task, model, sampling="concurrent")
    saver = InMemorySaver()
    graph = build_self_consistency_graph().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    ctx = StrategyContext(services=svc, samples=3)
    with pytest.raises(Crash):
        graph.invoke({"request": REQUEST, "label": "n0", "seed": 3}, config, context=ctx)
    first = sorted(kw["seed"] for _, kw in model.calls)
    assert first == sorted(seeds)
    model.calls.clear()
    out = graph.invoke(None, config, context=ctx)  # resume
    assert [kw["seed"] for _, kw in model.calls] == [seeds[2]]  # only the failed branch again
    assert [a["index"] for a in out["result"]["details"]["attempts"]] == [0, 1, 2]


# ----------------------------------------------------------------------------- self-reflection


def reflection(accept, critique="make it better", target="coder"):
    return json.dumps({"accept": accept, "critique": critique, "target": target})


def test_sr_stops_after_r_rounds_and_feeds_the_critique_back(tmp_path, toy_task):
    rounds = iter([0.6, 0.7, 0.8, 0.9])

    def rule(text, kw):
        if "Your job: reflect" in text:
            return reflection(False, critique=f"CRITIQUE-{len(model.texts('Your job: reflect'))}")
        return fenced(script_with_metric(next(rounds)))

    model = RuleFakeModel(rule=rule)
    res, events = run(build_self_reflection_graph, make_services(tmp_path, toy_task, model), rounds=3)
    coder = [t for t, _ in model.calls if "Your job: reflect" not in t]
    assert len(coder) == 3 and len(model.texts("Your job: reflect")) == 2  # no reflection after the last
    assert "REQUEST-MARKER" in coder[1] and "CRITIQUE-1" in coder[1] and "METRIC: 0.6" in coder[1]
    assert "CRITIQUE-2" in coder[2]
    assert res["execution"]["metric"] == 0.8 and res["details"]["kept_round"] == 3
    assert res["details"]["rounds"][-1]["stop"] == "reached 3 rounds"
    assert [c["role"] for c in res["candidate"]["usage"]["calls"]] == [
        "coder", "reflector", "coder", "reflector", "coder"]
    assert [e["round"] for e in events if e.get("stage") == "executing"] == [1, 2, 3]


def test_sr_accept_stops_and_a_worse_round_returns_the_best(tmp_path, toy_task):
    model = RuleFakeModel(rule=lambda text, kw: reflection(True) if "Your job: reflect" in text
                          else fenced(script_with_metric(0.6)))
    res, _ = run(build_self_reflection_graph, make_services(tmp_path, toy_task, model), rounds=5)
    assert len(model.calls) == 2 and res["details"]["rounds"][0]["stop"] == "the reflector accepted it"

    metrics = iter([0.8, 0.7])
    model2 = RuleFakeModel(rule=lambda text, kw: reflection(False) if "Your job: reflect" in text
                           else fenced(script_with_metric(next(metrics))))
    res2, _ = run(build_self_reflection_graph, make_services(tmp_path / "b", toy_task, model2), rounds=5)
    assert res2["execution"]["metric"] == 0.8 and res2["details"]["kept_round"] == 1
    assert res2["details"]["rounds"][-1]["stop"] == "the metric stopped improving"


def test_sr_a_failed_run_is_never_accepted(tmp_path, toy_task):
    scripts = iter([script_with_metric(1, crash=True), script_with_metric(0.75)])
    model = RuleFakeModel(rule=lambda text, kw: reflection(True) if "Your job: reflect" in text
                          else fenced(next(scripts)))
    # a crash here is the point: no repair calls (tests/unit/test_strategy_repairs.py)
    res, _ = run(build_self_reflection_graph, make_services(tmp_path, toy_task, model), rounds=2,
                 repairs=0)
    assert res["execution"]["metric"] == 0.75  # the crash was revised although the model "accepted" it
    assert res["details"]["rounds"][0]["accept"] is False


# ----------------------------------------------------------------------------- planner -> coder

PLAN = {"approach": "APPROACH-{}", "libraries": ["pandas"], "feature_steps": ["threshold x1"],
        "validation_scheme": "holdout"}


def test_pc_routes_feedback_to_coder_or_planner(tmp_path, toy_task):
    verdicts = iter([reflection(False, "IMPL-BUG", "coder"), reflection(False, "WRONG-APPROACH", "planner")])
    metrics = iter([0.5, 0.6, 0.7])
    plans = iter([1, 2])

    def coder_rule(text, kw):
        if "Your job: reflect" in text:
            return next(verdicts)
        return fenced(script_with_metric(next(metrics)))

    coder = RuleFakeModel(rule=coder_rule)
    planner = RuleFakeModel(rule=lambda text, kw: json.dumps({**PLAN, "approach": f"APPROACH-{next(plans)}"}))
    res, events = run(build_planner_coder_graph, make_services(tmp_path, toy_task, coder, planner), rounds=3)
    assert len(planner.calls) == 2  # once at the start, once after the "planner" critique
    assert "WRONG-APPROACH" in planner.calls[1][0] and "APPROACH-1" in planner.calls[1][0]
    assert all("Your job now: plan" in t for t, _ in planner.calls)
    code_prompts = [t for t, _ in coder.calls if "Implement this plan" in t]
    assert len(code_prompts) == 3
    assert "APPROACH-1" in code_prompts[0] and "Your previous implementation" not in code_prompts[0]
    assert "IMPL-BUG" in code_prompts[1] and "APPROACH-1" in code_prompts[1]  # coder fixes, same plan
    assert "APPROACH-2" in code_prompts[2] and "Your previous implementation" not in code_prompts[2]
    assert res["details"]["plans_made"] == 2 and res["execution"]["metric"] == 0.7
    assert [c["role"] for c in res["candidate"]["usage"]["calls"]] == [
        "planner", "coder", "reflector", "coder", "reflector", "planner", "coder"]
    assert [e["stage"] for e in events if e.get("stage") in ("planning", "coding")] == [
        "planning", "coding", "coding", "planning", "coding"]


def test_pc_unusable_plan_falls_back(tmp_path, toy_task):
    coder = RuleFakeModel(rule=lambda text, kw: reflection(True) if "Your job: reflect" in text
                          else fenced(script_with_metric(0.6)))
    planner = RuleFakeModel(rule=lambda text, kw: "I would use a random forest.")
    res, _ = run(build_planner_coder_graph, make_services(tmp_path, toy_task, coder, planner), rounds=2)
    (code_prompt,) = [t for t, _ in coder.calls if "Implement this plan" in t]
    assert NO_PLAN in code_prompt
    assert res["execution"]["metric"] == 0.6
    assert res["candidate"]["usage"]["calls"][0]["role"] == "planner"


# ----------------------------------------------------------------------------- in the tree search


@pytest.mark.parametrize("strategy", ["self_consistency", "self_reflection", "planner_coder"])
def test_strategy_expands_tree_nodes_through_the_cli(tmp_path, toy_task, strategy):
    from graphs.run import main
    from tests.doubles.stub import StubServer

    runs = tmp_path / "runs"
    with StubServer(supports_n=False) as server:
        rc = main(["--task", str(toy_task), "--strategy", strategy, "--steps", "2", "--samples", "3",
                   "--rounds", "2", "--base-url", server.base_url, "--run-dir", str(runs), "--run-id", "r",
                   "--exec-timeout", "30", "--sandbox", "plain"])
    assert rc == 0
    tree = json.loads((runs / "r" / "tree.json").read_text())
    summary = json.loads((runs / "r" / "summary.json").read_text())
    for node in tree["nodes"]:
        details = node["extra"]["strategy"]
        assert details["strategy"] == strategy
        # the node's cost is the sum of its calls, every one of them listed with its role
        assert node["llm_calls"] == len(node["calls"]) > 1
        assert node["prompt_tokens"] == sum(c["prompt_tokens"] for c in node["calls"])
        # the LLM reviews what ran cleanly; a run the facts call failed is not reviewed
        assert (node["calls"][-1]["role"] == "reviewer") == (not node["is_buggy"])
        if strategy == "self_consistency":
            assert len(details["attempts"]) == 3
            assert [c["role"] for c in node["calls"]].count("sampler") == 3
            kept = details["attempts"][details["kept"]]
            assert kept["metric"] == node["metric"]
        else:
            assert 1 <= len(details["rounds"]) <= 2
        if not node["is_buggy"]:
            assert (runs / "r" / "submissions" / f"{node['id']}.csv").is_file()
    assert summary["strategy"] == strategy
    assert sum(r["calls"] for r in summary["cost_by_role"].values()) == summary["llm_calls"]


# ----------------------------------------------------------------------------- the selection rule


def _attempt(tmp_path, index, metric, labels, *, failure=None):
    import pandas as pd

    from nodes.execute import Execution
    from nodes.operators import Candidate
    from nodes.select import Attempt

    path = tmp_path / f"sub{index}.csv"
    pd.DataFrame({"id": range(len(labels)), "label": labels}).to_csv(path, index=False)
    if failure is None and metric is None:
        failure = "the script printed no 'METRIC: <float>' line"
    return Attempt(index=index, candidate=Candidate(code="print(1)\n"),
                   execution=Execution(exit_code=0, metric=metric, failure=failure, submission_file=str(path)))


def test_select_breaks_metric_ties_by_agreement_and_handles_metric_less(tmp_path):
    from nodes.select import select_best

    tied = [_attempt(tmp_path, 0, 0.9, [0, 0, 0, 1]), _attempt(tmp_path, 1, 0.8, [1, 1, 0, 1]),
            _attempt(tmp_path, 2, 0.9, [1, 1, 0, 0]), _attempt(tmp_path, 3, 0.9, [1, 1, 1, 0])]
    chosen = select_best(tied, lower_is_better=False)
    # agreement with the others: #2 (1/4 + 3/4 + 3/4) / 3 beats #3 (0 + 2/4 + 3/4) / 3 and #0
    assert chosen.index == 2 and chosen.rule.startswith("tie on the best validation metric; majority agreement")
    metric_less = [_attempt(tmp_path, 0, None, [0, 1, 0, 1]), _attempt(tmp_path, 1, None, [0, 1, 0, 0]),
                   _attempt(tmp_path, 2, None, [1, 0, 1, 0])]
    chosen = select_best(metric_less, lower_is_better=False)
    assert chosen.index == 1 and chosen.rule.startswith("no valid metric")
    same = [_attempt(tmp_path, 5, 0.5, [1, 1]), _attempt(tmp_path, 4, 0.5, [1, 1])]
    chosen = select_best(same, lower_is_better=True)  # full agreement and no judge: lowest index
    assert chosen.index == 4 and chosen.rule.endswith("lowest index")


def test_select_without_submissions_prefers_the_run_that_got_furthest(tmp_path):
    from nodes.execute import Execution
    from nodes.operators import Candidate
    from nodes.select import Attempt, select_best

    def att(i, **ex):
        return Attempt(index=i, candidate=Candidate(code="x = 1\n"), execution=Execution(**ex))

    attempts = [att(0, skipped="static check: undefined name", failure="static check"),
                att(1, exit_code=1, failure="crashed"),
                att(2, exit_code=0, metric=0.7, failure="no submission/submission.csv was written"),
                att(3, exit_code=0, failure="the script printed no 'METRIC: <float>' line")]
    chosen = select_best(attempts, lower_is_better=False)
    assert chosen.index == 2 and "furthest" in chosen.rule
