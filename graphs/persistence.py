"""Where a run keeps its state, and which process may run it.

By default a run keeps its LangGraph checkpoints and its node records (`nodes.tree`: nodes, meta,
claims) in two SQLite files in its directory (`checkpoints.sqlite`, `nodes.sqlite`). With
`--checkpointer postgresql://...` both go to one Postgres database instead: the checkpoints to
langgraph-checkpoint-postgres's tables (thread id: the run id), the node records to `its_mle_*`
tables keyed by run id, with what a resume elsewhere needs of the run directory (run.json, the
held split's plan, each node's submission file). A run started on one machine then resumes on
another with `--resume RUN_ID --checkpointer URL` and an empty run directory.

A URL never reaches run.json or summary.json with its password (`redact_url`); a resume takes the
password from `--checkpointer` or from $ITS_MLE_CHECKPOINTER (`live_url`), else libpq's own
sources (PGPASSWORD, ~/.pgpass).

`claim_run` lets one process at a time run a run: an exclusive claim held while the process
lives and dropped by the kernel or the server when it dies, so a killed worker's run can be
taken over at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver

from nodes.files import submission_path, write_atomically, write_bytes_atomically
from nodes.tree import BaseNodeStore, Node, NodeStore
from tasks.holdout import HOLDOUT_DIR

CHECKPOINTER_ENV = "ITS_MLE_CHECKPOINTER"  # the URL (with its password) a resume may connect with
SCHEMES = ("postgresql://", "postgres://")
# run-directory files a resume on another machine needs, kept in the database's meta
SETTINGS_FILE = "run.json"
HELD_FILES = (f"{HOLDOUT_DIR}/plan.json", f"{HOLDOUT_DIR}/unsplittable.json")
_FILE_KEY = "file:"  # meta key prefix of a kept file


class PersistenceError(Exception):
    """A checkpointer URL or database the user can fix: one line, exit code 2."""


class RunBusy(Exception):
    """Another process holds the run's claim."""


def is_postgres(url: str | None) -> bool:
    """Whether `url` names a Postgres database."""
    return bool(url) and str(url).startswith(SCHEMES)


def check_url(url: str | None) -> str:
    """`url` when it is empty (SQLite in the run directory) or a Postgres URL."""
    if url and not is_postgres(url):
        raise PersistenceError(f"--checkpointer must be a postgresql:// URL, got '{redact_url(url)}' "
                               "(leave it out to keep the run in SQLite files in its directory)")
    return url or ""


def redact_url(url: str) -> str:
    """`url` without its password (in the user part or a `password` query parameter)."""
    if not url or "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if k.lower() != "password"]
    return urlunsplit((parts.scheme, netloc, parts.path,
                       urlencode(kept) if len(kept) < len(query) else parts.query, parts.fragment))


def live_url(stored: str, given: str | None = None) -> str:
    """The URL to connect with for a run whose settings hold `stored` (no password): `given`
    (the --checkpointer flag), else $ITS_MLE_CHECKPOINTER when it names the same database (it may
    carry the password), else `stored` (libpq then reads PGPASSWORD or ~/.pgpass)."""
    if given:
        return given
    env = os.environ.get(CHECKPOINTER_ENV, "")
    if stored and env and redact_url(env) == stored:
        return env
    return stored


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise PersistenceError("a postgresql:// checkpointer needs psycopg and "
                               "langgraph-checkpoint-postgres: pip install '.[postgres]'") from exc
    return psycopg


def _unreachable(url: str, exc: Exception) -> PersistenceError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
    return PersistenceError(f"cannot use the database {redact_url(url)}: {reason}")


def _connect(url: str, **kwargs: Any) -> Any:
    """An autocommit connection; an unreachable database is a PersistenceError (one line)."""
    psycopg = _psycopg()
    try:
        return psycopg.connect(url, autocommit=True, **kwargs)
    except psycopg.Error as exc:
        raise _unreachable(url, exc) from exc


def _key(*parts: str) -> int:
    """A stable 64-bit advisory-lock key."""
    digest = hashlib.sha256("\0".join(("its-mle", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def _serialized(conn: Any) -> Iterator[None]:
    """Table creation one process at a time (concurrent CREATE ... IF NOT EXISTS can collide).
    Polled, not waited for: a statement waiting on the lock would hold a snapshot that the
    holder's CREATE INDEX CONCURRENTLY (LangGraph's migrations) waits for in turn."""
    from psycopg.rows import tuple_row  # the saver's connection makes dict rows

    with conn.cursor(row_factory=tuple_row) as cur:
        while not cur.execute("SELECT pg_try_advisory_lock(%s)", (_key("schema"),)).fetchone()[0]:
            time.sleep(0.05)
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_key("schema"),))


@contextlib.contextmanager
def open_checkpointer(run_path: Path, url: str = "") -> Iterator[BaseCheckpointSaver]:
    """The run's LangGraph checkpointer (closed on exit): SQLite in the run directory, or
    Postgres at `url` (its tables set up on first use)."""
    if not url:
        conn = sqlite3.connect(str(run_path / "checkpoints.sqlite"), check_same_thread=False)
        try:
            yield SqliteSaver(conn)
        finally:
            conn.close()
        return
    psycopg = _psycopg()
    from langgraph.checkpoint.postgres import PostgresSaver

    with contextlib.ExitStack() as stack:
        try:
            saver = stack.enter_context(PostgresSaver.from_conn_string(url))
            with _serialized(saver.conn):
                saver.setup()
        except psycopg.OperationalError as exc:
            raise _unreachable(url, exc) from exc
        yield saver


def open_node_store(run_path: Path, url: str, run_id: str) -> BaseNodeStore:
    """The run's node store: `nodes.sqlite` in the run directory, or Postgres at `url`."""
    if not url:
        return NodeStore(run_path / "nodes.sqlite")
    return PostgresNodeStore(url, run_id, run_path)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS its_mle_nodes (
    run_id TEXT NOT NULL, id TEXT NOT NULL, step INTEGER NOT NULL, data TEXT NOT NULL,
    submission BYTEA, PRIMARY KEY (run_id, id));
CREATE TABLE IF NOT EXISTS its_mle_meta (
    run_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (run_id, key));
CREATE TABLE IF NOT EXISTS its_mle_claims (
    run_id TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, owner TEXT NOT NULL,
    PRIMARY KEY (run_id, kind, name));
CREATE INDEX IF NOT EXISTS its_mle_claims_owner ON its_mle_claims (run_id, kind, owner);
"""


class PostgresNodeStore(BaseNodeStore):
    """The node store in Postgres: NodeStore's tables with a run id column, so one database
    holds many runs. A node with a submission keeps the bytes of its file
    (`run_dir/submissions/<id>.csv`, written before `put`) in its row; `restore_run_files`
    writes the missing ones back."""

    def __init__(self, url: str, run_id: str, run_dir: Path | None = None) -> None:
        self.run_id = run_id
        self.run_dir = run_dir
        self._lock = threading.Lock()
        self._conn = _connect(url)
        with _serialized(self._conn):
            self._conn.execute(_SCHEMA)

    def claim(self, kind: str, base: str, owner: str) -> str:
        """A name `base-k` of `kind` for `owner`: the one it claimed before, else the first free."""
        pattern = f"{base}-%"
        with self._lock, self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_key("claims", self.run_id),))
            row = self._conn.execute(
                "SELECT name FROM its_mle_claims WHERE run_id = %s AND kind = %s AND owner = %s"
                " AND name LIKE %s", (self.run_id, kind, owner, pattern)).fetchone()
            if row is not None:
                return str(row[0])
            taken = {r[0] for r in self._conn.execute(
                "SELECT name FROM its_mle_claims WHERE run_id = %s AND kind = %s AND name LIKE %s",
                (self.run_id, kind, pattern))}
            k = 0
            while f"{base}-{k}" in taken:
                k += 1
            self._conn.execute(
                "INSERT INTO its_mle_claims (run_id, kind, name, owner) VALUES (%s, %s, %s, %s)",
                (self.run_id, kind, f"{base}-{k}", owner))
        return f"{base}-{k}"

    def release(self, kind: str, owners: Iterable[str]) -> None:
        with self._lock, self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_key("claims", self.run_id),))
            self._conn.execute(
                "DELETE FROM its_mle_claims WHERE run_id = %s AND kind = %s AND owner = ANY(%s)",
                (self.run_id, kind, list(owners)))

    def put(self, node: Node) -> None:
        """Write (or overwrite) one node with its submission file's bytes."""
        sub = submission_path(self.run_dir, node.id) if self.run_dir and node.has_submission else None
        data = sub.read_bytes() if sub is not None and sub.is_file() else None
        with self._lock:
            self._conn.execute(
                "INSERT INTO its_mle_nodes (run_id, id, step, data, submission) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (run_id, id) DO UPDATE SET step = EXCLUDED.step, data = EXCLUDED.data,"
                " submission = COALESCE(EXCLUDED.submission, its_mle_nodes.submission)",
                (self.run_id, node.id, node.step, node.model_dump_json(), data))

    def get(self, node_id: str) -> Node:
        """The full payload of one node."""
        with self._lock:
            row = self._conn.execute("SELECT data FROM its_mle_nodes WHERE run_id = %s AND id = %s",
                                     (self.run_id, node_id)).fetchone()
        if row is None:
            raise KeyError(node_id)
        return Node.model_validate_json(row[0])

    def all(self) -> list[Node]:
        """Every node in step order."""
        return self._nodes_below(None)

    def _before(self, steps: int) -> list[Node]:
        return self._nodes_below(steps)

    def _nodes_below(self, steps: int | None) -> list[Node]:
        # COLLATE "C": ids ordered bytewise, as SQLite orders them
        with self._lock:
            rows = self._conn.execute(
                'SELECT data FROM its_mle_nodes WHERE run_id = %s AND (%s::int IS NULL OR step < %s::int)'
                ' ORDER BY step, id COLLATE "C"', (self.run_id, steps, steps)).fetchall()
        return [Node.model_validate_json(r[0]) for r in rows]

    def count(self) -> int:
        """Number of stored nodes."""
        with self._lock:
            row = self._conn.execute("SELECT COUNT(*) FROM its_mle_nodes WHERE run_id = %s",
                                     (self.run_id,)).fetchone()
        return int(row[0])

    def set_meta(self, key: str, value: object) -> None:
        """Store a small run-level value (JSON)."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO its_mle_meta (run_id, key, value) VALUES (%s, %s, %s)"
                " ON CONFLICT (run_id, key) DO UPDATE SET value = EXCLUDED.value",
                (self.run_id, key, json.dumps(value)))

    def get_meta(self, key: str, default: object = None) -> object:
        """Read a run-level value stored with `set_meta`."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM its_mle_meta WHERE run_id = %s AND key = %s",
                                     (self.run_id, key)).fetchone()
        return default if row is None else json.loads(row[0])

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def _restore_submissions(self, run_dir: Path) -> None:
        with self._lock:
            kept = [r[0] for r in self._conn.execute(
                "SELECT id FROM its_mle_nodes WHERE run_id = %s AND submission IS NOT NULL", (self.run_id,))]
        for node_id in kept:
            path = submission_path(run_dir, node_id)
            if path.is_file():
                continue
            with self._lock:
                row = self._conn.execute("SELECT submission FROM its_mle_nodes WHERE run_id = %s AND id = %s",
                                         (self.run_id, node_id)).fetchone()
            write_bytes_atomically(path, bytes(row[0]))


def keep_run_files(store: BaseNodeStore, run_path: Path, *names: str) -> None:
    """Keep the run-directory files `names` (relative paths) in a Postgres store, so a resume
    on another machine finds them (a file that is absent is kept as absent). SQLite: nothing to
    do, the files are beside the store."""
    if not isinstance(store, PostgresNodeStore):
        return
    for name in names:
        path = run_path / name
        store.set_meta(_FILE_KEY + name, path.read_text(encoding="utf-8") if path.is_file() else None)


def restore_run_files(store: BaseNodeStore, run_path: Path) -> None:
    """Write back what a Postgres store keeps of the run directory and the directory lacks (a
    resume on another machine): run.json, the held split's plan, the nodes' submission files."""
    if not isinstance(store, PostgresNodeStore):
        return
    for name in (SETTINGS_FILE, *HELD_FILES):
        text = store.get_meta(_FILE_KEY + name)
        if isinstance(text, str) and not (run_path / name).exists():
            write_atomically(run_path / name, text)
    store._restore_submissions(run_path)


def stored_settings(url: str, run_id: str) -> str | None:
    """The run.json a Postgres database keeps for `run_id`, or None (no such run there)."""
    store = PostgresNodeStore(url, run_id)
    try:
        text = store.get_meta(_FILE_KEY + SETTINGS_FILE)
    finally:
        store.close()
    return text if isinstance(text, str) else None


def run_recorded(run_path: Path, run_id: str, url: str = "") -> bool:
    """Whether the run exists: its run.json in `run_path`, or kept in the Postgres database at
    `url` (a run started on another machine). A sweep's cell resumes such a run."""
    if (run_path / SETTINGS_FILE).is_file():
        return True
    return is_postgres(url) and stored_settings(url, run_id) is not None


def _holder_name() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


@contextlib.contextmanager
def claim_run(run_path: Path, run_id: str, url: str = "") -> Iterator[None]:
    """Hold the run's exclusive claim for the duration (RunBusy when another process holds it).

    SQLite (no `url`): an flock on `<run_dir>/<run_id>.lock` beside the run directory, naming
    its holder, removed when released. Postgres: a session advisory lock on a connection kept
    open. The kernel or the server drops either when the process dies."""
    if url:
        with _pg_claim(url, run_id):
            yield
        return
    lock = run_path.parent / f"{run_id}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip().splitlines()
            os.close(fd)
            raise RunBusy(f"run '{run_id}' is being run by {holder[0] if holder else 'another process'} "
                          f"(its claim: {lock})") from None
        try:  # a holder that released it may have removed the file after we opened it: again
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{_holder_name()}\n".encode())
        yield
    finally:
        lock.unlink(missing_ok=True)  # still held: whoever opens it next sees the removal
        os.close(fd)


@contextlib.contextmanager
def _pg_claim(url: str, run_id: str) -> Iterator[None]:
    key = _key("run", run_id)
    conn = _connect(url, application_name=f"its-mle {_holder_name()}"[:63])
    try:
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            # a bigint key shows in pg_locks as its high half (classid) and low half (objid)
            row = conn.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
                " AND l.classid::bigint = %s AND l.objid::bigint = %s"
                " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)).fetchone()
            name = row[0].removeprefix("its-mle ") if row and row[0] else "another process"
            raise RunBusy(f"run '{run_id}' is being run by {name} (its claim is in {redact_url(url)})")
        yield
    finally:
        conn.close()  # ends the session, which drops its advisory lock
