"""Tumor diagnosis from cell-nucleus measurements (Wisconsin breast cancer data in scikit-learn).

Deterministic: fixed shuffle seed, 70/30 split; ids are random-looking but fixed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

from tasks.prepare import shuffle_with_ids, write_competition_files

SEED = 20261122


def prepare(task_dir: Path) -> None:
    """Write prepared/public (train, test, sample submission, description) and prepared/private."""
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" ", "_"))
    frame["diagnosis"] = np.where(frame.pop("target") == 1, "benign", "malignant")
    frame = shuffle_with_ids(frame, SEED, (10000, 99999)).round(6)
    n_train = int(len(frame) * 0.7)
    write_competition_files(task_dir, frame.iloc[:n_train], frame.iloc[n_train:], "diagnosis", "benign")
