from pathlib import Path

import pandas as pd

from nodes.code_extract import extract_plan_and_code
from nodes.direction import ask_metric_direction
from nodes.operators import debug, draft, improve, improve_prompt, run_warnings
from nodes.review import Verdict, check_submission, establish_facts, llm_verdict, parse_metric
from nodes.static_check import static_problems
from nodes.structured import StructuredOutputSupport, parse_json_answer
from nodes.task_context import build_task_context, data_preview
from nodes.tree import Node
from tests.conftest import GOOD_SCRIPT, ai, fenced, scripted_model


def test_draft_extracts_plan_code_and_usage():
    model = scripted_model([ai(fenced(GOOD_SCRIPT, "Use a threshold."), 321, 45)])
    cand = draft(model, "SYSTEM", ["draft (step 0): failed. KeyError: 'y'"])
    assert cand.plan == "Use a threshold."
    assert cand.code == GOOD_SCRIPT
    assert (cand.usage.prompt_tokens, cand.usage.completion_tokens, cand.usage.llm_calls) == (321, 45, 1)
    system, user = model.seen[0]
    assert system.content == "SYSTEM"
    assert "KeyError: 'y'" in user.content and "first solution" in user.content


def test_reasoning_never_reaches_code_extraction():
    answer = "<think>maybe ```python\nimport wrong\n```</think>Plan.\n```python\nprint('right')\n```"
    cand = draft(scripted_model([ai(answer)]), "S", [])
    assert cand.code == "print('right')\n"
    assert "import wrong" in cand.reasoning


def test_improve_prompt_carries_parent_code_metric_and_direction():
    parent = Node(id="00003-0", step=3, stage="draft", code="print('parent')\n", metric=0.81234,
                  is_buggy=False, review="Works; accuracy 0.81.")
    model = scripted_model([ai(fenced("print('better')\n"))])
    cand = improve(model, "S", parent, [], lower_is_better=True)
    user = model.seen[0][-1].content
    assert "print('parent')" in user and "0.81234" in user and "lower is better" in user
    assert "Works; accuracy 0.81." in user
    # an improve changes what it names and keeps the lines that made the parent valid
    assert "keep how the script reads the data, holds out its validation rows" in user
    assert cand.code == "print('better')\n"


def test_the_warnings_of_the_parents_run_reach_the_improve_prompt():
    """A working script that fits a classifier to a numeric target: scikit-learn's warning, as
    the run printed it, is named in the improve request without the library's path."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import warnings
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        warnings.simplefilter("always")
        rng = np.random.default_rng(0)
        X = rng.normal(size=(40, 2))
        y = np.round(X[:, 0] * 100 + 150)
        for _ in range(2):
            LogisticRegression(max_iter=1).fit(X, y)
        print("METRIC: 80.5")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    parent = Node(id="00001-0", step=1, stage="draft", code=script, metric=80.5, is_buggy=False,
                  output=run.stdout + run.stderr)
    shown = run_warnings(parent.output)
    assert shown[0].startswith("UserWarning: The number of unique classes is greater than 50%")
    assert len(shown) == len(set(shown)) and len(shown) <= 3  # the second fit's repeats are not shown again
    model = scripted_model([ai(fenced("print('better')\n"))])
    improve(model, "S", parent, [], lower_is_better=True)
    user = model.seen[0][-1].content
    assert "## Warnings its run printed" in user and f"- {shown[0]}" in user
    assert "site-packages" not in user
    # a run without warnings gets no section
    quiet = parent.model_copy(update={"output": "METRIC: 80.5\n"})
    assert run_warnings(quiet.output) == []
    assert "Warnings its run printed" not in improve_prompt(quiet, [], lower_is_better=True)


def test_debug_prompt_shows_error_and_earlier_errors():
    parent = Node(id="00004-0", step=4, stage="debug", code="import pandas\nboom()\n",
                  output="Traceback (most recent call last):\n  File \"solution.py\"\nValueError: could not convert string to float: 'male'\n",
                  bug_reason="the script exited with code 1: ValueError: could not convert", is_buggy=True)
    model = scripted_model([ai(fenced("print('fixed')\n"))])
    debug(model, "S", parent, ["the script exited with code 1: KeyError: 'Sex'"])
    user = model.seen[0][-1].content
    assert "could not convert string to float: 'male'" in user
    assert "KeyError: 'Sex'" in user and "do not repeat" in user
    assert "import pandas\nboom()" in user


def test_llm_failure_is_recorded_not_raised():
    class Broken(type(scripted_model([]))):
        def _generate(self, *a, **k):
            raise ConnectionError("server went away")

    cand = draft(Broken(messages=iter([])), "S", [])
    assert cand.code == "" and "server went away" in cand.llm_error


def test_code_extraction_variants():
    assert extract_plan_and_code("no code here")[1] == ""
    assert extract_plan_and_code("```py\nx = 1\n```") == ("", "x = 1\n")
    assert extract_plan_and_code("print(2)")[1] == "print(2)\n"  # bare code that compiles
    two = "A\n```python\nx=1\n```\nB\n```python\nimport os\nprint(os.sep)\n```"
    assert extract_plan_and_code(two)[1] == "import os\nprint(os.sep)\n"  # the fullest block
    assert extract_plan_and_code("```bash\npip install x\n```")[1] == ""


def test_a_fence_inside_a_list_item_loses_its_indentation():
    # a small model's repair answer: the whole script indented under a numbered item, which ran as
    # "SyntaxError: unexpected indent (line 1)"
    answer = ("1. Define X_test before predicting:\n\n   ```python\n   import os\n\n   def f():\n"
              "       return os.sep\n   print(f())\n   ```\n")
    plan, code = extract_plan_and_code(answer)
    assert plan == "1. Define X_test before predicting:"
    assert code == "import os\n\ndef f():\n    return os.sep\nprint(f())\n"
    compile(code, "<answer>", "exec")
    # a script at the top level keeps its indentation exactly, string contents included
    top = 'x = """\n    kept\n"""\nif x:\n    print(x)\n'
    assert extract_plan_and_code(f"```python\n{top}```")[1] == top


def test_static_check():
    assert static_problems("x = undefined_thing + 1\n") == ["line 1: undefined name 'undefined_thing'"]
    assert static_problems("def f(:\n")[0].startswith("SyntaxError")
    assert static_problems("import os\nprint(os.getcwd())\n") == []
    assert static_problems("") == ["the answer contained no Python code block"]
    # a name used twice on one line is one problem; on two lines, two
    assert static_problems("print(y_val - y_val)\nprint(y_val)\n") == [
        "line 1: undefined name 'y_val'", "line 2: undefined name 'y_val'"]


def test_parse_metric_takes_last_finite_line():
    assert parse_metric("METRIC: 0.5\nlog\nMETRIC: 0.75\n") == 0.75
    assert parse_metric("  metric: 1e-3 \n") == 0.001
    assert parse_metric("METRIC: nan\n") is None
    assert parse_metric("val METRIC: 0.5") is None
    assert parse_metric("no metric") is None


def test_check_submission(tmp_path):
    sample = tmp_path / "sample.csv"
    pd.DataFrame({"id": [1, 2], "label": [0, 0]}).to_csv(sample, index=False)
    sub = tmp_path / "sub.csv"
    assert "no submission" in check_submission(sub, sample)
    pd.DataFrame({"id": [1, 2], "y": [1, 0]}).to_csv(sub, index=False)
    assert "columns" in check_submission(sub, sample)
    pd.DataFrame({"id": [1], "label": [1]}).to_csv(sub, index=False)
    assert "1 rows" in check_submission(sub, sample)
    pd.DataFrame({"id": [1, 2], "label": [1, 0]}).to_csv(sub, index=False)
    assert check_submission(sub, sample) is None


def test_facts_decide_bugginess():
    kw = dict(killed_reason=None, submission_problem=None, last_error="E", timeout_s=60)
    assert not establish_facts(exit_code=0, timed_out=False, output="METRIC: 1", **kw).is_buggy
    assert "code 1" in establish_facts(exit_code=1, timed_out=False, output="METRIC: 1", **kw).failure
    assert "no 'METRIC" in establish_facts(exit_code=0, timed_out=False, output="", **kw).failure
    assert "time limit" in establish_facts(exit_code=None, timed_out=True, output="", **kw).failure
    kw["submission_problem"] = "no submission/submission.csv was written"
    assert establish_facts(exit_code=0, timed_out=False, output="METRIC: 1", **kw).failure == kw["submission_problem"]


def _facts():
    return establish_facts(exit_code=0, timed_out=False, killed_reason=None, output="METRIC: 0.9",
                           submission_problem=None, last_error="", timeout_s=60)


def test_review_asks_for_json_schema_and_parses_verdict():
    model = scripted_model([ai('{"is_bug": false, "summary": "Accuracy 0.9, looks right."}')])
    support = StructuredOutputSupport()
    verdict, usage, err = llm_verdict(model, "S", GOOD_SCRIPT, "METRIC: 0.9", _facts(), support)
    assert verdict.summary == "Accuracy 0.9, looks right." and verdict.is_bug is False
    assert err is None and usage.llm_calls == 1
    fmt = model.seen_kwargs[0]["response_format"]
    assert fmt["type"] == "json_schema" and "is_bug" in fmt["json_schema"]["schema"]["properties"]
    assert model.seen_kwargs[0]["max_tokens"] == 400
    assert support.supported is True


def test_review_falls_back_to_text_when_structured_output_is_refused():
    base = type(scripted_model([]))

    class NoSchema(base):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            if "response_format" in kwargs:
                raise ValueError("400 response_format not supported")
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    model = NoSchema(messages=iter([ai('Sure! ```json\n{"is_bug": true, "summary": "leak"}\n```'),
                                    ai('{"is_bug": false, "summary": "second"}')]))
    support = StructuredOutputSupport()
    verdict, _, err = llm_verdict(model, "S", "x", "", _facts(), support)
    assert verdict.is_bug is True and verdict.summary == "leak" and err is None
    assert support.supported is False
    verdict2, _, _ = llm_verdict(model, "S", "x", "", _facts(), support)  # no second refusal
    assert verdict2.summary == "second"


def test_parse_verdict_tolerates_python_booleans_and_rejects_garbage():
    assert parse_json_answer('{"is_bug": False, "summary": "ok"}', Verdict).is_bug is False
    assert parse_json_answer("I think it is fine", Verdict) is None


def test_metric_direction_is_asked_once_with_schema():
    model = scripted_model([ai('{"metric": "rmse", "lower_is_better": true}')])
    answer, usage = ask_metric_direction(model, "S")
    assert answer.lower_is_better is True and answer.metric == "rmse"
    assert "response_format" in model.seen_kwargs[0] and usage.llm_calls == 1


def test_data_preview_and_task_context(toy_task: Path):
    public = toy_task / "prepared" / "public"
    preview = data_preview(public)
    assert "train.csv" in preview and "40 rows x 4 columns" in preview
    assert "- label: int64, 2 distinct" in preview
    ctx = build_task_context("Predict label.", public, time_limit_s=600, metric_name="accuracy",
                             lower_is_better=False, sample_submission=public / "sample_submission.csv")
    text = ctx.system_prompt()
    assert "Predict label." in text and "accuracy, higher is better" in text
    assert "10 minutes" in text and "`./input/sample_submission.csv`" in text
    assert "pandas" in text and "METRIC: <float>" in text
    assert ctx.system_prompt() == text  # byte-identical: the server's prefix cache relies on it


def test_data_preview_lists_tables_first_and_summarises_big_folders(tmp_path: Path):
    """Tables stay visible beside folders of thousands of files (each folder one line with its
    count, kinds and examples), and a test table with the train table's columns is listed by
    reference instead of column by column."""
    import pandas as pd

    public = tmp_path / "public"
    (public / "test").mkdir(parents=True)
    (public / "train").mkdir()
    for i in range(60):
        (public / ("train" if i < 45 else "test") / f"{1000 + i}.png").write_bytes(b"PNG")
    (public / "train" / "notes.txt").write_text("x")
    train = pd.DataFrame({"id": range(45), "a": range(45), "b": [0.5] * 45, "label": [1, 2, 3] * 15})
    train.to_csv(public / "train.csv", index=False)
    train.drop(columns="label").iloc[:15].to_csv(public / "test.csv", index=False)
    (public / "few").mkdir()
    train.head(3).to_csv(public / "few" / "extra.csv", index=False)
    lines = data_preview(public).splitlines()
    tops = [line for line in lines if line.startswith("- ")]
    assert [t.split(" (")[0] for t in tops[:3]] == ["- test.csv", "- train.csv", "- few/extra.csv"]
    assert "  15 rows x 3 columns: the columns of train.csv (same dtypes) without label" in lines
    assert "  - label: int64, 3 distinct; e.g. 1, 2, 3" in lines  # train.csv in full
    assert lines[-2] == "- test/: 15 files (15 .png), e.g. test/1045.png (3 B), test/1046.png (3 B), test/1047.png (3 B)"
    assert lines[-1].startswith("- train/: 46 files (45 .png, 1 .txt), e.g. train/1000.png (3 B)")


def test_backticks_inside_code_do_not_cut_the_block():
    from nodes.code_extract import extract_plan_and_code
    answer = 'Plan: quote fences.\n\n```python\nprint("```")\nx = 1\n```\nThat is all.'
    assert extract_plan_and_code(answer) == ("Plan: quote fences.", 'print("```")\nx = 1\n')
    longer = 'P\n````python\ns = """\n```\n"""\n````\n'
    assert extract_plan_and_code(longer) == ("P", 's = """\n```\n"""\n')


def test_quoted_output_gets_a_fence_longer_than_its_backticks():
    from prompts import fenced
    assert fenced("plain") == "```\nplain\n```"
    assert fenced("a ``` b ````` c", "python") == "``````python\na ``` b ````` c\n``````"


def test_the_preview_of_a_long_table_says_its_counts_are_of_its_first_rows(tmp_path):
    public = tmp_path / "public"
    public.mkdir()
    n = 2500  # more than the preview reads
    pd.DataFrame({"word": [f"w{i}" for i in range(n)], "x": [i % 97 for i in range(n)]}).to_csv(
        public / "train.csv", index=False)
    pd.DataFrame({"word": ["a", "b", "a"], "x": [1, 2, 3]}).to_csv(public / "test.csv", index=False)
    lines = data_preview(public).splitlines()
    assert "  2500 rows x 2 columns" in lines
    assert any(line.startswith("  - word: str, 2000 distinct in the first 2000 rows; e.g. 'w0'") for line in lines)
    assert "  - x: int64, range 0..96 in the first 2000 rows" in lines
    assert any(line.startswith("  - word: str, 2 distinct; e.g. 'a', 'b'") for line in lines)  # read in full
