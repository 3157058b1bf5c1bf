"""Handwritten digit images (the 8x8 digits data shipped in scikit-learn), written as PNG files.

Deterministic: fixed shuffle seed, 70/30 split, fixed random ids. Pixel values 0..16 are scaled to
0..255 (rounded) and each image is saved as an 8-bit grayscale PNG with no metadata chunks and
no compression (stored deflate blocks), so the bytes do not depend on the zlib build.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits

from tasks.prepare import shuffle_with_ids, write_competition_files

SEED = 20261124


def _write_png(pixels: np.ndarray, path: Path) -> None:
    Image.fromarray(pixels).save(path, format="PNG", compress_level=0)


def prepare(task_dir: Path) -> None:
    """Write prepared/public (csvs, train/ and test/ images, description) and prepared/private."""
    data = load_digits()
    images = np.rint(data.images * (255.0 / 16.0)).astype(np.uint8)
    frame = pd.DataFrame({"row": np.arange(len(images)), "label": data.target.astype(int)})
    frame = shuffle_with_ids(frame, SEED, (10000, 99999))
    n_train = int(len(frame) * 0.7)
    train, test = frame.iloc[:n_train], frame.iloc[n_train:]
    write_competition_files(task_dir, train.drop(columns="row"), test.drop(columns="row"), "label", 0)
    public = task_dir / "prepared" / "public"
    for split, part in (("train", train), ("test", test)):
        (public / split).mkdir()
        for ident, row in zip(part["id"], part["row"]):
            _write_png(images[row], public / split / f"{ident}.png")
