"""The harness's held validation split (tasks/holdout.py): the view the agent sees, the
submission taken apart again, the held rows scored with the task's grader."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tasks.holdout import (
    HoldoutPlan,
    Unsplittable,
    build_view,
    held_answers,
    holdout_score,
    plan_holdout,
    split_submission,
)
from tests.conftest import make_toy_task


def _public(tmp_path: Path, **kwargs) -> Path:
    return make_toy_task(tmp_path / "toy", **kwargs) / "prepared" / "public"


def _plan(public: Path, seed: int = 0) -> HoldoutPlan:
    plan = plan_holdout(public, public / "sample_submission.csv", seed=seed)
    assert isinstance(plan, HoldoutPlan), plan
    return plan


def test_the_view_hides_the_held_labels_and_mixes_their_rows_into_the_test(tmp_path):
    public = _public(tmp_path, n_train=200, n_test=50)
    plan = _plan(public)
    assert plan.rows == 20 and len(set(plan.held_train_ids)) == 20
    view = build_view(public, plan, tmp_path / "view")
    train, test = pd.read_csv(public / "train.csv"), pd.read_csv(public / "test.csv")
    v_train, v_test = pd.read_csv(view / "train.csv"), pd.read_csv(view / "test.csv")
    v_sample = pd.read_csv(view / "sample_submission.csv")
    held = set(map(int, plan.held_train_ids))
    assert len(v_train) == 180 and not held & set(v_train.id)  # the held rows left the train table
    assert list(v_test.columns) == list(test.columns) and "label" not in v_test.columns
    assert len(v_test) == 70 and list(v_sample.id) == list(v_test.id)
    fresh = set(map(int, plan.fresh_ids))
    assert fresh & set(v_test.id) == fresh and not fresh & (set(train.id) | set(test.id))
    # the held rows sit among the real ones, not in a block at the end
    at = [i for i, x in enumerate(v_test.id) if x in fresh]
    assert at == plan.positions and at[-1] - at[0] > 20 and at != list(range(50, 70))
    # their features are those of the train rows they came from
    by_fresh = dict(zip(plan.fresh_ids, plan.held_train_ids, strict=True))
    for _, row in v_test[v_test.id.isin(fresh)].iterrows():
        src = train.set_index("id").loc[int(by_fresh[str(row.id)])]
        assert (row.x1, row.x2) == (src.x1, src.x2)
    # stratified: the held share of each class follows the train table's
    labels = train.set_index("id").loc[sorted(held), "label"]
    assert abs(labels.mean() - train.label.mean()) < 0.1
    # a resumed run builds the same split and the same files
    again = _plan(public)
    assert again == plan
    build_view(public, again, tmp_path / "view2")
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        assert (view / name).read_bytes() == (tmp_path / "view2" / name).read_bytes()
    assert _plan(public, seed=1).held_train_ids != plan.held_train_ids


def test_a_submission_for_the_view_is_split_and_its_held_rows_scored(tmp_path):
    public = _public(tmp_path, n_train=200, n_test=50)
    plan = _plan(public)
    view = build_view(public, plan, tmp_path / "view")
    answers = held_answers(public, plan)
    v_test = pd.read_csv(view / "test.csv")
    # an honest rule (label = x1 > 3, which is how the toy task's labels are made) scores 1.0
    sub = pd.DataFrame({"id": v_test.id, "label": (v_test.x1 > 3).astype(int)})
    real_sample = pd.read_csv(public / "sample_submission.csv")
    held, real = split_submission(sub, plan, real_sample)
    assert len(held) == plan.rows and list(real.id.astype(int)) == list(real_sample.id)
    result = holdout_score(held, answers, plan, "accuracy")
    assert result.valid and result.score == 1.0
    # a script that copies the sample submission scores what that is worth on the held rows
    copied = pd.read_csv(view / "sample_submission.csv")
    held, _ = split_submission(copied, plan, real_sample)
    score = holdout_score(held, answers, plan, "accuracy").score
    assert score == pytest.approx((answers.label.astype(int) == 0).mean())
    # a submission without the held rows is invalid for the harness's score
    held, _ = split_submission(sub[~sub.id.astype(str).isin(set(plan.fresh_ids))], plan, real_sample)
    assert not holdout_score(held, answers, plan, "accuracy").valid
    # ids written as floats, rows shuffled, one row twice: compared as the graders compare them;
    # the real rows come back in the sample's order under the sample's id text
    odd = pd.concat([sub, sub.iloc[[3]]]).sample(frac=1.0, random_state=0)
    odd["id"] = odd.id.astype(float)
    held, real = split_submission(odd, plan, real_sample.astype(str))
    assert len(held) == plan.rows and holdout_score(held, answers, plan, "accuracy").score == 1.0
    assert real.id.tolist() == real_sample.id.astype(str).tolist()
    assert real.label.tolist() == sub.set_index("id").loc[real_sample.id, "label"].tolist()
    # a real id the submission lacks is left out (hidden grading then calls it invalid)
    _, short = split_submission(sub[sub.id != real_sample.id.iloc[0]], plan, real_sample)
    assert len(short) == len(real_sample) - 1


def test_files_in_folders_follow_their_rows_under_the_new_ids(tmp_path):
    public = tmp_path / "audio"
    (public / "train").mkdir(parents=True)
    (public / "test").mkdir()
    ids = [f"clip{i:03d}" for i in range(120)]
    for i, name in enumerate(ids):
        (public / ("train" if i < 100 else "test") / f"{name}.wav").write_bytes(f"RIFF{i}".encode())
    pd.DataFrame({"id": ids[:100], "digit": [i % 4 for i in range(100)]}).to_csv(public / "train.csv", index=False)
    pd.DataFrame({"id": ids[100:]}).to_csv(public / "test.csv", index=False)
    pd.DataFrame({"id": ids[100:], "digit": 0}).to_csv(public / "sample_submission.csv", index=False)
    plan = _plan(public)
    assert plan.folder == ("train", "test", ".wav") and plan.rows == 10
    assert all(f.startswith("clip") and len(f) == 7 for f in plan.fresh_ids)  # ids drawn like the others
    view = build_view(public, plan, tmp_path / "view")
    for old, new in zip(plan.held_train_ids, plan.fresh_ids, strict=True):
        assert not (view / "train" / f"{old}.wav").exists()
        assert (view / "test" / f"{new}.wav").read_bytes() == (public / "train" / f"{old}.wav").read_bytes()
    assert len(list((view / "train").iterdir())) == 90 and len(list((view / "test").iterdir())) == 30
    assert (public / "train" / f"{plan.held_train_ids[0]}.wav").exists()  # the public files are untouched


@pytest.mark.parametrize(("change", "reason"), [
    ("no-sample", "no sample submission"),
    ("probabilities", "are not train columns"),
    ("few-rows", "too few training rows"),
])
def test_layouts_that_cannot_be_split_say_why(tmp_path, change, reason):
    public = _public(tmp_path, n_train=200 if change != "few-rows" else 25, n_test=20)
    sample = public / "sample_submission.csv"
    if change == "no-sample":
        sample.unlink()
    if change == "probabilities":
        test = pd.read_csv(public / "test.csv")
        pd.DataFrame({"id": test.id, "0": 0.5, "1": 0.5}).to_csv(sample, index=False)
    result = plan_holdout(public, sample, seed=0)
    assert isinstance(result, Unsplittable) and reason in result.reason
