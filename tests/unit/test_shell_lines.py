"""Notebook shell and magic lines (`!pip install x`, `%matplotlib inline`) that keep a script from
parsing are taken out by the harness before any repair call, and the node and the report say so."""

from __future__ import annotations

from benchmark.yield_ablation import node_records
from nodes.execute import SHELL_COMMENT, check_script, shell_fix, shell_lines
from nodes.operators import Candidate
from tests.conftest import GOOD_SCRIPT, ai, fenced, scripted_model
from tests.unit.test_repair import VERDICT_OK, run_steps, services, written_report

MIXED = '''import os
x = (1
     % 2)
!pip install imblearn
if x:
    %matplotlib inline
s = """
!not a shell line
"""
%%time
y = 3
'''


def test_only_lines_that_start_a_statement_with_bang_or_percent_are_shell_lines():
    # line 3 continues an expression, line 8 is inside a string: neither is a shell line
    assert shell_lines(MIXED) == [4, 6, 10]
    assert shell_lines(GOOD_SCRIPT) == []


def test_the_fix_makes_the_script_parse_and_the_next_problem_shows():
    code = "import os\n!pip install imblearn_not_here\nimport imblearn_not_here\n" + GOOD_SCRIPT
    ex = check_script(code, None)
    assert ex is not None and any("SyntaxError" in p for p in ex.static_problems), ex
    cand, record = shell_fix(Candidate(code=code), ex)
    assert record["stage"] == "shell" and record["removed"] == ["!pip install imblearn_not_here"]
    assert record["line"] == 2 and record["fixed"] is None and record["tokens"] == 0
    assert cand.code.splitlines()[1] == f"pass  {SHELL_COMMENT} !pip install imblearn_not_here"
    after = check_script(cand.code, None)  # it parses; what is left is the missing module
    assert after is not None and not any("SyntaxError" in p for p in after.static_problems)
    assert any("No module named 'imblearn_not_here'" in p for p in after.static_problems), after.static_problems
    # the indented magic stays a block's body, so the script parses
    fixed, _ = shell_fix(Candidate(code=MIXED), check_script(MIXED, None))
    compile(fixed.code, "solution.py", "exec")
    # a syntax error with no shell line, a script that parses: nothing to do
    broken = "def f(:\n    pass\n"
    assert shell_fix(Candidate(code=broken), check_script(broken, None)) is None
    undefined = "print(X_val)\n"
    assert shell_fix(Candidate(code=undefined), check_script(undefined, None)) is None


def test_the_search_step_takes_the_lines_out_and_says_so(tmp_path, toy_task):
    draft = "!pip install lightgbm\n%matplotlib inline\n" + GOOD_SCRIPT
    llm = scripted_model([ai(fenced(draft)), ai(VERDICT_OK)])
    svc = services(tmp_path, toy_task, llm, steps=1)
    run_steps(svc)
    (node,) = svc.store.all()
    assert not node.is_buggy and node.has_submission and SHELL_COMMENT in node.code
    (rec,) = node.extra["repairs"]
    assert rec["stage"] == "shell" and rec["fixed"] is True and rec["then"] == "valid, metric 0.9"
    assert rec["removed"] == ["!pip install lightgbm", "%matplotlib inline"]
    assert [c.role for c in node.calls] == ["coder", "reviewer"]  # no repair call
    assert node_records([node.model_dump()])[0]["shell_removed"] == 1
    written = written_report(svc)
    assert "notebook shell lines taken out by the harness" in written["tree_html"].read_text()
    assert ("notebook shell lines taken out by the harness 1 times (1 then passed the static check)"
            in written["report_md"].read_text())
