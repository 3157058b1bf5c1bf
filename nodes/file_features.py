"""Files in folders as rows of numbers: what the data facts say about images, WAV recordings and
.npy arrays that a table's column names, and the outline lines that read one file into a
fixed-length vector.

Any task whose rows are files (MLE-bench's image and audio competitions lay them out as
`train/<id>.png` beside `train.csv`): the facts measure a few of the files (image sizes and
modes; sample rates, channels and durations; array shapes), and the outline starts with a
`features_of(path)` function that turns one file into a vector with the package that reads it
where scripts run (Pillow, SciPy, NumPy), and `X`, `X_test` stacked in the tables' row order.
A small model that is shown nothing writes loaders for packages that are not there or reads the
whole folder in directory order, which loses the row-to-label mapping.

Measured once, deterministically: the first files in sorted order, never all of them.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_IMAGE = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_AUDIO = {".wav"}
_ARRAY = {".npy"}
_MEASURED = 20  # files opened to measure a folder
_MAX_PIXELS = 32 * 32  # a flattened image longer than this is shrunk (a start, not the best model)
_AUDIO_BANDS = 64  # log-spectrum bands of a recording


@dataclass
class FileKind:
    """What a folder's files are, as measured, and how the outline reads one."""
    kind: str  # "image", "audio", "array"
    package: str  # the distribution that reads them where scripts run
    fact: str  # one line for the data facts
    imports: list[str]
    reader: list[str]  # the lines of `def features_of(path): ...`
    notes: list[str] = field(default_factory=list)


def _ranked(counts: Counter) -> list[tuple]:
    """(value, count) pairs, most first, ties by value: deterministic text."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _installed(package: str, installed: frozenset[str] | None) -> bool:
    if installed is not None:
        return package in installed
    module = {"pillow": "PIL", "scipy": "scipy", "numpy": "numpy"}[package]
    return importlib.util.find_spec(module) is not None


def _image_kind(paths: list[Path], count: int, ext: str) -> FileKind | None:
    try:
        from PIL import Image
    except ImportError:  # the facts are computed where Pillow may be absent: say less
        return None
    sizes: Counter = Counter()
    modes: Counter = Counter()
    for path in paths:
        try:
            with Image.open(path) as image:
                sizes[image.size] += 1
                modes[image.mode] += 1
        except Exception:  # noqa: BLE001 - a file Pillow cannot read is left out of the counts
            continue
    if not sizes:
        return None
    (w, h), _ = _ranked(sizes)[0]
    shown = ", ".join(f"{a}x{b}: {n}" for (a, b), n in _ranked(sizes)[:4])
    mode_text = ", ".join(f"{m}: {n}" for m, n in _ranked(modes))
    scale = min(1.0, math.sqrt(_MAX_PIXELS / (w * h)))
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    same = len(sizes) == 1
    fact = (f"{count} {ext} images; of the first {sum(sizes.values())}, width x height {shown}"
            f"{'' if same else ' (sizes differ: resize to one size)'}; modes {mode_text}")
    shrink = "" if (tw, th) == (w, h) else f" (shrunk from {w}x{h})"
    reader = [
        "def features_of(path):",
        f"    \"\"\"One image as a fixed-length vector: its grey levels at {tw}x{th}{shrink}, in 0..1.\"\"\"",
        f"    image = Image.open(path).convert('L').resize(({tw}, {th}))",
        "    return np.asarray(image, dtype=np.float32).ravel() / 255.0",
    ]
    return FileKind("image", "pillow", fact, ["from PIL import Image"], reader)


def _audio_kind(paths: list[Path], count: int, ext: str) -> FileKind | None:
    try:
        from scipy.io import wavfile
    except ImportError:
        return None
    rates: Counter = Counter()
    channels: Counter = Counter()
    seconds: list[float] = []
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rate, data = wavfile.read(path)
        except Exception:  # noqa: BLE001 - an unreadable file is left out of the counts
            continue
        rates[rate] += 1
        channels[1 if data.ndim == 1 else data.shape[1]] += 1
        seconds.append(len(data) / rate if rate else 0.0)
    if not rates:
        return None
    rate = _ranked(rates)[0][0]
    rate_text = ", ".join(f"{r} Hz: {n}" for r, n in _ranked(rates))
    chan_text = ", ".join(f"{c} channel{'s' if c > 1 else ''}: {n}" for c, n in sorted(channels.items()))
    lengths = (f"{min(seconds):.3g} to {max(seconds):.3g} s long (lengths differ: make features of a "
               "fixed length)" if max(seconds) - min(seconds) > 1e-9 else f"{seconds[0]:.3g} s each")
    fact = (f"{count} {ext} recordings; of the first {len(seconds)}: sample rate {rate_text}; {chan_text}; "
            f"{lengths}")
    n_fft = 1 << max(8, math.ceil(math.log2(max(2.0, rate * max(seconds)))))
    reader = [
        "def features_of(path):",
        f"    \"\"\"One recording as a fixed-length vector: its log spectrum in {_AUDIO_BANDS} bands.\"\"\"",
        "    rate, signal = wavfile.read(path)",
        "    signal = signal.astype(np.float32)",
        "    if signal.ndim > 1:  # several channels: their mean",
        "        signal = signal.mean(axis=1)",
        f"    spectrum = np.abs(np.fft.rfft(signal, n={n_fft}))  # padded or cut: one length for all",
        f"    return np.log1p(np.array([band.mean() for band in np.array_split(spectrum, {_AUDIO_BANDS})]))",
    ]
    return FileKind("audio", "scipy", fact, ["from scipy.io import wavfile"], reader)


def _array_kind(paths: list[Path], count: int, ext: str) -> FileKind | None:
    import numpy as np

    shapes: Counter = Counter()
    for path in paths:
        try:
            shapes[tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)] += 1
        except Exception:  # noqa: BLE001 - an unreadable file is left out of the counts
            continue
    if not shapes:
        return None
    shown = ", ".join(f"{s}: {n}" for s, n in _ranked(shapes)[:4])
    same = len(shapes) == 1
    fact = (f"{count} {ext} arrays; of the first {sum(shapes.values())}, shapes {shown}"
            f"{'' if same else ' (shapes differ: make features of a fixed length)'}")
    reader = ["def features_of(path):",
              "    \"\"\"One array, flattened.\"\"\"" if same else
              "    \"\"\"One array as fixed-length summary numbers (the shapes differ).\"\"\"",
              "    array = np.load(path).astype(np.float32)",
              "    return array.ravel()" if same else
              "    return np.array([array.mean(), array.std(), array.min(), array.max()])"]
    return FileKind("array", "numpy", fact, [], reader)


def measure_files(paths: list[Path], installed: frozenset[str] | None = None) -> FileKind | None:
    """What the files of one folder are (all of one type), measured on the first few in sorted
    order, with the reader the outline uses; None for other types, or when the package that
    reads them is not installed where scripts run (`installed`: distribution names; None: this
    interpreter's)."""
    suffixes = Counter(p.suffix.lower() for p in paths)
    if not suffixes:
        return None
    ext, n = suffixes.most_common(1)[0]
    if n < 0.9 * len(paths):
        return None
    chosen = sorted((p for p in paths if p.suffix.lower() == ext), key=lambda p: p.as_posix())[:_MEASURED]
    for kinds, build in ((_IMAGE, _image_kind), (_AUDIO, _audio_kind), (_ARRAY, _array_kind)):
        if ext in kinds:
            found = build(chosen, n, ext)
            if found is None:
                return None
            if not _installed(found.package, installed):
                found.reader = []
                found.notes.append(f"{found.package} is not installed where scripts run")
            return found
    return None
