"""A value an error quotes, looked up in the task's tables: the remedy names the column that holds
it and what to do with that column (nodes.task_facts.value_home, import_hints.located_remedy).

Each error comes from a real run of a script written for the test, on small tables written here
in MLE-bench's layout (train.csv, test.csv, sample_submission.csv)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from nodes.execute import Execution, apply_repair, ask_for_repair, repair_need, repair_prompt
from nodes.import_hints import failure_remedies, located_remedy, named_failure_remedies
from nodes.operators import Candidate, debug_prompt
from nodes.task_facts import data_facts, value_home
from nodes.tree import Node
from sandbox.workspace import INPUT
from tests.conftest import ai, fenced, scripted_model

WORDS = ["apple", "banjo", "cider", "dough", "eagle", "fjord", "gravy", "hinge", "igloo", "jumbo",
         "kayak", "lemon", "mango", "nylon", "otter", "pecan", "quilt", "radar", "salsa", "tango",
         "umbra", "vodka", "waltz", "xenon", "yacht", "zebra", "amber", "bison", "cobra", "delta"]


def _task(root: Path, train: pd.DataFrame, test: pd.DataFrame, target: str) -> Path:
    public = root / "public"
    public.mkdir()
    train.to_csv(public / "train.csv", index=False)
    test.to_csv(public / "test.csv", index=False)
    pd.DataFrame({"id": test["id"], target: train[target].iloc[0]}).to_csv(
        public / "sample_submission.csv", index=False)
    return public


@pytest.fixture
def words_task(tmp_path: Path) -> Path:
    """One feature of words, nearly one per row, and a text target (a pronunciation-like task)."""
    train = pd.DataFrame({"id": range(100, 124), "word": WORDS[:24],
                          "sound": [" ".join(w.upper()) for w in WORDS[:24]]})
    test = pd.DataFrame({"id": range(200, 206), "word": WORDS[24:]})
    return _task(tmp_path, train, test, "sound")


@pytest.fixture
def mixed_task(tmp_path: Path) -> Path:
    """A numeric feature, a categorical one and a string id; class labels as the target."""
    n = 40
    train = pd.DataFrame({"id": [f"r{i:04d}" for i in range(n)], "size": [float(i % 7) for i in range(n)],
                          "color": ["red", "green", "blue", "red"] * (n // 4),
                          "label": ["yes", "no"] * (n // 2)})
    test = pd.DataFrame({"id": [f"t{i:04d}" for i in range(8)], "size": [1.0] * 8,
                         "color": ["green", "purple"] * 4})
    return _task(tmp_path, train, test, "label")


def _crash(script: str, cwd: Path) -> str:
    """The output of a script that fails, run where ./input/ is the task's public folder."""
    (cwd / INPUT).symlink_to(cwd / "public")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout
    return proc.stderr


def _failure(output: str) -> str:
    return "the script exited with code 1: " + output.strip().splitlines()[-1]


_FIT = """
    import pandas as pd
    from sklearn.linear_model import LinearRegression, LogisticRegression
    train = pd.read_csv('./input/train.csv')
"""


def _located(public: Path, line: str) -> str:
    """The located remedy for the crash of a script that reads train.csv and runs `line`."""
    out = _crash(_FIT + "    " + line + "\n", public.parent)
    remedy = located_remedy(public.parent / INPUT, _failure(out), out)
    assert remedy is not None, out
    return remedy


def test_words_fed_to_an_estimator_as_they_are_get_the_vectorizer_of_their_column(words_task: Path) -> None:
    out = _crash("""
        import pandas as pd
        from sklearn.neighbors import KNeighborsClassifier
        train = pd.read_csv('./input/train.csv')
        KNeighborsClassifier(n_neighbors=1).fit(train[['word']], train['sound'])
    """, words_task.parent)
    assert "could not convert string to float" in out
    remedies = failure_remedies(_failure(out), out, data=words_task.parent / INPUT)
    assert len(remedies) == 1
    remedy = remedies[0]
    assert remedy.startswith("'apple' is a value of the feature column `word` in `train.csv`")
    assert "nearly one distinct value per row" in remedy
    assert "Do not drop rows" in remedy
    assert "X = train['word']" in remedy
    assert "TfidfVectorizer(analyzer='char_wb', ngram_range=(1, 3))" in remedy
    # the generic entry would have offered one-hot encoding or dropping the column
    assert "OneHotEncoder" not in remedy
    generic = failure_remedies(_failure(out), out)
    assert generic and "OneHotEncoder" in generic[0] and "value of the feature column" not in generic[0]


def test_a_value_of_the_text_target_says_the_target_reached_the_features(words_task: Path) -> None:
    remedy = _located(words_task, "LinearRegression().fit(train[['id', 'sound']], train['id'])")
    assert remedy.startswith("'A P P L E' is a value of the target `sound`")
    assert "`train.csv` has it, `test.csv` does not: text to produce" in remedy
    assert "never cast it or use it as a feature" in remedy
    assert "X = train['word']" in remedy  # the one feature, not the id


def test_a_category_of_a_mixed_table_gets_a_column_transformer_naming_it(mixed_task: Path) -> None:
    remedy = _located(mixed_task, "LogisticRegression().fit(train[['size', 'color']], train['label'])")
    assert remedy.startswith("'red' is a value of the feature column `color` in `train.csv` (categories)")
    assert "('color', OneHotEncoder(handle_unknown='ignore'), ['color'])" in remedy
    assert "remainder='passthrough'" in remedy


def test_a_class_label_cast_to_numbers_is_located_in_the_target(mixed_task: Path) -> None:
    remedy = _located(mixed_task, "y = train['label'].astype(float)")
    assert remedy.startswith("'yes' is a value of the target `label`")
    assert ": a class label)" in remedy


def test_a_string_id_fed_to_the_model_is_named_an_id(mixed_task: Path) -> None:
    remedy = _located(mixed_task, "LogisticRegression().fit(train[['id', 'size']], train['label'])")
    assert remedy.startswith("'r0000' is a value of `id` in `train.csv`, an id-like column")


def test_a_value_only_the_test_table_has_is_found_there(mixed_task: Path) -> None:
    home = value_home(mixed_task, "purple")
    assert home is not None and (home.table, home.column, home.role) == ("test.csv", "color", "feature")


def test_values_past_the_rows_the_facts_read_are_still_found(tmp_path: Path) -> None:
    n = 6000  # more than the 5000 head rows the facts classify columns by
    train = pd.DataFrame({"id": range(n), "word": [f"w{i:05d}x" for i in range(n)], "y": [i % 3 for i in range(n)]})
    test = pd.DataFrame({"id": range(n, n + 5), "word": ["aa", "bb", "cc", "dd", "ee"]})
    public = _task(tmp_path, train, test, "y")
    home = value_home(public, "w05999x")
    assert home is not None and home.column == "word"


def test_the_tables_are_read_once_per_folder_until_a_file_changes(tmp_path: Path, monkeypatch) -> None:
    from nodes import task_facts

    n = 6000  # past the head rows, so the lookup reads the whole column too
    train = pd.DataFrame({"id": range(n), "word": [f"w{i:05d}x" for i in range(n)], "y": [i % 3 for i in range(n)]})
    test = pd.DataFrame({"id": range(n, n + 5), "word": ["aa", "bb", "cc", "dd", "ee"]})
    public = _task(tmp_path, train, test, "y")
    heads, columns = [], []
    read_head, read_column = task_facts._read_head, task_facts._read_column
    monkeypatch.setattr(task_facts, "_read_head", lambda p: heads.append(p.name) or read_head(p))
    monkeypatch.setattr(task_facts, "_read_column", lambda t, c: columns.append(c) or read_column(t, c))
    task_facts._cached_layout.cache_clear()
    for _ in range(3):
        assert value_home(public, "w05999x").column == "word"
        assert value_home(public, "nowhere") is None
    assert sorted(heads) == ["sample_submission.csv", "test.csv", "train.csv"]
    assert columns.count("word") == 1  # the train table's whole column, once
    # a table written since is read again, and what it now holds is found
    train.loc[0, "word"] = "zz-new"
    train.to_csv(public / "train.csv", index=False)
    assert value_home(public, "zz-new").column == "word"
    assert heads.count("train.csv") == 2


def test_no_column_holds_the_value_or_no_data_then_the_table_decides(words_task: Path) -> None:
    failure = "the script exited with code 1: ValueError: could not convert string to float: 'kitten'"
    assert located_remedy(words_task, failure) is None
    assert located_remedy(words_task.parent / "missing", failure) is None
    assert located_remedy(None, failure) is None
    assert failure_remedies(failure, data=words_task) == failure_remedies(failure)


def test_the_facts_are_unchanged_by_the_lookup(words_task: Path) -> None:
    before = data_facts(words_task)
    value_home(words_task, "apple")
    assert data_facts(words_task) == before


def test_repair_and_debug_prompts_use_the_input_the_script_read(words_task: Path) -> None:
    ws = words_task.parent
    out = _crash("""
        import pandas as pd
        from sklearn.linear_model import LogisticRegression
        train = pd.read_csv('./input/train.csv')
        LogisticRegression().fit(train[['word']], train['sound'])
    """, ws)
    code = "import pandas as pd\n"
    ex = Execution(exit_code=1, output=out, failure=_failure(out), seconds=0.5, workspace=str(ws))
    need = repair_need(Candidate(plan="p", code=code), ex)
    assert need is not None and need.stage == "early_crash" and need.data == str(ws / INPUT)
    assert "is a value of the feature column `word`" in repair_prompt(code, need)
    assert "is a value of the feature column `word`" not in repair_prompt(code, need, known=False)
    parent = Node(id="00000-0", step=0, stage="draft", code=code, output=out, is_buggy=True,
                  bug_reason=_failure(out), workspace=str(ws))
    assert "is a value of the feature column `word`" in debug_prompt(parent, [], data=ws / INPUT)
    assert "is a value of the feature column `word`" not in debug_prompt(parent, [], data=ws / INPUT,
                                                                        known_errors=False)
    assert "is a value of the feature column `word`" not in debug_prompt(parent, [])  # no data: the table


def test_a_free_text_value_with_line_breaks_is_found_from_its_repr(tmp_path: Path) -> None:
    texts = [f"Saying number {i} goes here,\nand its second line\n\t\t-- Author {i % 5}" for i in range(30)]
    train = pd.DataFrame({"id": range(30), "text": texts, "category": ["wit", "lore", "myth"] * 10})
    test = pd.DataFrame({"id": range(30, 34), "text": texts[:4]})
    public = _task(tmp_path, train, test, "category")
    out = _crash("""
        import pandas as pd
        from sklearn.linear_model import LogisticRegression
        train = pd.read_csv('./input/train.csv')
        LogisticRegression().fit(train[['text']], train['category'])
    """, tmp_path)
    assert "\\n" in _failure(out)  # repr() escaped the line breaks
    remedy = located_remedy(public, _failure(out), out)
    assert remedy is not None
    assert "is a value of the feature column `text` in `train.csv` (free text)" in remedy
    assert "make_pipeline(TfidfVectorizer(), <the estimator>)" in remedy


def test_a_repair_record_names_the_remedies_its_request_carried(words_task: Path) -> None:
    ws = words_task.parent
    out = _crash(_FIT + "    LogisticRegression().fit(train[['word']], train['sound'])\n", ws)
    code = "import pandas as pd\n"
    ex = Execution(exit_code=1, output=out, failure=_failure(out), seconds=0.5, workspace=str(ws))
    need = repair_need(Candidate(plan="p", code=code), ex)
    assert need is not None
    fixed = "import pandas as pd\nprint('METRIC: 1')\n"
    model = scripted_model([ai(fenced(fixed, "Vectorize the words."))])
    answer = ask_for_repair(model, "facts", code, need, system_prompt=True)
    assert answer.remedies == ["located:feature/near_unique"]
    _, record, runnable = apply_repair(Candidate(plan="p", code=code), answer, need)
    assert runnable and record["remedies"] == ["located:feature/near_unique"]
    quiet = ask_for_repair(scripted_model([ai(fenced(fixed, "x"))]), "facts", code, need, system_prompt=True,
                           known=False)
    assert quiet.remedies == [] and "remedies" not in apply_repair(Candidate(code=code), quiet, need)[1]
    # a record of the yield measurement keeps them, with whether the repair got past its error
    from benchmark.yield_ablation import node_records
    node = {"step": 0, "is_buggy": False, "extra": {"repairs": [{**record, "fixed": True}]}}
    assert node_records([node])[0]["remedies"] == [{"names": ["located:feature/near_unique"], "fixed": True}]


def _crash_names(public: Path, line: str) -> list[tuple[str, str]]:
    """The named remedies for the crash of a script that reads both tables and runs `line`."""
    out = _crash(_FIT + "    test = pd.read_csv('./input/test.csv')\n    " + line + "\n", public.parent)
    assert "KeyError" in out
    return named_failure_remedies(_failure(out), out, data=public.parent / INPUT)


@pytest.mark.parametrize("line", ["test.drop(columns=['label'])", "test[['size', 'label']]",
                                  "test['label'].fillna('no')"])
def test_the_target_read_in_the_test_table_is_named_the_target(mixed_task: Path, line: str) -> None:
    ((name, remedy),) = _crash_names(mixed_task, line)
    assert name == "located:column/target"
    assert remedy.startswith("`label` is the target: `train.csv` has it and `test.csv` does not.")
    assert "features = [c for c in test.columns if c != 'id']" in remedy


def test_a_misspelt_column_gets_the_names_like_it(mixed_task: Path) -> None:
    ((name, remedy),) = _crash_names(mixed_task, "train['Colour']")
    assert name == "located:column/none"
    assert remedy.startswith("No table has a column `Colour`; named like it: `color`.")
    assert "`train.csv` has `id`, `size`, `color`, `label`." in remedy


def test_a_column_lost_by_a_selection_is_named_a_column_of_both_tables(mixed_task: Path) -> None:
    ((name, remedy),) = _crash_names(mixed_task, "X = train[['size']]; X['color']")
    assert name == "located:column/shared"
    assert "`color` is a column of both `train.csv` and `test.csv` as read" in remedy


def test_a_key_no_table_has_nor_resembles_keeps_the_tables_entry(mixed_task: Path) -> None:
    ((name, _),) = _crash_names(mixed_task, "{'a': 1}['zzqx_params']")
    assert name == "missing-named-column"


def test_the_search_graphs_debug_request_locates_the_key_in_the_data_scripts_read(tmp_path: Path) -> None:
    from tests.conftest import make_toy_task
    from tests.unit.test_repair import run_steps, services

    task = make_toy_task(tmp_path / "toy")
    crash = ("import pandas as pd\ntrain = pd.read_csv('./input/train.csv')\ntest = pd.read_csv('./input/test.csv')\n"
             "y_test = test['label']\n")  # (a drop of it would be let pass by the harness: test_absent_drop)
    llm = scripted_model([ai(fenced(crash)), ai(fenced(crash))])
    svc = services(tmp_path, task, llm, steps=2, num_drafts=1, repairs=0, llm_review=False)
    run_steps(svc)
    draft, fix = sorted(svc.store.all(), key=lambda n: n.step)
    assert draft.is_buggy and "KeyError" in (draft.bug_reason or "") and fix.stage == "debug"
    request = llm.seen[1][-1].content
    assert "Known remedy: `label` is the target: `train.csv` has it and `test.csv` does not." in request


# ---------------------------------------------------------------- the vectorizer the harness puts in

_WORD_SCRIPT = """import os
import pandas as pd
from sklearn.neighbors import KNeighborsClassifier
train = pd.read_csv('./input/train.csv')
test = pd.read_csv('./input/test.csv')
X, y = {X}, train['sound']
model = KNeighborsClassifier(
    n_neighbors=1)
{fit}
print(f"METRIC: {{(model.predict(X) == y).mean()}}")
sub = pd.read_csv('./input/sample_submission.csv')
sub['sound'] = model.predict({X_test})
os.makedirs('./submission', exist_ok=True)
sub.to_csv('./submission/submission.csv', index=False)
"""


def _run_words(public: Path, tmp_path: Path, code: str, vectorize: bool = True):
    from nodes.execute import execute_script, run_with_repairs

    def run(c: Candidate, attempt: int) -> Execution:
        return execute_script(c.code, tmp_path / f"ws{attempt}", public_dir=public, sample_submission=None,
                              timeout_s=120, backend="plain")

    return run_with_repairs(Candidate(plan="p", code=code), run, scripted_model([]), "facts", system_prompt=True,
                            max_repairs=0, vectorize=public if vectorize else None)


@pytest.mark.parametrize(("X", "X_test", "fit"), [
    ("train[['word']]", "test[['word']]", "model.fit(X, y)"),  # a one-column table
    ("train['word']", "test['word']", "model = model.fit(X, y)"),  # a Series
])
def test_an_estimator_given_raw_words_gets_a_vectorizer_before_it(words_task: Path, tmp_path: Path,
                                                                  X: str, X_test: str, fit: str) -> None:
    code = _WORD_SCRIPT.format(X=X, X_test=X_test, fit=fit)
    cand, ex, records = _run_words(words_task, tmp_path, code)
    (record,) = records
    assert record["stage"] == "vectorized" and record["fixed"] is True and record["line"] == 7
    assert record["error"] == "the strings of `word` reached KNeighborsClassifier as they are"
    assert ex.valid, ex.failure
    assert ("model = make_pipeline(FunctionTransformer(numpy.ravel), TfidfVectorizer(analyzer='char_wb', "
            "ngram_range=(1, 3)), KNeighborsClassifier(\n    n_neighbors=1))") in cand.code
    assert "# imports added by the harness: the estimator got the strings" in cand.code
    from views.report.derive import repair_text
    assert repair_text([{"extra": {"repairs": records}}]) == (
        "a text vectorizer put before an estimator given raw strings by the harness 1 times "
        "(1 then got past those strings)")
    # off: the crash stands, and nothing was added
    cand, ex, records = _run_words(words_task, tmp_path / "off", code, vectorize=False)
    assert records == [] and not ex.valid and "could not convert string to float" in (ex.failure or "")


def test_a_chained_fit_is_wrapped_where_it_is_constructed(words_task: Path, tmp_path: Path) -> None:
    code = _WORD_SCRIPT.format(X="train['word']", X_test="test['word']",
                               fit="model = KNeighborsClassifier(n_neighbors=1).fit(X, y)")
    cand, ex, records = _run_words(words_task, tmp_path, code)
    assert [r["line"] for r in records] == [9] and ex.valid, ex.failure
    assert "model = make_pipeline(FunctionTransformer(numpy.ravel), TfidfVectorizer(analyzer='char_wb', " \
           "ngram_range=(1, 3)), KNeighborsClassifier(n_neighbors=1)).fit(X, y)" in cand.code
    assert "model = KNeighborsClassifier(\n    n_neighbors=1)" in cand.code  # the unused one as it was


def test_no_vectorizer_where_the_task_has_more_features_than_the_text(mixed_task: Path, tmp_path: Path) -> None:
    code = ("import pandas as pd\nfrom sklearn.linear_model import LogisticRegression\n"
            "train = pd.read_csv('./input/train.csv')\n"
            "model = LogisticRegression().fit(train[['size', 'color']], train['label'])\n")
    _cand, ex, records = _run_words(mixed_task, tmp_path, code)
    assert records == [] and "could not convert string to float: 'red'" in (ex.failure or "")


def test_the_vectorizer_flag(tmp_path: Path) -> None:
    from graphs.run import build_parser, resolve_settings
    from tests.conftest import make_toy_task

    task = make_toy_task(tmp_path / "toy")
    base = ["--task", str(task), "--run-dir", str(tmp_path)]
    assert resolve_settings(build_parser().parse_args(base))[0].vectorize_strings is True
    assert resolve_settings(build_parser().parse_args([*base, "--no-vectorize-strings"]))[0].vectorize_strings is False


def test_ast_positions_become_string_offsets_past_non_ascii_text() -> None:
    import ast

    from nodes.source_span import char_offset as _char_offset
    from nodes.source_span import span

    code = 'label = "naïve – café"\nmodel = Ridge(alpha=1.0)  # «ridge»\nmodel.fit(X, y)\n'
    call = next(n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call))
    begin = _char_offset(code, call.lineno, call.col_offset)
    end = _char_offset(code, call.end_lineno, call.end_col_offset)
    assert code[begin:end] == "Ridge(alpha=1.0)"
    assert span(code, call) == (begin, end)
    label = ast.parse(code).body[0].value
    assert code[_char_offset(code, 1, label.col_offset):_char_offset(code, 1, label.end_col_offset)] == '"naïve – café"'


_PREDICT = """
    import pandas as pd
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import train_test_split
    train = pd.read_csv('./input/train.csv')
    test = pd.read_csv('./input/test.csv')
    X, y = train[['size']], train['label'] == 'yes'
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, random_state=0)
    model = LinearRegression().fit(X_train, y_train)
    val_predictions = model.predict(X_val)
    submission = pd.read_csv('./input/sample_submission.csv')
"""


@pytest.mark.parametrize(("line", "kind", "values"), [
    ("submission['label'] = val_predictions", "split", 10),
    ("submission = pd.DataFrame({'id': test['id'], 'label': model.predict(X)})", "train", 40),
    ("submission['label'] = model.predict(X_val.iloc[:2])", "split", 2),
])
def test_predictions_for_other_rows_in_the_submission_are_named_so(mixed_task: Path, line: str, kind: str,
                                                                     values: int) -> None:
    out = _crash(_PREDICT + "    " + line + "\n", mixed_task.parent)
    ((name, remedy),) = named_failure_remedies(_failure(out), out, data=mixed_task.parent / INPUT)
    assert name == f"located:rows/{kind}", out
    assert remedy.startswith(f"The table being filled has 8 rows, one per row of `test.csv` (the sample "
                             f"submission lists the same rows), but it got {values} values:")
    if kind == "train":
        assert "one per row of `train.csv`, not predictions for the test rows." in remedy
    else:
        assert "such as a validation split of `train.csv` (40 rows)" in remedy
    assert "test_predictions = model.predict(X_test)" in remedy
    assert "submission = pd.read_csv('./input/sample_submission.csv') and submission['label'] = test_predictions" in remedy


def test_a_length_mismatch_of_another_table_keeps_the_tables_entry(mixed_task: Path) -> None:
    out = _crash(_PREDICT + "    train['label'] = val_predictions\n", mixed_task.parent)
    ((name, _),) = named_failure_remedies(_failure(out), out, data=mixed_task.parent / INPUT)
    assert name == "sample-count"
