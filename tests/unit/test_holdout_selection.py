"""Selection by the harness's held split (issue 16): a script that lies on its METRIC line is
never picked, the held rows stay out of prompts and out of the sandbox, a resume reuses the
split, and a task without one falls back with its one line.

The scripted model alternates between two scripts for a bundled task: an honest one (a random
forest, validated on rows it did not train on) and a liar (copies the sample submission and
prints a perfect METRIC line)."""

from __future__ import annotations

import itertools
import json
import threading

import pandas as pd
import pytest
from langgraph.checkpoint.memory import InMemorySaver

from graphs.search import build_search_graph
from graphs.self_consistency import build_self_consistency_graph
from graphs.services import held_split_for, planned_split
from graphs.settings import RunServices, RunSettings, SearchContext
from graphs.strategy import StrategyContext, StrategyServices
from nodes.operators import improve_prompt
from nodes.sample import SamplingSupport
from nodes.task_context import build_task_context
from nodes.tree import NodeStore
from tasks.competition import load_competition
from tasks.holdout import prepare_split
from tasks.prepare import prepare_task
from tests.conftest import RuleFakeModel, fenced
from views.export import export_run

HONEST = """import pandas as pd
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.metrics import accuracy_score, mean_squared_error
from sklearn.model_selection import train_test_split
train = pd.read_csv("input/train.csv")
test = pd.read_csv("input/test.csv")
sample = pd.read_csv("input/sample_submission.csv")
idc, target = sample.columns[0], sample.columns[1]
features = [c for c in test.columns if c != idc]
classify = not pd.api.types.is_numeric_dtype(train[target])
make = (lambda: RandomForestClassifier(n_estimators=60, random_state=0)) if classify else (
    lambda: RandomForestRegressor(n_estimators=60, random_state=0))
tr, va = train_test_split(train, test_size=0.25, random_state=0)
model = make().fit(tr[features], tr[target])
pred = model.predict(va[features])
metric = accuracy_score(va[target], pred) if classify else mean_squared_error(va[target], pred) ** 0.5
model = make().fit(train[features], train[target])
by_id = pd.Series(model.predict(test[features]), index=test[idc])
sample[target] = by_id.reindex(sample[idc]).values
sample.to_csv("submission/submission.csv", index=False)
print(f"METRIC: {metric}")
"""

LIAR = """import pandas as pd
pd.read_csv("input/sample_submission.csv").to_csv("submission/submission.csv", index=False)
print("METRIC: {perfect}")
"""

TASKS = {"tumor-diagnosis": (False, "1.0"), "diabetes-progression": (True, "0.0")}


def alternating_model(perfect: str, first: str = "liar") -> RuleFakeModel:
    """Script requests get liar, honest, liar, ... (or honest first); reviews say it works."""
    turns = itertools.count()
    lock = threading.Lock()
    order = [LIAR.replace("{perfect}", perfect), HONEST]
    if first == "honest":
        order.reverse()

    def rule(text: str, kwargs: dict) -> str | list[str]:
        if "Your job: review" in text:
            return json.dumps({"is_bug": False, "summary": "ran and wrote a submission"})
        if kwargs.get("n"):
            return [fenced(order[i % 2]) for i in range(kwargs["n"])]
        with lock:
            k = next(turns)
        return fenced(order[k % 2])

    return RuleFakeModel(rule=rule)


def split_for(settings, comp, run_dir, store):
    """What build_run_services does before the prompt prefix exists."""
    return held_split_for(settings, comp, run_dir, planned_split(settings, comp, run_dir, store))


def services_for(tmp_path, task, llm, lower, **overrides):
    comp = load_competition(task)
    settings = RunSettings(run_id="t", task_dir=str(task), exec_timeout=60, sandbox="auto",
                           lower_is_better=lower, **{"repairs": 0, **overrides})
    run_dir = tmp_path / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    store = NodeStore(run_dir / "nodes.sqlite")
    held, agent_comp, selection = split_for(settings, comp, run_dir, store)
    system = build_task_context(agent_comp.description, agent_comp.public_dir, time_limit_s=60,
                                metric_name=comp.grader, lower_is_better=lower,
                                sample_submission=agent_comp.sample_submission).system_prompt()
    store.set_meta("system_text", system)
    svc = RunServices(settings=settings, run_dir=run_dir, competition=agent_comp, llm=llm,
                      system_text=system, use_system_prompt=True, store=store,
                      tree=store.load_tree(lower), lower_is_better=lower, held=held, selection=selection)
    from grading.hidden import hidden_grader_for

    svc.hidden_grader = hidden_grader_for(comp)
    return svc, comp


def run_search(svc):
    graph = build_search_graph().compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}, "recursion_limit": 200}
    list(graph.stream({"step": 0}, config, context=SearchContext(services=svc), stream_mode="custom"))


@pytest.mark.parametrize("name", list(TASKS))
@pytest.mark.parametrize("first", ["liar", "honest"])
def test_the_liar_is_never_selected(tmp_path, name, first):
    lower, perfect = TASKS[name]
    task = prepare_task(name)
    llm = alternating_model(perfect, first)
    svc, comp = services_for(tmp_path, task, llm, lower, steps=4, num_drafts=4, debug_prob=0.0)
    assert svc.selection["by"] == "holdout" and svc.held is not None
    run_search(svc)
    nodes = svc.store.all()
    liars = [n for n in nodes if "METRIC: " + perfect in n.code]
    honest = [n for n in nodes if n not in liars]
    assert len(liars) == len(honest) == 2
    assert all(not n.is_buggy and n.holdout_score is not None for n in nodes)
    # the liar's own number is the best of the run; the harness's score says otherwise
    assert all(n.self_report_flag for n in liars) and not any(n.self_report_flag for n in honest)
    best = svc.tree.best()
    assert best.id in {n.id for n in honest}
    summary = export_run(svc.run_dir, nodes, svc.store.load_tree(lower), run_id="t", wall_seconds=1.0,
                         settings=svc.settings.model_dump(), selection=svc.selection)
    assert summary["best_node_id"] == best.id and summary["selection"]["by"] == "holdout"
    assert summary["best_by_self_report_id"] in {n.id for n in liars}
    assert summary["self_report_flags"] == 2
    # the final submission is the honest node's, real test rows only, in the sample's order
    final = pd.read_csv(svc.run_dir / "submission.csv")
    real_sample = pd.read_csv(comp.sample_submission)
    assert final.iloc[:, 0].tolist() == real_sample.iloc[:, 0].tolist()
    assert final.equals(pd.read_csv(svc.run_dir / "submissions" / f"{best.id}.csv"))
    # and hidden grading agrees with the harness: the honest node beats the sample copier
    kept = next(n for n in nodes if n.id == best.id)
    worse = (lambda a, b: a > b) if lower else (lambda a, b: a < b)
    assert all(worse(n.test_score, kept.test_score) for n in liars)
    # the report shows the gap: selection, and per node self-report vs holdout vs hidden test
    from views.report import write_report

    md = write_report(svc.run_dir)["report_md"].read_text()
    assert "| selected by | the harness's held split" in md
    assert "| the METRIC lines alone would pick | node " in md
    assert md.count("far better than holdout |") == 2
    assert "holdout score (harness)" in (svc.run_dir / "tree.html").read_text()
    # a liar's improve prompt states the flag as a fact (the harness's number never)
    prompt = improve_prompt(liars[0], [], lower_is_better=lower)
    assert "Harness check" in prompt and "far better" in prompt
    assert f"{liars[0].holdout_score:.6g}" not in prompt


def test_self_consistency_keeps_the_honest_sample(tmp_path):
    lower, perfect = TASKS["tumor-diagnosis"]
    task = prepare_task("tumor-diagnosis")
    llm = alternating_model(perfect)  # n=2: [liar, honest]
    svc, _comp = services_for(tmp_path, task, llm, lower)
    strategy = StrategyServices(
        coder=llm, planner=llm, system_text=svc.system_text, coder_system_prompt=True,
        planner_system_prompt=True, public_dir=svc.competition.public_dir,
        sample_submission=svc.competition.sample_submission, work_dir=tmp_path / "ws", exec_timeout=60,
        sandbox="auto", lower_is_better=lower, sampling=SamplingSupport("n"),
        exec_slots=threading.BoundedSemaphore(2), held=svc.held)
    graph = build_self_consistency_graph().compile(checkpointer=InMemorySaver())
    out = graph.invoke({"request": "Write a solution.", "label": "n0", "seed": 1},
                       {"configurable": {"thread_id": "sc"}},
                       context=StrategyContext(services=strategy, samples=2, repairs=0, judge=False))
    details = out["result"]["details"]
    assert details["kept"] == 1 and details["rule"] == "best holdout score"
    assert "RandomForest" in out["result"]["candidate"]["code"]


def test_held_rows_stay_out_of_prompts_and_the_sandbox(tmp_path):
    from sandbox import bwrap_available

    lower, perfect = TASKS["tumor-diagnosis"]
    task = prepare_task("tumor-diagnosis")
    peek = ("import os\n"
            "for p in PATHS:\n"
            "    print('SEEN' if os.path.exists(p) else 'absent', os.path.basename(p))\n") + HONEST
    llm = alternating_model(perfect, "honest")
    svc, comp = services_for(tmp_path, task, llm, lower, steps=2, num_drafts=2, debug_prob=0.0)
    plan = svc.held.plan
    secret = [str(svc.run_dir / "holdout" / "answers.csv"), str(comp.public_dir / "train.csv")]
    llm.rule = (lambda inner: lambda text, kw: (fenced(peek.replace("PATHS", repr(secret)))
                                               if "Your job: review" not in text else inner(text, kw)))(llm.rule)
    if bwrap_available():
        svc.settings = svc.settings.model_copy(update={"sandbox": "bwrap"})
    run_search(svc)
    view_train = pd.read_csv(svc.competition.public_dir / "train.csv", dtype=str)
    assert not set(plan.held_train_ids) & set(view_train["id"])
    view_test = pd.read_csv(svc.competition.public_dir / "test.csv", dtype=str)
    assert set(plan.fresh_ids) <= set(view_test["id"]) and "diagnosis" not in view_test.columns
    prompts = "\n".join(text for text, _ in llm.calls)
    assert not any(i in prompts for i in plan.held_train_ids)
    nodes = svc.store.all()
    assert all(not n.is_buggy and n.holdout_score is not None for n in nodes)
    assert all(f"{n.holdout_score:.6g}" not in prompts for n in nodes if n.holdout_score is not None)
    if bwrap_available():
        assert all(n.output.count("absent") == 2 and "SEEN" not in n.output for n in nodes)


def test_a_resume_reuses_the_split(tmp_path):
    task = prepare_task("diabetes-progression")
    svc, _comp = services_for(tmp_path, task, alternating_model("0.0"), True)
    first = svc.held.plan
    files = {p.name: p.read_bytes() for p in (svc.run_dir / "holdout" / "view").iterdir() if p.is_file()}
    import shutil

    shutil.rmtree(svc.run_dir / "holdout" / "view")  # a lost view is rebuilt the same
    settings = svc.settings.model_copy(update={"seed": 99})  # the stored plan wins over settings
    again, agent, _sel = split_for(settings, load_competition(task), svc.run_dir, svc.store)
    assert again.plan == first
    assert {p.name: p.read_bytes() for p in agent.public_dir.iterdir() if p.is_file()} == files


def test_a_run_that_began_without_a_split_keeps_none(tmp_path):
    task = prepare_task("tumor-diagnosis")
    comp = load_competition(task)
    plan = prepare_split(comp.public_dir, comp.sample_submission, tmp_path / "holdout", seed=0,
                         fraction=0.1, may_create=False)
    assert plan.reason == "the run began without a held split"
    again = prepare_split(comp.public_dir, comp.sample_submission, tmp_path / "holdout", seed=0,
                          fraction=0.1, may_create=True)
    assert again == plan  # recorded: a later resume does not start one midway


def test_an_unsplittable_task_falls_back_with_one_line(tmp_path):
    from tests.conftest import make_toy_task

    task = make_toy_task(tmp_path / "probs")
    public = task / "prepared" / "public"
    sample = pd.read_csv(public / "sample_submission.csv")
    pd.DataFrame({"id": sample.id, "p0": 0.5, "p1": 0.5}).to_csv(public / "sample_submission.csv", index=False)
    svc, comp = services_for(tmp_path, task, alternating_model("1.0"), False)
    assert svc.held is None and svc.competition.public_dir == comp.public_dir
    line = svc.selection["line"]
    assert svc.selection["by"] == "self_report" and "\n" not in line
    assert line.startswith("no held validation split (") and "per-class probabilities" in line
    off, _c, sel = split_for(svc.settings.model_copy(update={"holdout": False}), comp,
                                  tmp_path / "other", NodeStore(tmp_path / "o.sqlite"))
    assert off is None and "--no-holdout" in sel["line"]


def test_selection_gap_measures_both_numbers(tmp_path):
    from benchmark.selection_gap import main

    run = tmp_path / "r1"
    run.mkdir()
    # lower is better; the holdout orders the nodes as the test does, the METRIC lines reversed
    nodes = [{"id": f"n{i}", "step": i, "is_buggy": False, "metric": m, "holdout_score": h, "test_score": t}
             for i, (m, h, t) in enumerate([(0.1, 3.0, 3.1), (0.2, 2.0, 2.2), (0.3, 1.0, 1.1)])]
    nodes.append({"id": "b", "step": 3, "is_buggy": True, "metric": None, "holdout_score": None,
                  "test_score": None})
    (run / "tree.json").write_text(json.dumps({"lower_is_better": True, "nodes": nodes}))
    assert main(["--runs", str(run), "--out", str(tmp_path / "out")]) == 0
    (row,) = json.loads((tmp_path / "out" / "selection.json").read_text())
    assert row["graded_nodes"] == 3 and row["rho_holdout"] == pytest.approx(1.0)
    assert row["rho_self"] == pytest.approx(-1.0)
    assert (row["hit_self"], row["hit_holdout"]) == (0, 1)
    assert "| harness holdout score | 1.000 (n=1) | 1 of 1 runs |" in (tmp_path / "out" / "selection.md").read_text()


def test_a_script_without_its_metric_line_is_valid_when_the_held_rows_score_it(tmp_path):
    """In a run that holds a split the harness scores each submission itself, so a script that
    wrote a well-formed submission but printed no METRIC line is a valid node (its notes say
    it had none), gets no repair call, can be selected and reported; without a split it is buggy."""
    silent = HONEST.replace('print(f"METRIC: {metric}")\n', 'print("done")\n')
    task = prepare_task("tumor-diagnosis")
    for holdout in (True, False):
        seen = []

        def rule(text: str, kwargs: dict, seen=seen) -> str:
            seen.append(text)
            if "Your job: review" in text:
                return json.dumps({"is_bug": False, "summary": "ran and wrote a submission"})
            return fenced(silent)

        root = tmp_path / str(holdout)
        # the improve answer is the draft again: run as it is (not asked again, tests/unit/test_improve_again.py)
        svc, _ = services_for(root, task, RuleFakeModel(rule=rule), False, steps=2, num_drafts=1,
                              debug_prob=0.0, holdout=holdout, repairs=1, improve_again=False)
        run_search(svc)
        draft, improve = svc.store.all()
        if not holdout:  # the METRIC line is all selection has: buggy, and a repair was asked for
            assert draft.is_buggy and "printed no 'METRIC: <float>' line" in draft.bug_reason
            assert draft.extra["repairs"][0]["stage"] == "outputs"
            continue
        assert [n.is_buggy for n in (draft, improve)] == [False, False]
        assert draft.metric is None and draft.holdout_score is not None and draft.by_holdout
        assert "no METRIC line: the harness scored the submission" in " ".join(draft.extra["notes"])
        assert "repairs" not in draft.extra and len(seen) == 4  # draft, review, improve, review
        assert improve.parent_id == draft.id  # a valid node is improved, not debugged
        assert "printed no METRIC line" in svc.tree.memory_line(svc.tree.get(draft.id))
        summary = export_run(svc.run_dir, [draft, improve], svc.store.load_tree(False), run_id="t",
                             wall_seconds=1.0, settings=svc.settings.model_dump(), selection=svc.selection)
        assert summary["valid_submission"] and summary["best_node_id"] in {draft.id, improve.id}
        from views.report import write_report

        assert write_report(svc.run_dir)["report_md"].is_file()
        assert "no METRIC" in (svc.run_dir / "tree.html").read_text()  # drawn valid, without a number
