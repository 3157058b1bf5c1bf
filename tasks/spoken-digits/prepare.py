"""Spoken digits: which word ("zero".."nine") a short noisy recording says.

Speech is synthesized offline with the Debian package `espeak-ng` (English accents x voice
variants, random speed, pitch and amplitude), resampled from espeak's 22050 Hz to 16 kHz mono,
placed at a random offset in a clip of random length, scaled by a random gain and mixed with
noise (white, brown or mains hum with harmonics) at a random signal-to-noise ratio, then written
as 16-bit PCM WAV files.

Deterministic: espeak-ng's output is byte-identical for identical arguments (checked with
espeak-ng 1.51+dfsg-10+deb12u2, Debian 12; another version may synthesize different audio, which
checksums.json then reports), every synthesis parameter is drawn up front from a fixed numpy seed,
and each clip's augmentation uses its own generator seeded from (SEED, clip index), so the result
does not depend on the order in which clips are synthesized.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.io import wavfile
from scipy.signal import resample_poly

from tasks.prepare import PrepareError, shuffle_with_ids, write_competition_files

SEED = 20261125
APT_PACKAGE = "espeak-ng"
RATE = 16000
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CLIPS_PER_WORD = 120
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
            "klatt", "klatt2", "klatt3", "croak", "whisper")
NOISES = ("white", "brown", "hum")


def _synthesis_plan() -> pd.DataFrame:
    rng = np.random.default_rng(SEED)
    n = len(WORDS) * CLIPS_PER_WORD
    words = np.repeat(np.array(WORDS), CLIPS_PER_WORD)
    variants = rng.choice(len(VARIANTS), n)
    return pd.DataFrame({
        "label": words,
        "voice": [a + (f"+{VARIANTS[v]}" if VARIANTS[v] else "") for a, v in
                  zip(rng.choice(np.array(ACCENTS), n), variants)],
        "speed": rng.integers(110, 260, n),
        "pitch": rng.integers(5, 95, n),
        "amplitude": rng.integers(60, 180, n),
    })


def _synthesize(row: pd.Series) -> np.ndarray:
    """espeak-ng's waveform (float, 16 kHz) for one row of the plan."""
    cmd = ["espeak-ng", "-v", row["voice"], "-s", str(row["speed"]), "-p", str(row["pitch"]),
           "-a", str(row["amplitude"]), "--stdout", row["label"]]
    out = subprocess.run(cmd, check=True, capture_output=True).stdout
    data = out[out.index(b"data") + 8:]  # --stdout writes a streaming header (unknown sizes)
    samples = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float64) / 32768.0
    return resample_poly(samples, 320, 441)  # 22050 Hz -> 16000 Hz


def _augment(speech: np.ndarray, index: int) -> np.ndarray:
    """Trim, place at a random offset, random gain, add noise at a random SNR; int16 samples."""
    rng = np.random.default_rng([SEED, index])
    loud = np.flatnonzero(np.abs(speech) > 0.01 * np.abs(speech).max())
    speech = speech[loud[0]: loud[-1] + 1] if len(loud) else speech
    speech = speech[: int(1.3 * RATE)]
    lead, tail = (rng.uniform(0.0, 0.3, 2) * RATE).astype(int)
    speech = speech * 10 ** (rng.uniform(-20.0, -1.0) / 20) / max(np.abs(speech).max(), 1e-9)
    clip = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
    kind = NOISES[rng.integers(len(NOISES))]
    if kind == "white":
        noise = rng.standard_normal(len(clip))
    elif kind == "brown":
        noise = np.cumsum(rng.standard_normal(len(clip)))
        noise -= np.linspace(noise[0], noise[-1], len(noise))
    else:
        t = np.arange(len(clip)) / RATE
        f0 = rng.choice([50.0, 60.0])
        noise = sum(rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
                    for h in (1, 2, 3, 5)) + 0.1 * rng.standard_normal(len(clip))
    snr_db = rng.uniform(0.0, 30.0)
    noise *= np.sqrt(np.mean(speech ** 2) / 10 ** (snr_db / 10) / max(np.mean(noise ** 2), 1e-12))
    return np.clip(np.round((clip + noise) * 32767), -32768, 32767).astype(np.int16)


def prepare(task_dir: Path) -> None:
    """Write prepared/public (WAVs, train/test CSVs, sample submission, description) and private."""
    if shutil.which("espeak-ng") is None:
        raise PrepareError(f"espeak-ng not found; install the OS package: apt-get install -y {APT_PACKAGE}")
    plan = _synthesis_plan()
    with ThreadPoolExecutor(max_workers=4) as pool:
        speech = list(pool.map(_synthesize, (row for _, row in plan.iterrows())))
    clips = [_augment(s, i) for i, s in enumerate(speech)]
    frame = shuffle_with_ids(pd.DataFrame({"label": plan["label"], "clip": range(len(plan))}), SEED,
                             (10000, 99999))
    n_train = int(len(frame) * 0.7)
    train, test = frame.iloc[:n_train], frame.iloc[n_train:]
    write_competition_files(task_dir, train[["id", "label"]], test[["id", "label"]], "label", "zero")
    public = task_dir / "prepared" / "public"
    for split, part in (("train", train), ("test", test)):
        (public / split).mkdir()
        for clip_id, index in zip(part["id"], part["clip"]):
            buffer = io.BytesIO()
            wavfile.write(buffer, RATE, clips[index])
            (public / split / f"{clip_id}.wav").write_bytes(buffer.getvalue())
