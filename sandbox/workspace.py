"""Per-node workspace directories.

Layout of a workspace (``root`` is the script's cwd)::

    root/
      input -> <public_dir>   absolute symlink to the task's public data
      working/                scratch space, wiped on every create_workspace()
      submission/             the script writes submission.csv here, wiped likewise
      solution.py             written by run_script()
      output.log              combined stdout+stderr of the last run

``input`` is always a symlink, for both backends.  The bwrap backend
additionally ro-binds the public directory at its own (real) host path inside
the sandbox, so the symlink resolves there to a read-only mount.  (bwrap cannot
mount over a symlink, and replacing the link by a mount point per backend would
make a workspace depend on the backend that last ran in it.)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sandbox.errors import SandboxError

INPUT = "input"
WORKING = "working"
SUBMISSION = "submission"


@dataclass(frozen=True)
class Workspace:
    root: Path  # the node's workspace dir (cwd of the script)
    input_dir: Path  # root / "input" -> the task's public data, read-only to the script
    working_dir: Path  # root / "working" -> scratch, writable
    submission_dir: Path  # root / "submission" -> script must write submission.csv here
    public_dir: Path  # the real public data dir on the host


def _make_writable_and_retry(func, path, _exc_info) -> None:
    # A script may leave read-only directories behind; make them writable and retry once.
    parent = os.path.dirname(path)
    for p in (parent, path):
        if os.path.islink(p):  # never chmod through a link (it may point outside)
            continue
        try:
            os.chmod(p, 0o700)
        except OSError:
            pass
    func(path)


def _remove(path: Path) -> None:
    """Remove a file, symlink or directory tree at ``path`` (no-op if absent)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path, onerror=_make_writable_and_retry)
    elif os.path.lexists(path):  # fifo, socket, ...
        path.unlink()


def ensure_input_link(ws: Workspace) -> None:
    """(Re)create ``ws.input_dir`` as a symlink to ``ws.public_dir`` if it is not one.

    Cheap (one readlink) in the normal case; repairs a link a previous script removed.
    """
    target = str(ws.public_dir)
    try:
        if os.readlink(ws.input_dir) == target:
            return
    except OSError:
        pass
    _remove(ws.input_dir)
    os.symlink(target, ws.input_dir)


def create_workspace(root: Path, public_dir: Path) -> Workspace:
    """Create (or reset) the workspace at ``root`` showing ``public_dir`` as ``root/input``.

    Idempotent: on an existing workspace ``working/`` and ``submission/`` are wiped and
    re-created, so a node re-executed after a crash starts clean.  Other files in ``root``
    are left alone (``solution.py`` and ``output.log`` are overwritten by each run).
    """
    public = Path(public_dir).expanduser().resolve()
    if not public.is_dir():
        raise SandboxError(f"public data directory does not exist: {public_dir}")
    root = Path(root).expanduser().resolve()
    if root == public or root.is_relative_to(public) or public.is_relative_to(root):
        raise SandboxError(
            f"workspace {root} and public data directory {public} must not contain each other"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SandboxError(f"cannot create workspace {root}: {e}") from e
    ws = Workspace(
        root=root,
        input_dir=root / INPUT,
        working_dir=root / WORKING,
        submission_dir=root / SUBMISSION,
        public_dir=public,
    )
    for d in (ws.working_dir, ws.submission_dir):
        _remove(d)
        d.mkdir()
    ensure_input_link(ws)
    return ws
