"""A throwaway PostgreSQL cluster for tests: `initdb` + `pg_ctl` under a temp dir, on loopback
on a free port, trust authentication, stopped (immediate) and removed at the end.

Postgres refuses to run as root: as root the cluster runs as the `postgres` system user (made
with `useradd` when it does not exist) through `runuser`. Without the server binaries (Debian's
`postgresql` package, which scripts/setup.sh and .ci/run install) the tests that need it fail
with that message; they are not skipped.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

USER = "postgres"


def server_bin() -> Path:
    """The directory of `initdb` and `pg_ctl` (the newest Debian version, else the PATH's)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    initdb = found[-1] if found else shutil.which("initdb")
    if not initdb:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's `postgresql` "
                    "package (scripts/setup.sh does)", pytrace=False)
    return Path(initdb).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One throwaway cluster; `url` reaches its `postgres` database as user `its`."""

    def __init__(self) -> None:
        self.bin = server_bin()
        self.root = Path(tempfile.mkdtemp(prefix="its-mle-pg-"))
        self.port = _free_port()
        self.url = f"postgresql://its@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(USER)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", USER], check=True)
            os.chown(self.root, pwd.getpwnam(USER).pw_uid, pwd.getpwnam(USER).pw_gid)
            self._as = ["runuser", "-u", USER, "--"]

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run([*self._as, *cmd], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.is_file() else ""
            raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()}\n{tail}")

    def start(self) -> Cluster:
        data = self.root / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", "its", "--auth=trust", "--no-sync",
                  "-E", "UTF8", "--locale=C")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.root / "server.log"), "-o", options,
                  "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
