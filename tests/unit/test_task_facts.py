"""Data facts in the stable prefix, on synthetic tasks built here; the hardware line; the reply
format living in each role's request while every role shares one byte-identical prefix."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from graphs.run import build_parser, resolve_settings
from nodes.code import implement_plan, revise
from nodes.direction import ask_metric_direction
from nodes.execute import Execution
from nodes.operators import Candidate, debug, draft, improve
from nodes.plan import make_plan
from nodes.reflect import reflect
from nodes.review import llm_verdict
from nodes.sample import SamplingSupport, sample_in_one_call
from nodes.select import Attempt, llm_judge
from nodes.structured import StructuredOutputSupport
from nodes.task_context import build_task_context, hardware_summary
from nodes.task_facts import data_facts
from nodes.tree import Node
from tests.conftest import GOOD_SCRIPT, ai, fenced, make_toy_task, scripted_model

SCRIPT_FORMAT = "then ONE markdown code block"


def _tabular(root: Path, *, sample: str = "labels") -> Path:
    """Strings, numbers, free text and an id column; a 3-class string target."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    n = 300
    species = np.array(["cat"] * 120 + ["bird"] * 30 + ["dog"] * 50 + ["cat"] * 100)
    df = pd.DataFrame({
        "PassengerId": np.arange(1000, 1000 + n),
        "city": rng.choice(["Paris", "Oslo", "Rome", "Lima"], n),
        "age": rng.integers(1, 80, n).astype(float),
        "fare": rng.random(n) * 100,
        "note": [f"free text about passenger {i} who likes the sea" for i in range(n)],
        "species": species,
    })
    df.loc[3, "age"] = np.nan
    df.iloc[:200].to_csv(root / "train.csv", index=False)
    df.iloc[200:].drop(columns="species").to_csv(root / "test.csv", index=False)
    ids = df.PassengerId.iloc[200:]
    if sample == "labels":
        pd.DataFrame({"PassengerId": ids, "species": "cat"}).to_csv(root / "sample_submission.csv", index=False)
    else:
        pd.DataFrame({"PassengerId": ids, "bird": 0.2, "cat": 0.5, "dog": 0.3}).to_csv(
            root / "sample_submission.csv", index=False)
    return root


def test_tabular_facts_name_target_classes_strings_numbers_and_id(tmp_path):
    task = _tabular(tmp_path / "tab")
    facts = data_facts(task, task / "sample_submission.csv")
    lines = facts.splitlines()
    assert lines[0] == ("- These are the only files under `./input/`: `sample_submission.csv`, `test.csv`, "
                        "`train.csv`. No other file exists (there is no validation file: make your own split).")
    assert "- `train.csv` columns that `test.csv` lacks (the target): `species`." in lines
    # counted over the whole train column, most frequent first
    assert "- `species`: classification, 3 classes: 'cat': 120, 'dog': 50, 'bird': 30." in lines
    assert ("- Submission (`sample_submission.csv`, 100 rows): columns `PassengerId`, `species`, in this "
            "order; id column `PassengerId`.") in lines
    assert any(line.startswith("- Submission column `species` holds a class label") for line in lines)
    strings = next(line for line in lines if line.startswith("- String/categorical"))
    assert "`city` (4 distinct)" in strings and "note" not in strings and "PassengerId" not in strings
    assert "- Free-text columns: `note` (need a text vectorizer)." in lines
    assert "- Numeric feature columns: `age`, `fare` (with missing values: `age`)." in lines
    assert "- Id-like columns (unique per row, not a feature): `PassengerId`." in lines
    assert "probabilit" not in facts.replace("not a probability", "")
    assert data_facts(task, task / "sample_submission.csv") == facts  # deterministic


def test_regression_target_gets_its_range_and_unnamed_id_is_flagged(tmp_path):
    root = tmp_path / "reg"
    root.mkdir()
    y = np.linspace(2.5, 50.0, 100)
    df = pd.DataFrame({"key": [f"r{i:04d}" for i in range(100)], "x": np.arange(100) % 9, "y": y})
    df.iloc[:80].to_csv(root / "train.csv", index=False)
    df.iloc[80:].drop(columns="y").to_csv(root / "test.csv", index=False)
    pd.DataFrame({"key": df.key.iloc[80:], "y": 0.0}).to_csv(root / "sample_submission.csv", index=False)
    lines = data_facts(root, root / "sample_submission.csv").splitlines()
    target = next(line for line in lines if line.startswith("- `y`:"))
    assert target.startswith("- `y`: numeric (regression), range 2.5 .. 40.404, mean 21.452, median 21.452")
    assert "- Submission column `y` holds a number: the predicted `y`." in lines
    assert "- Id-like columns (unique per row, not a feature): `key`." in lines
    assert "- Numeric feature columns: `x`." in lines


def test_per_class_probability_layout_is_recognised(tmp_path):
    task = _tabular(tmp_path / "prob", sample="probs")
    facts = data_facts(task, task / "sample_submission.csv")
    assert ("- The submission holds per-class probabilities: one column per class of `species` "
            "(column name = class), each row's values summing to 1. Not a label column.") in facts.splitlines()
    # floats summing to 1 whose names are not classes are still probabilities
    pd.DataFrame({"PassengerId": [1, 2], "p0": [0.25, 0.5], "p1": [0.75, 0.5]}).to_csv(
        task / "sample_submission.csv", index=False)
    assert "one float column per class, each row summing to 1" in data_facts(task, task / "sample_submission.csv")


def test_binary_probability_column(tmp_path):
    task = make_toy_task(tmp_path / "toy", with_config=False)
    pd.DataFrame({"id": range(40, 50), "label": 0.5}).to_csv(task / "sample_submission.csv", index=False)
    facts = data_facts(task, task / "sample_submission.csv")
    assert ("- Submission column `label` holds a probability (floats in 0..1, e.g. 0.5) of `label` = 1, "
            "not a hard label.") in facts.splitlines()


def test_folder_tasks_map_rows_to_files(tmp_path):
    # audio named by an id column (no extension in the value), no test table
    audio = tmp_path / "audio"
    (audio / "train").mkdir(parents=True)
    (audio / "test").mkdir()
    ids = [f"clip_{i:03d}" for i in range(30)]
    for i in ids[:20]:
        (audio / "train" / f"{i}.wav").write_bytes(b"RIFF")
    for i in ids[20:]:
        (audio / "test" / f"{i}.wav").write_bytes(b"RIFF")
    pd.DataFrame({"clip": ids[:20], "digit": [i % 4 for i in range(20)]}).to_csv(audio / "train.csv", index=False)
    pd.DataFrame({"clip": ids[20:], "digit": 0}).to_csv(audio / "sample_submission.csv", index=False)
    lines = data_facts(audio, audio / "sample_submission.csv").splitlines()
    assert lines[0].startswith("- These are the only files under `./input/`: `sample_submission.csv`, "
                               "`train.csv`, `test/` (10 files: 10 .wav), `train/` (20 files: 20 .wav).")
    assert "- Target column(s) in `train.csv`: `digit`." in lines
    assert "- `digit`: classification, 4 classes: 0: 5, 1: 5, 2: 5, 3: 5." in lines
    assert "- `train.csv` column `clip` names files: `./input/train/<clip>.wav`." in lines
    assert "- `sample_submission.csv` column `clip` names files: `./input/test/<clip>.wav`." in lines
    # rows that name files: the skeleton gives the last lines only (features come from the files)
    assert "- Every script ends like this (fill in the middle; keep the metric line and the submission format):" in lines
    assert "submission['digit'] = test_predictions  # in the order of the sample submission's rows" in lines

    # images named with their extension in a labels table; an unrelated folder maps to nothing
    images = tmp_path / "images"
    (images / "train_images").mkdir(parents=True)
    names = [f"img{i}.png" for i in range(12)]
    for name in names:
        (images / "train_images" / name).write_bytes(b"PNG")
    pd.DataFrame({"image": names, "label": ["a", "b", "c"] * 4}).to_csv(images / "train_labels.csv", index=False)
    pd.DataFrame({"image": ["t0.png"], "label": ["a"]}).to_csv(images / "sample_submission.csv", index=False)
    lines = data_facts(images, images / "sample_submission.csv").splitlines()
    assert "- `train_labels.csv` column `image` names files: file names in `./input/train_images/`." in lines
    assert "- `label`: classification, 3 classes: 'a': 4, 'b': 4, 'c': 4." in lines

    # a folder whose files no column names is said so, not guessed
    lonely = tmp_path / "lonely"
    (lonely / "blobs").mkdir(parents=True)
    (lonely / "blobs" / "x.bin").write_bytes(b"1")
    make_toy_task(lonely, with_config=False)
    assert "No table column names the files in the folders" in data_facts(lonely, lonely / "sample_submission.csv")


def test_facts_are_in_the_stable_prefix_byte_identical_and_can_be_turned_off(tmp_path):
    task = _tabular(tmp_path / "tab")
    kwargs = dict(time_limit_s=600, metric_name="accuracy", lower_is_better=False,
                  sample_submission=task / "sample_submission.csv")
    first = build_task_context("Predict species.", task, **kwargs).system_prompt()
    again = build_task_context("Predict species.", task, **kwargs).system_prompt()
    assert first == again
    assert "# Data facts (checked from the files)\n- These are the only files" in first
    assert first.index("# Data facts") < first.index("# Environment")
    off = build_task_context("Predict species.", task, data_facts=False, **kwargs).system_prompt()
    assert "Data facts" not in off and "# Environment" in off


def test_facts_that_cannot_be_computed_say_so(tmp_path, monkeypatch):
    import nodes.task_context as task_context

    def broken(*_args):
        raise ValueError("weird data")

    monkeypatch.setattr(task_context, "compute_data_facts", broken)
    task = make_toy_task(tmp_path / "toy", with_config=False)
    text = build_task_context("t", task, time_limit_s=60, metric_name=None, lower_is_better=None,
                              sample_submission=None).system_prompt()
    assert "- (the data facts could not be computed: ValueError: weird data)" in text


def test_flags_turn_facts_and_branch_memory_off(tmp_path):
    task = make_toy_task(tmp_path / "toy")
    args = build_parser().parse_args(["--task", str(task), "--run-dir", str(tmp_path / "runs")])
    settings, _, _ = resolve_settings(args)
    assert settings.data_facts is True and settings.branch_memory is True
    args = build_parser().parse_args(["--task", str(task), "--run-dir", str(tmp_path / "runs"),
                                      "--no-data-facts", "--no-branch-memory"])
    settings, _, _ = resolve_settings(args)
    assert settings.data_facts is False and settings.branch_memory is False


def test_hardware_line_promises_a_gpu_only_when_one_is_bound(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (dev / name).write_text("")
    assert hardware_summary(False, dev=dev).startswith("CPU only: ")
    assert "no GPU (do not use CUDA)" in hardware_summary(False, dev=dev)
    assert hardware_summary(True, dev=dev).endswith("CPU cores and 2 NVIDIA GPU(s), usable with CUDA")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "GPUs were requested but no NVIDIA device is visible" in hardware_summary(True, dev=empty)
    task = make_toy_task(tmp_path / "toy", with_config=False)
    text = build_task_context("t", task, time_limit_s=60, metric_name=None, lower_is_better=None,
                              sample_submission=None).system_prompt()
    assert "- Hardware: CPU only: " in text and "GPU(s)" not in text


@pytest.fixture
def stable(tmp_path) -> str:
    task = make_toy_task(tmp_path / "toy", with_config=False)
    return build_task_context("Predict label.", task, time_limit_s=600, metric_name="accuracy",
                              lower_is_better=False, sample_submission=task / "sample_submission.csv").system_prompt()


def test_stable_prefix_states_no_reply_format(stable):
    assert SCRIPT_FORMAT not in stable and "JSON" not in stable and "Answer format" not in stable


@pytest.mark.parametrize("system_prompt", [True, False])
def test_every_role_starts_with_the_same_prefix_and_ends_with_its_own_format(stable, system_prompt):
    parent = Node(id="00001-0", step=1, stage="draft", code=GOOD_SCRIPT, metric=0.8, is_buggy=False, review="ok")
    buggy = Node(id="00002-0", step=2, stage="draft", code="raise SystemExit(1)\n", output="boom",
                 bug_reason="exit code 1")
    ex = Execution(exit_code=0, output="METRIC: 0.8\n", metric=0.8)
    cand = Candidate(plan="p", code=GOOD_SCRIPT)
    support = StructuredOutputSupport()
    script = fenced(GOOD_SCRIPT)
    calls = {
        "draft": (script, lambda m: draft(m, stable, [], system_prompt=system_prompt)),
        "improve": (script, lambda m: improve(m, stable, parent, [], lower_is_better=False,
                                             system_prompt=system_prompt)),
        "debug": (script, lambda m: debug(m, stable, buggy, [], system_prompt=system_prompt)),
        "code_plan": (script, lambda m: implement_plan(m, stable, "REQ", "the plan", system_prompt=system_prompt)),
        "revise": (script, lambda m: revise(m, stable, "REQ", cand, ex, "fix", system_prompt=system_prompt)),
        "sampler": (script, lambda m: sample_in_one_call(m, stable, "REQ", 1, SamplingSupport("n"),
                                                         system_prompt=system_prompt, seed=1)),
        "review": ('{"is_bug": false, "summary": "ok"}',
                   lambda m: llm_verdict(m, stable, GOOD_SCRIPT, "METRIC: 0.8", ex.facts(), support,
                                         system_prompt=system_prompt)),
        "reflect": ('{"accept": true, "critique": "good", "target": "coder"}',
                    lambda m: reflect(m, stable, GOOD_SCRIPT, ex, support, system_prompt=system_prompt)),
        "plan": ('{"approach": "a", "libraries": [], "feature_steps": [], "validation_scheme": "v"}',
                 lambda m: make_plan(m, stable, "REQ", support, system_prompt=system_prompt)),
        "judge": ('{"best": 0, "reason": "r"}',
                  lambda m: llm_judge(m, stable, support, system_prompt=system_prompt)(
                      [Attempt(index=0, candidate=cand, execution=ex)])),
        "direction": ('{"metric": "accuracy", "lower_is_better": false}',
                      lambda m: ask_metric_direction(m, stable, system_prompt=system_prompt)),
    }
    for role, (answer, call) in calls.items():
        model = scripted_model([ai(answer)])
        call(model)
        messages = model.seen[0]
        if system_prompt:
            assert messages[0].content == stable, role
            varying = messages[-1].content
        else:
            assert len(messages) == 1 and messages[0].content.startswith(stable + "\n\n"), role
            varying = messages[0].content[len(stable):]
        if answer == script:
            assert varying.rstrip().endswith("holding the complete script. No other code blocks."), role
            assert "JSON" not in varying, role
        else:
            assert "JSON object only" in varying and SCRIPT_FORMAT not in varying, role


def _skeleton_code(facts: str) -> str:
    block = facts.split("- Every script starts and ends like this", 1)[1]
    return block.split("```python\n", 1)[1].split("```", 1)[0]


def _run_with_input(code: str, data: Path, work: Path):
    """Run `code` in `work` with the files of `data` under ./input/, as a script sees them."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(data, work / "input")
    return subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, timeout=120)


# what a model writes in the skeleton's middle: a model on one numeric column
_MIDDLE = """from sklearn.linear_model import LogisticRegression
model = LogisticRegression().fit(X[["fare"]], y)
X_val, X_test = X_val[["fare"]], X_test[["fare"]]
validation_score = 0.5
"""


@pytest.mark.parametrize("layout", ["labels", "probs", "shuffled"])
def test_the_stated_skeleton_writes_a_submission_the_checker_accepts(tmp_path, layout):
    """The first and last lines the facts give, with a real model in the middle, run and write
    a submission in the sample's format, each row the prediction for that row's id."""

    from sklearn.linear_model import LogisticRegression

    from nodes.review import check_submission, parse_metric

    task = _tabular(tmp_path / "in", sample="probs" if layout == "probs" else "labels")
    if layout == "shuffled":  # the sample lists the test ids in another order
        sample = pd.read_csv(task / "sample_submission.csv")
        sample.iloc[::-1].to_csv(task / "sample_submission.csv", index=False)
    skeleton = _skeleton_code(data_facts(task, task / "sample_submission.csv"))
    assert "features = [c for c in test.columns if c not in ['PassengerId']]" in skeleton
    assert "X, y = train[features], train['species']" in skeleton
    # the validation rows are held out in code; the script writes the model between that and the
    # validation predictions; the outline predicts the test rows with the same model
    assert ("X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.2, random_state=0)  "
            "# validation rows held out of the training rows (`test.csv` has no labels)") in skeleton
    assert ("# ... encode the string columns, vectorize each free-text column as a Series (X['note']; in a "
            "ColumnTransformer name it as a string, ('text', TfidfVectorizer(), 'note'), not as a list), "
            "train `model` on X_train, y_train ...") in skeleton
    if layout == "probs":  # the ending writes predict_proba's columns
        assert "val_predictions" not in skeleton and "test_predictions" not in skeleton
        assert "# validation_score = the competition's metric of y_val and model.predict_proba(X_val)" in skeleton
    else:
        assert ("val_predictions = model.predict(X_val)  # the held-out rows' predictions (never X_test's)\n"
                "# validation_score = the competition's metric of y_val and val_predictions\n"
                "print(f\"METRIC: {validation_score}\")  # the metric on held-out data, on its own line\n"
                "test_predictions = model.predict(X_test)  # refit on all of X, y first if you like\n") in skeleton
    assert ("test = test.set_index('PassengerId')" in skeleton) == (layout == "shuffled")
    middle = next(line for line in skeleton.splitlines() if line.startswith("# ... encode"))
    code = skeleton.replace(middle, _MIDDLE)
    work = tmp_path / "work"
    done = _run_with_input(code, task, work)
    assert done.returncode == 0, done.stderr + "\n" + code
    assert parse_metric(done.stdout) == 0.5
    sub_path = work / "submission" / "submission.csv"
    assert check_submission(sub_path, task / "sample_submission.csv") is None
    sub = pd.read_csv(sub_path)
    assert list(sub.PassengerId) == list(pd.read_csv(task / "sample_submission.csv").PassengerId)
    train, test = pd.read_csv(task / "train.csv"), pd.read_csv(task / "test.csv")
    model = LogisticRegression().fit(train[["fare"]], train["species"])
    if layout == "probs":
        truth = pd.DataFrame(model.predict_proba(test[["fare"]]), columns=model.classes_, index=test.PassengerId)
        assert np.allclose(sub.set_index("PassengerId")[["bird", "cat", "dog"]].values,
                           truth.loc[sub.PassengerId, ["bird", "cat", "dog"]].values)
    else:
        truth = dict(zip(test.PassengerId, model.predict(test[["fare"]])))
        assert list(sub.species) == [truth[i] for i in sub.PassengerId]


def test_unique_plain_words_are_a_feature_not_an_id(tmp_path):
    """A column of unique plain words is a string feature (described as such), not an id; one of
    unique values with digits stays an id."""
    root = tmp_path / "words"
    root.mkdir()
    words = [f"{a}{b}{c}" for a in "bcdfg" for b in "aeiou" for c in "lmnrs"][:100]
    df = pd.DataFrame({"id": range(100), "word": words, "syllables": [len(w) % 3 for w in words]})
    df.iloc[:80].to_csv(root / "train.csv", index=False)
    df.iloc[80:].drop(columns="syllables").to_csv(root / "test.csv", index=False)
    pd.DataFrame({"id": df.id.iloc[80:], "syllables": 0}).to_csv(root / "sample_submission.csv", index=False)
    facts = data_facts(root, root / "sample_submission.csv")
    assert "- Id-like columns (unique per row, not a feature): `id`." in facts.splitlines()
    assert "`word` (80 distinct: nearly one per row, so use features of its characters" in facts
    assert "Turn each into character n-gram features" in facts and "one-hot or ordinal" not in facts
    # the one feature is a Series in the outline, with character n-grams named
    skeleton = _skeleton_code(facts)
    assert "X, y = train['word'], train['syllables']  # the one feature: a Series of strings" in skeleton
    assert "X_test = test['word']" in skeleton and "features =" not in skeleton
    assert "TfidfVectorizer(analyzer='char_wb', ngram_range=(1, 3))" in skeleton


def test_one_free_text_column_is_a_series_and_the_outline_runs_with_a_vectorizer(tmp_path):
    """A task whose one feature is free text: the outline's X is that column as a Series, and the
    outline with the middle its comment asks for (a vectorizer fitted on the training part) runs
    and writes a submission the checker accepts."""

    from nodes.review import check_submission, parse_metric

    root = tmp_path / "text"
    root.mkdir()
    rng = np.random.default_rng(1)
    topics = {"sea": ["waves", "boat", "salt", "tide"], "sky": ["cloud", "star", "rain", "wind"]}
    label = rng.choice(list(topics), 120)
    text = [" ".join(rng.choice(topics[t], 5)) + "\nsecond line" for t in label]
    df = pd.DataFrame({"id": range(120), "text": text, "topic": label})
    df.iloc[:90].to_csv(root / "train.csv", index=False)
    df.iloc[90:].drop(columns="topic").to_csv(root / "test.csv", index=False)
    pd.DataFrame({"id": df.id.iloc[90:], "topic": "sea"}).to_csv(root / "sample_submission.csv", index=False)
    facts = data_facts(root, root / "sample_submission.csv")
    assert "- Free-text columns: `text` (need a text vectorizer)." in facts.splitlines()
    assert ("- Rows per table (header not counted): `sample_submission.csv` 30 rows x 2 columns, "
            "`test.csv` 30 rows x 2 columns, `train.csv` 90 rows x 3 columns.") in facts.splitlines()
    skeleton = _skeleton_code(facts)
    assert "X, y = train['text'], train['topic']" in skeleton and "X_test = test['text']" in skeleton
    middle = next(line for line in skeleton.splitlines() if line.startswith("# ... "))
    assert "model = make_pipeline(TfidfVectorizer(), <a classifier or regressor>)" in middle
    code = skeleton.replace(middle, """from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.2, random_state=0)
model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(X_train, y_train)
validation_score = (model.predict(X_val) == y_val).mean()
test_predictions = model.predict(X_test)
""")
    work = tmp_path / "work"
    done = _run_with_input(code, root, work)
    assert done.returncode == 0, done.stderr + "\n" + code
    assert parse_metric(done.stdout) == 1.0  # the topics' words do not overlap
    assert check_submission(work / "submission" / "submission.csv", root / "sample_submission.csv") is None
    sub = pd.read_csv(work / "submission" / "submission.csv")
    assert list(sub.topic) == list(label[90:])


def test_without_a_sample_submission_no_ending_is_stated(tmp_path):
    task = _tabular(tmp_path / "nosample")
    (task / "sample_submission.csv").unlink()
    assert "Every script" not in data_facts(task, None)


def _files_task(root: Path, write, ext: str, classes: list[str], n_train: int, n_test: int) -> list[str]:
    """A task whose rows are files `train/<id><ext>`, `test/<id><ext>` (`write(path, label, i)`
    makes one), labelled in train.csv; the test ids listed in another order than their files.
    Returns the test rows' true labels, in test.csv's order."""
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    labels = [classes[i % len(classes)] for i in range(n_train + n_test)]
    rng.shuffle(labels)
    ids = [f"f{i:04d}" for i in range(n_train + n_test)]
    for i, (name, label) in enumerate(zip(ids, labels)):
        write(root / ("train" if i < n_train else "test") / f"{name}{ext}", label, i)
    pd.DataFrame({"id": ids[:n_train], "label": labels[:n_train]}).to_csv(root / "train.csv", index=False)
    order = list(range(n_train, n_train + n_test))[::-1]
    pd.DataFrame({"id": [ids[i] for i in order]}).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"id": [ids[i] for i in order], "label": classes[0]}).to_csv(root / "sample_submission.csv",
                                                                            index=False)
    return [labels[i] for i in order]


_FILES_MIDDLE = """from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, random_state=0)
model = LogisticRegression(max_iter=1000).fit(X_train, y_train)
validation_score = (model.predict(X_val) == y_val).mean()
test_predictions = model.predict(X_test)
"""


def _run_outline(facts: str, root: Path, work: Path) -> pd.DataFrame:
    """The facts' outline with `_FILES_MIDDLE` in its middle, run on the task; its submission,
    which the checker accepts, and whose metric line says 1.0."""
    from nodes.review import check_submission, parse_metric

    skeleton = _skeleton_code(facts)
    middle = next(line for line in skeleton.splitlines() if line.startswith("# ... "))
    code = skeleton.replace(middle, _FILES_MIDDLE)
    done = _run_with_input(code, root, work)
    assert done.returncode == 0, done.stderr + "\n" + code
    assert parse_metric(done.stdout) == 1.0
    assert check_submission(work / "submission" / "submission.csv", root / "sample_submission.csv") is None
    return pd.read_csv(work / "submission" / "submission.csv")


def test_images_in_folders_get_their_sizes_and_an_outline_that_reads_them(tmp_path):
    """Rows that are PNG images: the facts measure them (sizes, modes) and the outline reads each
    into a vector of grey levels, shrunk and of one size; run with a model in its middle, it
    predicts each test row's own file."""
    from PIL import Image

    def write(path, label, i):
        size = (48, 40) if i % 7 else (50, 44)  # one size in seven differs
        level = 230 if label == "light" else 20
        pixels = np.full((size[1], size[0], 3), level, dtype=np.uint8)
        pixels[: size[1] // 2, :, 0] = (i * 37) % 255  # a varying red half: the mean is not all
        Image.fromarray(pixels, "RGB").save(path)

    root = tmp_path / "images"
    truth = _files_task(root, write, ".png", ["dark", "light"], 60, 20)
    facts = data_facts(root, root / "sample_submission.csv")
    assert ("- Files in `./input/train/`: 60 .png images; of the first 20, width x height 48x40: 17, "
            "50x44: 3 (sizes differ: resize to one size); modes RGB: 20.") in facts.splitlines()
    skeleton = _skeleton_code(facts)
    assert "from PIL import Image" in skeleton
    assert "    image = Image.open(path).convert('L').resize((35, 29))" in skeleton  # 48x40 shrunk to <= 32x32 pixels
    assert ("X = np.stack([features_of(f'./input/train/{name}.png') for name in train['id']])"
            in skeleton)
    assert "X_test = np.stack([features_of(f'./input/test/{name}.png') for name in test['id']])" in skeleton
    sub = _run_outline(facts, root, tmp_path / "work")
    assert list(sub.label) == truth


def test_recordings_in_folders_get_their_rates_and_an_outline_that_reads_them(tmp_path):
    """Rows that are WAV recordings of different lengths (one in stereo): the facts state rate,
    channels and durations, and the outline's fixed-length log spectrum separates a low tone
    from a high one."""
    from scipy.io import wavfile

    rate = 8000

    def write(path, label, i):
        seconds = 0.3 + (i % 5) * 0.1
        t = np.arange(int(rate * seconds)) / rate
        tone = np.sin(2 * np.pi * (300 if label == "low" else 2500) * t) * (8000 + 50 * i)
        data = tone.astype(np.int16)
        wavfile.write(path, rate, np.stack([data, data], axis=1) if i == 3 else data)

    root = tmp_path / "audio"
    truth = _files_task(root, write, ".wav", ["low", "high"], 60, 20)
    facts = data_facts(root, root / "sample_submission.csv")
    assert ("- Files in `./input/train/`: 60 .wav recordings; of the first 20: sample rate 8000 Hz: 20; "
            "1 channel: 19, 2 channels: 1; 0.3 to 0.7 s long (lengths differ: make features of a fixed "
            "length).") in facts.splitlines()
    skeleton = _skeleton_code(facts)
    assert "from scipy.io import wavfile" in skeleton and "np.fft.rfft(signal, n=8192)" in skeleton
    sub = _run_outline(facts, root, tmp_path / "work")
    assert list(sub.label) == truth


def test_files_without_their_reader_where_scripts_run_get_no_reader(tmp_path):
    """The outline uses only a package scripts have: without Pillow there, the facts say so and
    the outline gives its last lines only."""
    from PIL import Image

    def write(path, label, i):
        Image.new("L", (8, 8), 200 if label == "b" else 10).save(path)

    root = tmp_path / "images"
    _files_task(root, write, ".png", ["a", "b"], 24, 6)
    facts = data_facts(root, root / "sample_submission.csv", frozenset({"numpy", "pandas", "scikit-learn"}))
    assert ("- Files in `./input/train/`: 24 .png images; of the first 20, width x height 8x8: 20; modes L: 20 "
            "(pillow is not installed where scripts run).") in facts.splitlines()
    assert "- Every script ends like this" in facts and "features_of" not in facts
    with_pillow = data_facts(root, root / "sample_submission.csv", frozenset({"numpy", "pandas", "pillow"}))
    assert "- Every script starts and ends like this" in with_pillow and "features_of" in with_pillow


def test_a_script_that_forgot_the_files_outline_x_test_gets_it_with_its_reader(tmp_path):
    """The outline of rows that are files is read back from the prompt like any other: a script
    that uses X_test and never makes it gets that line, the reader function and its import."""
    from PIL import Image

    from nodes.outline import add_outline_lines, outline_from_prompt
    from nodes.static_check import static_problems

    def write(path, label, i):
        Image.new("L", (8, 8), 200 if label == "b" else 10).save(path)

    root = tmp_path / "images"
    _files_task(root, write, ".png", ["a", "b"], 24, 6)
    outline = outline_from_prompt("# The data\n" + data_facts(root, root / "sample_submission.csv"))
    reader = next(o for o in outline if o.assigns == {"features_of"})
    assert reader.reads == {"Image", "np"}  # its argument and locals are its own
    script = ("import numpy as np\nimport pandas as pd\ntest = pd.read_csv('./input/test.csv')\n"
              "print(len(X_test))\n")
    missing = [(p.split("'")[1], int(p.split(":")[0][5:])) for p in static_problems(script) if "undefined" in p]
    code, added = add_outline_lines(script, missing, outline)
    assert added[0] == "from PIL import Image" and added[1].startswith("def features_of(path):")
    assert added[2] == "X_test = np.stack([features_of(f'./input/test/{name}.png') for name in test['id']])"
    assert static_problems(code) == []


@pytest.mark.parametrize("same_shape", [True, False])
def test_arrays_in_folders_are_flattened_or_summarised(tmp_path, same_shape):
    """Rows that are .npy arrays: of one shape, flattened; of several, four summary numbers."""

    def write(path, label, i):
        n = 6 if same_shape else 4 + i % 3
        np.save(path, np.full((n, 2), 5.0 if label == "up" else -5.0) + (i % 4) * 0.1)

    root = tmp_path / "arrays"
    truth = _files_task(root, write, ".npy", ["down", "up"], 40, 10)
    facts = data_facts(root, root / "sample_submission.csv")
    line = next(x for x in facts.splitlines() if x.startswith("- Files in `./input/train/`"))
    if same_shape:
        assert line == "- Files in `./input/train/`: 40 .npy arrays; of the first 20, shapes (6, 2): 20."
        assert "    return array.ravel()" in facts
    else:
        assert "(shapes differ: make features of a fixed length)" in line and "array.std()" in facts
    sub = _run_outline(facts, root, tmp_path / "work")
    assert list(sub.label) == truth


def test_a_target_of_text_with_one_value_per_row_is_text_to_produce(tmp_path):
    """A string target with nearly one value per row is described as text (not thousands of
    classes), the submission as text, and the outline's middle names a nearest-row start; that
    outline, filled in as its comment says, runs and writes a submission the checker accepts."""
    from nodes.review import check_submission, parse_metric

    root = tmp_path / "spell"
    root.mkdir()
    words = [f"{a}{b}{c}{d}" for a in "bcdfgk" for b in "aeiou" for c in "lmnrst" for d in "aeio"][:300]
    df = pd.DataFrame({"id": range(300), "word": words, "spelled": [" ".join(w.upper()) for w in words]})
    df.iloc[:240].to_csv(root / "train.csv", index=False)
    df.iloc[240:].drop(columns="spelled").to_csv(root / "test.csv", index=False)
    pd.DataFrame({"id": df.id.iloc[240:], "spelled": "A"}).to_csv(root / "sample_submission.csv", index=False)
    lines = data_facts(root, root / "sample_submission.csv").splitlines()
    assert ("- `spelled`: text to produce, not a set of classes: 240 distinct values in 240 rows (nearly one "
            "per row), e.g. 'B A L A', 'B A L E', 'B A L I'; 4 to 4 words, 7 to 7 characters. A classifier can "
            "return only values seen in training (and is slow with this many).") in lines
    assert "- Submission column `spelled` holds text like the values of `spelled`, one per row." in lines
    assert not any("classification" in line or "class label" in line for line in lines)
    skeleton = _skeleton_code("\n".join(lines))
    middle = next(line for line in skeleton.splitlines() if line.startswith("# ... "))
    assert ("make_pipeline(TfidfVectorizer(analyzer='char_wb', ngram_range=(1, 3)), "
            "KNeighborsClassifier(n_neighbors=1))") in middle
    code = skeleton.replace(middle, """from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.2, random_state=0)
model = make_pipeline(TfidfVectorizer(analyzer='char_wb', ngram_range=(1, 3)), KNeighborsClassifier(n_neighbors=1))
model.fit(X_train, y_train)
validation_score = (model.predict(X_val) == y_val).mean()
test_predictions = model.predict(X_test)
""")
    work = tmp_path / "work"
    done = _run_with_input(code, root, work)
    assert done.returncode == 0, done.stderr + "\n" + code
    assert parse_metric(done.stdout) is not None
    assert check_submission(work / "submission" / "submission.csv", root / "sample_submission.csv") is None
    # with several features, the middle names the nearest-row start too; a string target with few
    # values stays classes
    df["length"] = df.word.str.len()
    df.iloc[:240].to_csv(root / "train.csv", index=False)
    df.iloc[240:].drop(columns="spelled").to_csv(root / "test.csv", index=False)
    skeleton = _skeleton_code(data_facts(root, root / "sample_submission.csv"))
    assert "a first model returns the target of the most similar training row" in skeleton
    df["spelled"] = df.word.str[0]
    df.iloc[:240].to_csv(root / "train.csv", index=False)
    facts = data_facts(root, root / "sample_submission.csv")
    assert "- `spelled`: classification, 2 classes" in facts and "text to produce" not in facts
