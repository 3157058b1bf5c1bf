import pytest

from tasks.competition import CompetitionError, load_competition, metric_direction
from tests.conftest import make_toy_task


def test_mlebench_layout(toy_task):
    comp = load_competition(toy_task)
    assert comp.id == "toy" and comp.grader == "accuracy" and comp.lower_is_better is False
    assert comp.public_dir == (toy_task / "prepared" / "public").resolve()
    assert comp.answers.name == "answers.csv" and comp.gradable
    assert comp.sample_submission.name == "sample_submission.csv"
    assert "Toy task" in comp.description


def test_mlebench_paths_relative_to_data_root(tmp_path):
    # MLE-bench configs name files as "<id>/prepared/...", relative to the data root
    root = make_toy_task(tmp_path / "toy")
    (root / "config.yaml").write_text(
        "id: toy\ndataset:\n  answers: toy/prepared/private/answers.csv\n"
        "  sample_submission: toy/prepared/public/sample_submission.csv\ngrader:\n  name: rmse\n")
    comp = load_competition(root)
    assert comp.answers.exists() and comp.lower_is_better is True


def test_plain_folder(tmp_path):
    root = make_toy_task(tmp_path / "plain", with_config=False)
    comp = load_competition(root)
    assert comp.public_dir == root.resolve() and not comp.gradable and comp.lower_is_better is None


def test_prepared_dir_without_config(tmp_path):
    root = make_toy_task(tmp_path / "mle")
    (root / "config.yaml").unlink()
    (root / "description.md").rename(root / "prepared" / "public" / "description.md")
    comp = load_competition(root)
    assert comp.id == "mle" and comp.sample_submission is not None and not comp.gradable


@pytest.mark.parametrize("breakage, message", [
    (lambda r: (r / "config.yaml").write_text("id: [unclosed\n"), "not valid YAML"),
    (lambda r: (r / "config.yaml").write_text("name: no id\n"), "has no 'id'"),
    (lambda r: (r / "config.yaml").write_text("id: t\ndataset:\n  answers: nope.csv\n"), "answers file 'nope.csv' does not exist"),
    (lambda r: (r / "description.md").unlink(), "has no description.md"),
])
def test_broken_tasks_give_one_line_errors(tmp_path, breakage, message):
    root = make_toy_task(tmp_path / "t")
    breakage(root)
    with pytest.raises(CompetitionError, match=message) as info:
        load_competition(root)
    assert "\n" not in str(info.value)


def test_missing_and_empty_dirs(tmp_path):
    with pytest.raises(CompetitionError, match="does not exist"):
        load_competition(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompetitionError, match="neither config.yaml"):
        load_competition(tmp_path / "empty")
    (tmp_path / "desc").mkdir()
    (tmp_path / "desc" / "description.md").write_text("x")
    with pytest.raises(CompetitionError, match="holds no data"):
        load_competition(tmp_path / "desc")


def test_metric_direction_table():
    assert metric_direction("RMSE") is True and metric_direction("roc-auc") is False
    assert metric_direction("something-new") is None
