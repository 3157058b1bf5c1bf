"""Fortune topics: which `fortune` database an entry comes from (Debian package `fortunes-min`).

The package ships three databases under /usr/share/games/fortunes/ (entries separated by lines
holding only `%`): `fortunes` (fortune-cookie sayings, ~430 entries), `literature` (quotations
about and from literature, ~260) and `riddles` (riddles, knock-knock jokes, ~130). All three are
used; none is too small to keep. Entries are cleaned of terminal overstriking (`x<BS>` pairs),
stripped of trailing whitespace, blank and duplicated texts are dropped (a text found in two
databases would be ambiguous). Deterministic: fixed shuffle seed, 70/30 split, fixed random ids.
Built and checked with fortunes-min 1:1.99.1-7.3 (Debian 12).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from tasks.prepare import PrepareError, shuffle_with_ids, write_competition_files

SEED = 20261124
FORTUNE_DIR = Path("/usr/share/games/fortunes")
CATEGORIES = ("fortunes", "literature", "riddles")
APT_PACKAGE = "fortunes-min"


def _clean(entry: str) -> str:
    while re.search(r"[^\n]\x08", entry):  # overstriking: "_<BS>X" (underline), "X<BS>X" (bold) -> "X"
        entry = re.sub(r"[^\n]\x08", "", entry, count=1)
    entry = entry.replace("\b", "")
    return "\n".join(line.rstrip() for line in entry.split("\n")).strip("\n")


def read_entries() -> pd.DataFrame:
    """One row per distinct fortune: text, category."""
    rows = []
    for category in CATEGORIES:
        path = FORTUNE_DIR / category
        if not path.is_file():
            raise PrepareError(f"{path} not found; install the OS package: apt-get install -y {APT_PACKAGE}")
        raw = path.read_bytes().decode("utf-8")
        for entry in re.split(r"^%\n", raw, flags=re.MULTILINE):
            text = _clean(entry)
            if text.strip():
                rows.append({"text": text, "category": category})
    frame = pd.DataFrame(rows)
    return frame.drop_duplicates("text", keep=False).reset_index(drop=True)


def prepare(task_dir: Path) -> None:
    """Write prepared/public (train, test, sample submission, description) and prepared/private."""
    frame = shuffle_with_ids(read_entries(), SEED, (10000, 99999))
    n_train = int(len(frame) * 0.7)
    write_competition_files(task_dir, frame.iloc[:n_train], frame.iloc[n_train:], "category", "fortunes")
