"""Disease progression one year after baseline (the diabetes data shipped in scikit-learn).

Deterministic: fixed shuffle seed, 70/30 split, fixed random ids. Features are the raw clinical
values (age in years, sex as 1/2, BMI, blood pressure, six blood serum measurements).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_diabetes

SEED = 20261123


def prepare(task_dir: Path) -> None:
    """Write prepared/public (train, test, sample submission, description) and prepared/private."""
    data = load_diabetes(as_frame=True, scaled=False)
    frame = data.frame.rename(columns={"s1": "tc", "s2": "ldl", "s3": "hdl", "s4": "tch", "s5": "ltg",
                                       "s6": "glu", "target": "progression"})
    rng = np.random.default_rng(SEED)
    frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
    frame.insert(0, "id", rng.choice(np.arange(100000, 999999), size=len(frame), replace=False))
    frame = frame.round(4)
    n_train = int(len(frame) * 0.7)
    train, test = frame.iloc[:n_train], frame.iloc[n_train:]

    public = task_dir / "prepared" / "public"
    private = task_dir / "prepared" / "private"
    for d in (public, private):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    train.to_csv(public / "train.csv", index=False)
    test.drop(columns=["progression"]).to_csv(public / "test.csv", index=False)
    mean = round(float(train["progression"].mean()), 1)
    sample = pd.DataFrame({"id": test["id"], "progression": mean})
    sample.to_csv(public / "sample_submission.csv", index=False)
    test[["id", "progression"]].to_csv(private / "answers.csv", index=False)
    shutil.copyfile(task_dir / "description.md", public / "description.md")
