"""Run and sweep reports: tree.html, report.md and figures, checked against the run's own files."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from PIL import Image

from benchmark.results import Cell, aggregate, markdown_table, per_run_frame, run_row, write_results
from benchmark.sweep_report import cost_score_figure, load_sweep, rates_figure, write_sweep_report
from tests.conftest import ROOT, make_toy_task
from tests.doubles.stub import StubServer
from views import report

# ----------------------------------------------------------------------------- fixtures


def _run(task: Path, runs: Path, run_id: str, strategy: str, steps: int, server: StubServer) -> Path:
    from graphs.run import main

    # no repairs: the scripted failures stay failures, so the tree has buggy nodes to show
    rc = main(["--task", str(task), "--strategy", strategy, "--steps", str(steps), "--samples", "3",
               "--base-url", server.base_url, "--run-dir", str(runs), "--run-id", run_id,
               "--exec-timeout", "30", "--sandbox", "plain", "--repairs", "0",
               # a seed whose scripted outcomes give a best, a valid and a buggy node (the
               # stub's scripts all copy the sample: on the held split they tie, the earliest wins)
               "--seed", "2"])
    assert rc == 0
    return runs / run_id


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real runs of the CLI against the scripted endpoint: plain AIDE and self-consistency."""
    tmp = tmp_path_factory.mktemp("report")
    task = make_toy_task(tmp / "toy")
    with StubServer(supports_n=False) as server:
        aide = _run(task, tmp / "runs", "aide", "aide", 8, server)
        sc = _run(task, tmp / "runs", "sc", "self_consistency", 2, server)
    return {"aide": aide, "sc": sc, "tmp": tmp, "task": task}


def _tree(run: Path) -> dict:
    return json.loads((run / "tree.json").read_text())


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


class _Page(HTMLParser):
    """The parts of tree.html the tests look at: node groups, detail sections, their code, scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, set[str]] = {}
        self.sections: list[str] = []
        self.code: dict[str, str] = {}
        self.scripts: list[dict] = []
        self._section: str | None = None
        self._in_code = 0
        self._script: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        if tag == "g" and "node" in classes:
            self.nodes[a["data-node-id"]] = classes
        if tag == "section" and "detail" in classes:
            self._section = a["data-detail-for"]
            self.sections.append(self._section)
            self.code[self._section] = ""
        if self._in_code:
            self._in_code += 1
        elif tag == "pre" and "code" in classes and self._section:
            self._in_code = 1
        if tag == "script":
            self._script = {"attrs": a, "text": ""}

    def handle_endtag(self, tag):
        if self._in_code:
            self._in_code -= 1
        if tag == "section":
            self._section = None
        if tag == "script" and self._script is not None:
            self.scripts.append(self._script)
            self._script = None

    def handle_data(self, data):
        if self._in_code and self._section:
            self.code[self._section] += data
        if self._script is not None:
            self._script["text"] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


# ----------------------------------------------------------------------------- run report


def test_a_run_writes_its_report(runs):
    for name in ("aide", "sc"):
        run = runs[name]
        assert (run / "tree.html").is_file()
        assert (run / "report" / "report.md").is_file()
        pngs = {p.name for p in (run / "report").glob("*.png")}
        expected = {"metric.png", "outcomes.png", "cost.png"} | ({"strategy.png"} if name == "sc" else set())
        assert pngs == expected
        assert not list(run.rglob("*.tmp")), "a temp file of an atomic write was left behind"


def test_tree_html_has_every_node_with_its_stage_and_status(runs):
    run = runs["aide"]
    tree, summary = _tree(run), _summary(run)
    page = _parse(run / "tree.html")
    ids = [n["id"] for n in tree["nodes"]]
    assert sorted(page.nodes) == sorted(ids) and len(ids) == 8
    assert sorted(page.sections) == sorted(ids)
    best = summary["best_node_id"]
    assert best is not None
    for node in tree["nodes"]:
        classes = page.nodes[node["id"]]
        expected = "status-best" if node["id"] == best else ("status-buggy" if node["is_buggy"] else "status-valid")
        assert {c for c in classes if c.startswith("status-")} == {expected}, node["id"]
        assert f"stage-{node['stage']}" in classes
    statuses = {s for classes in page.nodes.values() for s in classes if s.startswith("status-")}
    assert statuses == {"status-best", "status-buggy", "status-valid"}  # the run exercises all three
    # the code panel holds each node's exact code (highlighting only adds markup)
    for node in tree["nodes"]:
        assert page.code[node["id"]].rstrip("\n") == node["code"].rstrip("\n")
    # the embedded data is valid JSON with every node, and the page fetches nothing
    (data,) = [s for s in page.scripts if s["attrs"].get("id") == "tree-data"]
    assert [d["id"] for d in json.loads(data["text"])] == ids
    text = (run / "tree.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<link" not in text and "@import" not in text


def test_untrusted_text_cannot_break_or_inject_into_the_page(runs, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    tree = _tree(runs["aide"])
    evil = tree["nodes"][2]
    evil["code"] = 'print("</script><b>x")\n# <!-- --> & "quotes"\n'
    evil["plan"] = "<img src=x onerror=alert(1)>"
    evil["output_tail"] = "</pre><script>alert(1)</script>"
    evil["review"] = "<b>bold</b>"
    evil["test_score"] = float("nan")  # JSON has no NaN: the page's data must still parse
    evil["extra"] = {"strategy": {"strategy": "</script>", "attempts": [{"index": 0, "metric": None,
                                                                        "failure": "<i>f</i>"}], "kept": 0}}
    (run / "tree.json").write_text(json.dumps(tree))
    written = report.write_report(run)
    text = written["tree_html"].read_text()
    for raw in ("</script><b>x", "<b>x", "<img src=x", "<script>alert", "<b>bold", "<i>f</i>"):
        assert raw not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert text.count("<script") == 2 and text.count("</script>") == 2  # only the page's own
    page = _parse(written["tree_html"])
    assert page.code[evil["id"]] == evil["code"]
    assert sorted(page.nodes) == sorted(n["id"] for n in tree["nodes"])
    data = next(s["text"] for s in page.scripts if s["attrs"].get("id") == "tree-data")

    def strict(constant):
        raise ValueError(f"{constant} is not JSON")

    assert len(json.loads(data, parse_constant=strict)) == 8


def test_report_md_headline_and_links_to_valid_pngs(runs):
    for name in ("aide", "sc"):
        run = runs[name]
        summary = _summary(run)
        md = (run / "report" / "report.md").read_text()
        links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
        assert sorted(links) == sorted(p.name for p in (run / "report").glob("*.png"))
        for link in links:
            path = run / "report" / link
            assert path.stat().st_size > 5000
            with Image.open(path) as img:
                img.verify()
            with Image.open(path) as img:
                assert img.format == "PNG" and img.size[0] >= 500 and img.size[1] >= 300
        assert f"# Run report: {summary['run_id']}" in md
        best = f"{summary['best_metric']:.6g} (node {summary['best_node_id']}; higher is better)"
        assert f"| best validation metric | {best} |" in md
        assert f"| hidden test score of best node | {summary['best_node_test_score']:.6g} |" in md
        tokens = summary["prompt_tokens"] + summary["completion_tokens"]
        assert f"| tokens | {tokens} (prompt {summary['prompt_tokens']}" in md
        assert "[tree.html](../tree.html)" in md
        for role, cost in summary["cost_by_role"].items():
            assert f"| {role} | {cost['calls']} | {cost['prompt_tokens']} |" in md


def test_figures_agree_with_the_summary(runs):
    tree, summary = _tree(runs["aide"]), _summary(runs["aide"])
    nodes = tree["nodes"]
    # outcomes: bar heights per stage are the summary's counts (computed by export, not by us)
    fig = report.outcomes_figure(nodes)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    stages = [t.get_text() for t in ax.get_xticklabels()]
    heights = [p.get_height() for p in ax.patches]
    valid, buggy = heights[:len(stages)], heights[len(stages):]
    for stage, v, b in zip(stages, valid, buggy):
        assert b == summary["buggy_by_stage"].get(stage, 0)
        assert v + b == summary["nodes_by_stage"].get(stage, 0)
    # metric: the best-so-far line ends at the summary's best metric, its test line at the test score
    ax = report.metric_figure(nodes, tree["lower_is_better"]).axes[0]
    # the run holds a split (40 training rows): the line follows the holdout score, as selection does
    assert summary["selection"]["by"] == "holdout"
    best_line = next(line for line in ax.lines if line.get_label() == "best holdout score so far")
    running, best = [], None
    for n in nodes:
        if not n["is_buggy"] and n["holdout_score"] is not None and (best is None or n["holdout_score"] > best):
            best = n["holdout_score"]
        if best is not None:
            running.append(best)
    assert list(best_line.get_ydata()) == running and running[-1] == summary["best_node_holdout_score"]
    test_line = next(line for line in ax.lines if line.get_label() == "hidden test score of that node")
    assert test_line.get_ydata()[-1] == summary["best_node_test_score"]
    # cost: the token bars add up to the run's tokens, the second panel to its LLM + exec seconds
    tok_ax, sec_ax = report.cost_figure(nodes).axes
    assert sum(p.get_height() for p in tok_ax.patches) == summary["prompt_tokens"] + summary["completion_tokens"]
    seconds = sum(p.get_height() for p in sec_ax.patches)
    assert seconds == pytest.approx(summary["llm_seconds"] + summary["exec_seconds"], abs=0.01)
    assert report.strategy_figure(nodes) is None  # a plain AIDE run has no candidates or rounds


def test_strategy_run_shows_candidates(runs):
    tree = _tree(runs["sc"])
    nodes = tree["nodes"]
    fig = report.strategy_figure(nodes)
    assert isinstance(fig, Figure)
    counts = fig.axes[1]
    attempts = [a for n in nodes for a in n["extra"]["strategy"]["attempts"]]
    assert sum(p.get_height() for p in counts.patches) == len(attempts) == 3 * len(nodes)
    failed = sum(1 for a in attempts if a["failure"] is not None or a["metric"] is None)
    valid_bars = counts.patches[: len(counts.patches) // 2]
    assert sum(p.get_height() for p in valid_bars) == len(attempts) - failed
    text = (runs["sc"] / "tree.html").read_text()
    assert text.count('class="strategy-candidates"') == len(nodes)
    assert text.count('<tr class="kept">') == len(nodes)  # one kept candidate per expansion
    for node in nodes:
        kind, trials = report.strategy_trials(node)
        assert kind == "candidate" and [t["kept"] for t in trials].count(True) == 1


def test_cli_and_bad_input(runs, tmp_path, capsys):
    assert report.main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "does not exist" in err[0]
    assert report.main([str(tmp_path)]) == 2
    assert "no tree.json" in capsys.readouterr().err
    (tmp_path / "tree.json").write_text("{not json")
    assert report.main([str(tmp_path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    # the real command line, on a copy of a run without its report
    copy = tmp_path / "copy"
    shutil.copytree(runs["aide"], copy, ignore=shutil.ignore_patterns("report", "tree.html", "workspaces"))
    proc = subprocess.run([sys.executable, "-m", "views.report", str(copy)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (copy / "tree.html").is_file() and (copy / "report" / "metric.png").is_file()
    for module in ("views.report", "graphs.report"):  # graphs.report: the old name, still documented
        proc = subprocess.run([sys.executable, "-m", module, str(tmp_path / "nope")], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_a_failing_report_is_one_warning_and_never_fails_the_run(runs, monkeypatch, capsys):
    def broken(run_dir):
        raise RuntimeError("figure exploded\nsecond line")

    monkeypatch.setattr(report, "write_report", broken)
    with StubServer() as server:
        run = _run(runs["task"], runs["tmp"] / "runs", "broken", "aide", 1, server)
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if "warning" in line]
    assert warnings == ["warning: could not write the run report: RuntimeError: figure exploded"]
    assert (run / "summary.json").is_file() and not (run / "tree.html").exists()


# ----------------------------------------------------------------------------- sweep report


def _cell(root: Path, run_id: str, task: str, strategy: str, model: str, seed: int, *,
          medals: bool, summary: dict | None) -> Cell:
    path = root / "runs" / run_id
    path.mkdir(parents=True)
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return Cell(run_id=run_id, task_id=task, task_dir=str(root), gradable=medals, has_medals=medals,
                strategy=strategy, model=model, seed=seed, run_path=path)


def _summ(score, tokens, medal=None, valid=None):
    s = {"best_node_test_score": score, "prompt_tokens": tokens - 100, "completion_tokens": 100,
         "llm_seconds": 1.0, "wall_seconds": 2.0,
         "valid_submission": score is not None if valid is None else valid}
    if medal is not None:
        s["medals"] = {"above_median": medal[0], "any_medal": medal[1]}
    return s


@pytest.fixture
def sweep_dir(tmp_path):
    """A synthetic sweep: m1 runs aide and sc on a task with a leaderboard (one run failed), m2 runs
    aide only on a task without one (its medal rates are n/a)."""
    out = tmp_path / "sweep"
    cells = [
        _cell(out, "lb-aide-m1-0", "lb", "aide", "m1", 0, medals=True, summary=_summ(0.8, 1000, (1, 0))),
        _cell(out, "lb-aide-m1-1", "lb", "aide", "m1", 1, medals=True, summary=None),
        _cell(out, "lb-sc-m1-0", "lb", "sc", "m1", 0, medals=True, summary=_summ(0.9, 4000, (1, 1))),
        _cell(out, "lb-sc-m1-1", "lb", "sc", "m1", 1, medals=True, summary=_summ(None, 3500, (0, 0))),
        _cell(out, "plain-aide-m2-0", "plain", "aide", "m2", 0, medals=False, summary=_summ(None, 2000, valid=True)),
    ]
    (out / "runs" / "lb-sc-m1-0" / "tree.html").write_text("<html></html>")
    agg = write_results(out, cells, {"lb-aide-m1-1": "failed (exit 1)"}, k=2)
    return out, agg, cells


def test_load_sweep_reads_what_the_sweep_wrote(sweep_dir):
    out, agg, cells = sweep_dir
    per_run, results = load_sweep(out)
    assert list(per_run["run_id"]) == [c.run_id for c in cells]
    expected = aggregate(per_run_frame([run_row(c) for c in cells]), 2)
    assert list(results["model"] + "/" + results["strategy"]) == ["m1/aide", "m1/sc", "m2/aide"]
    pd.testing.assert_series_equal(results["valid_submission_mean"], expected["valid_submission_mean"])


def test_rates_figure_bars_are_the_means_with_sem(sweep_dir):
    out, agg, _ = sweep_dir
    _, results = load_sweep(out)
    fig = rates_figure(results)
    assert isinstance(fig, Figure)
    valid_ax, median_ax, medal_ax = fig.axes[:3]
    # valid: m1/aide 1 of 2 (the failed run counts), m1/sc 1 of 2, m2/aide 1 of 1 (own summary)
    assert [p.get_height() for p in valid_ax.patches] == [50.0, 50.0, 100.0]
    # above median: m2/aide ran no task with a leaderboard: no bar, an "n/a" instead
    assert [p.get_height() for p in median_ax.patches] == [50.0, 50.0]
    assert [p.get_height() for p in medal_ax.patches] == [0.0, 50.0]
    assert "n/a" in [t.get_text() for t in median_ax.texts]
    assert "n/a" not in [t.get_text() for t in valid_ax.texts]
    # the SEM error bar of m1/sc on "valid": 50 ± 50 (values 1, 0: std 0.707 / sqrt 2)
    segments = [seg for coll in valid_ax.collections if isinstance(coll, LineCollection)
                for seg in coll.get_segments()]
    spans = sorted((round(min(s[:, 1]), 6), round(max(s[:, 1]), 6)) for s in segments)
    assert (0.0, 100.0) in spans and (100.0, 100.0) in spans


def test_cost_score_figure_one_marker_per_run(sweep_dir):
    out, _, _ = sweep_dir
    per_run, _ = load_sweep(out)
    fig = cost_score_figure(per_run)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["lb (1 failed run not shown)", "plain"]
    points = {ax.get_title(): sorted(tuple(map(float, xy)) for c in ax.collections for xy in c.get_offsets())
              for ax in visible}
    # scored runs sit at (tokens, score); a run without a score is an x at the panel's foot (axes y 0.03)
    assert points["lb (1 failed run not shown)"] == [(1000.0, 0.8), (3500.0, 0.03), (4000.0, 0.9)]
    assert points["plain"] == [(2000.0, 0.03)]
    assert sorted(t.get_text() for t in fig.legends[0].get_texts()) == ["m1 / aide", "m1 / sc", "m2 / aide",
                                                                       "no test score"]


def test_write_sweep_report(sweep_dir, capsys):
    out, agg, _ = sweep_dir
    path = write_sweep_report(out)
    assert path == out / "report.md"
    md = path.read_text()
    assert markdown_table(agg, 2) in md
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links == ["rates.png", "cost_score.png"]
    for link in links:
        with Image.open(out / link) as img:
            assert img.format == "PNG" and img.size[0] >= 600
    # runs with a tree.html are linked to it
    assert "[lb-sc-m1-0](runs/lb-sc-m1-0/tree.html)" in md
    assert "| lb-aide-m1-1 | lb | aide | m1 | 1 | failed (exit 1) | – | – |" in md
    from benchmark.sweep_report import main

    assert main([str(out.parent / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: sweep directory")
    assert main([str(out / "runs")]) == 2
    assert "no per_run.csv" in capsys.readouterr().err


def test_a_sweep_ends_with_its_report(tmp_path):
    from benchmark.sweep import main

    task = make_toy_task(tmp_path / "t")
    out = tmp_path / "out"
    with StubServer() as server:
        assert main(["--tasks", str(task), "--strategies", "aide", "--models", f"scripted-model@{server.base_url}",
                     "--seeds", "1", "--steps", "1", "--exec-timeout", "30", "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## Outcome rates" in md and (out / "rates.png").stat().st_size > 5000
    (run_dir,) = (out / "runs").iterdir()
    assert (run_dir / "tree.html").is_file()
    assert f"[{run_dir.name}](runs/{run_dir.name}/tree.html)" in md
    assert html.escape(run_dir.name) in (run_dir / "tree.html").read_text()
