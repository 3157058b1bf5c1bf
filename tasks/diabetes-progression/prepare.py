"""Disease progression one year after baseline (the diabetes data shipped in scikit-learn).

Deterministic: fixed shuffle seed, 70/30 split, fixed random ids. Features are the raw clinical
values (age in years, sex as 1/2, BMI, blood pressure, six blood serum measurements).
"""

from __future__ import annotations

from pathlib import Path

from sklearn.datasets import load_diabetes

from tasks.prepare import shuffle_with_ids, write_competition_files

SEED = 20261123


def prepare(task_dir: Path) -> None:
    """Write prepared/public (train, test, sample submission, description) and prepared/private."""
    data = load_diabetes(as_frame=True, scaled=False)
    frame = data.frame.rename(columns={"s1": "tc", "s2": "ldl", "s3": "hdl", "s4": "tch", "s5": "ltg",
                                       "s6": "glu", "target": "progression"})
    frame = shuffle_with_ids(frame, SEED, (100000, 999999)).round(4)
    n_train = int(len(frame) * 0.7)
    train, test = frame.iloc[:n_train], frame.iloc[n_train:]
    mean = round(float(train["progression"].mean()), 1)
    write_competition_files(task_dir, train, test, "progression", mean)
