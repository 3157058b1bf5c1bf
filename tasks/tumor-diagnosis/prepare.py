"""Tumor diagnosis from cell-nucleus measurements (Wisconsin breast cancer data in scikit-learn).

Deterministic: fixed shuffle seed, 70/30 split; ids are random-looking but fixed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer

SEED = 20261122


def prepare(task_dir: Path) -> None:
    """Write prepared/public (train, test, sample submission, description) and prepared/private."""
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" ", "_"))
    frame["diagnosis"] = np.where(frame.pop("target") == 1, "benign", "malignant")
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(frame))
    frame = frame.iloc[order].reset_index(drop=True)
    frame.insert(0, "id", rng.choice(np.arange(10000, 99999), size=len(frame), replace=False))
    frame = frame.round(6)
    n_train = int(len(frame) * 0.7)
    train, test = frame.iloc[:n_train], frame.iloc[n_train:]

    public = task_dir / "prepared" / "public"
    private = task_dir / "prepared" / "private"
    for d in (public, private):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    train.to_csv(public / "train.csv", index=False)
    test.drop(columns=["diagnosis"]).to_csv(public / "test.csv", index=False)
    pd.DataFrame({"id": test["id"], "diagnosis": "benign"}).to_csv(
        public / "sample_submission.csv", index=False
    )
    test[["id", "diagnosis"]].to_csv(private / "answers.csv", index=False)
    shutil.copyfile(task_dir / "description.md", public / "description.md")
