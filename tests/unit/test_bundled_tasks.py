"""Bundled competitions are prepared deterministically and their leaderboards reproduce."""

import importlib.util

import pandas as pd

from tasks.competition import load_competition
from tasks.prepare import bundled_tasks, prepare_task, prepared_checksums
from tests.conftest import ROOT


def test_every_bundled_task_prepares_to_its_checksums():
    for name in bundled_tasks():
        task_dir = prepare_task(name, force=True)
        comp = load_competition(task_dir)
        assert comp.gradable and comp.sample_submission is not None and comp.grader
        assert prepared_checksums(task_dir)  # prepare_task raised if they differed


def test_tumor_diagnosis_leaderboard_reproduces_from_its_reference_population():
    task_dir = ROOT / "tasks" / "tumor-diagnosis"
    prepare_task("tumor-diagnosis")
    spec = importlib.util.spec_from_file_location("lb", task_dir / "leaderboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rebuilt = module.build_leaderboard(task_dir)
    committed = pd.read_csv(task_dir / "leaderboard.csv")
    assert len(committed) >= 30
    pd.testing.assert_frame_equal(rebuilt, committed)
    assert committed["score"].is_monotonic_decreasing
    assert committed["score"].nunique() >= 15  # varied strength, not a block of ties
    assert load_competition(task_dir).leaderboard == task_dir / "leaderboard.csv"
