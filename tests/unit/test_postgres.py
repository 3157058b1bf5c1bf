"""Shared persistence: `--checkpointer postgresql://...` keeps a run's checkpoints and nodes in
Postgres (a throwaway cluster, tests/pg.py), so a run killed on one machine resumes on another
(a fresh run directory) to the tree an uninterrupted SQLite run builds; a password never reaches
the run's files; and a run's claim keeps a second process off it until the holder dies."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from graphs import persistence
from graphs.run import main
from nodes.tree import Node
from tests.conftest import ROOT, make_toy_task
from tests.doubles.stub import StubServer
from tests.unit.test_kill_resume import killed_after_a_node, start, tree_of, uninterrupted, wait_for
from views.cli import EXIT_BUSY

STEPS = 5
SECRET = "s3cret-pw"


def with_password(url: str) -> str:
    """The cluster's URL with a password (trust authentication ignores it)."""
    return url.replace("postgresql://its@", f"postgresql://its:{SECRET}@")


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "graphs.run", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def stub():
    # slow enough that a kill lands inside a review
    with StubServer(delay_s=0.3, exec_sleep=0.6) as server:
        yield server


@pytest.fixture(scope="module")
def reference(tmp_path_factory, stub):
    return uninterrupted(tmp_path_factory.mktemp("ref"), stub, STEPS)


def _after_two_nodes(lines, stub):
    return lambda: any("node 00002-0" in line for line in lines)


def _inside_a_review(lines, stub):
    """The script of a step has run (its checkpoint is written) and its review is being asked."""
    base = stub.requests

    def reviewing():
        return stub.requests > base + 2 and "Your job: review" in json.dumps(stub.bodies[-1])
    return reviewing


def _inside_a_record(lines, stub):
    """Killed by the run itself (`killed_after_a_node`), right after step 2's node was written."""
    return None


@pytest.mark.parametrize("kill_when", [_after_two_nodes, _inside_a_review, _inside_a_record])
def test_run_killed_on_one_machine_resumes_on_another(tmp_path, postgres_url, stub, reference, kill_when):
    task, expected = reference  # an uninterrupted run in SQLite files
    url = with_password(postgres_url)
    here, there = tmp_path / "machine-a", tmp_path / "machine-b"
    run_id = f"moved-{kill_when.__name__.strip('_')}"
    env = (killed_after_a_node(tmp_path, "graphs.persistence.PostgresNodeStore", 2)
           if kill_when is _inside_a_record else None)
    proc, lines = start(["--task", task, "--base-url", stub.base_url, "--steps", STEPS, "--run-dir", here,
                         "--exec-timeout", "30", "--seed", "7", "--run-id", run_id, "--checkpointer", url], env=env)
    condition = kill_when(lines, stub)
    if condition is not None:
        wait_for(condition)
        proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=120) == -signal.SIGKILL, "".join(lines)
    assert not (here / run_id / "tree.json").exists(), "".join(lines)  # it really died mid-run
    first = here / run_id
    assert not (first / "checkpoints.sqlite").exists() and not (first / "nodes.sqlite").exists()
    assert SECRET not in (first / "run.json").read_text()
    ran_here = sorted(p.name for p in (first / "workspaces").iterdir())
    shutil.rmtree(here)  # the first machine is gone, its workspaces with it
    # another machine: an empty run directory, the database and the task alone
    resumed = cli("--resume", run_id, "--run-dir", there, "--checkpointer", url)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming" in resumed.stdout and "validation held by the harness" in resumed.stdout
    moved = there / run_id
    got = tree_of(moved)
    assert [n["id"] for n in got] == [f"{s:05d}-0" for s in range(STEPS)]  # none lost or repeated
    assert got == expected
    if kill_when is not _after_two_nodes:  # its script ran on the first machine: it ran again here,
        # in a workspace of a new claim (the first machine's task holds the names it used)
        step = ran_here[-1].split("-")[0]
        again = [p.name for p in (moved / "workspaces").iterdir() if p.name.startswith(step)]
        assert again and not set(again) & set(ran_here), (ran_here, again)
    summary = json.loads((moved / "summary.json").read_text())
    assert summary["best_node_id"] and (moved / "submission.csv").is_file()
    assert (moved / "submission.csv").read_bytes() == (moved / "submissions" / f"{summary['best_node_id']}.csv").read_bytes()
    # no SQLite store on either machine (the first one's checked before it went), no password in
    # the run's files
    assert not (moved / "checkpoints.sqlite").exists() and not (moved / "nodes.sqlite").exists()
    for name in ("run.json", "summary.json"):
        assert SECRET not in (moved / name).read_text()
    assert json.loads((moved / "run.json").read_text())["checkpointer"] == postgres_url
    assert SECRET not in persistence.stored_settings(postgres_url, run_id)


def test_urls_lose_their_password_and_a_resume_finds_it(monkeypatch):
    assert persistence.redact_url("postgresql://u:p%40ss@db.example:5433/runs?sslmode=require") == \
        "postgresql://u@db.example:5433/runs?sslmode=require"
    assert persistence.redact_url("postgres://u@h/d?password=x&application_name=a") == "postgres://u@h/d?application_name=a"
    assert persistence.redact_url("postgresql://h/d") == "postgresql://h/d" and persistence.redact_url("") == ""
    with pytest.raises(persistence.PersistenceError, match="must be a postgresql:// URL"):
        persistence.check_url("sqlite:///x.db")
    assert persistence.check_url(None) == ""
    monkeypatch.setenv(persistence.CHECKPOINTER_ENV, "postgresql://u:pw@h/d")
    assert persistence.live_url("postgresql://u@h/d") == "postgresql://u:pw@h/d"  # the environment's, same database
    assert persistence.live_url("postgresql://u@other/d") == "postgresql://u@other/d"  # not that database
    assert persistence.live_url("postgresql://u@h/d", "postgresql://u:flag@h/d") == "postgresql://u:flag@h/d"
    assert persistence.live_url("") == ""  # a SQLite run stays one


def test_runs_share_a_database_apart_and_their_files_come_back(tmp_path, postgres_url):
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "submissions").mkdir(parents=True)
    (a / "submissions" / "00000-0.csv").write_bytes(b"id,label\n1,0\n")
    (a / "run.json").write_text('{"run_id": "shared"}')
    store = persistence.PostgresNodeStore(postgres_url, "shared", a)
    store.put(Node(id="00000-0", step=0, stage="draft", has_submission=True))
    store.put(Node(id="00001-0", step=1, stage="draft", prev_id="00000-0"))
    persistence.keep_run_files(store, a, "run.json", "holdout/plan.json")
    other = persistence.PostgresNodeStore(postgres_url, "another-run", b)
    assert other.count() == 0 and other.get_meta("file:run.json") is None
    persistence.restore_run_files(store, b)  # on another machine
    assert (b / "submissions" / "00000-0.csv").read_bytes() == b"id,label\n1,0\n"
    assert (b / "run.json").read_text() == '{"run_id": "shared"}' and not (b / "holdout").exists()
    assert not (b / "submissions" / "00001-0.csv").exists()
    store.put(Node(id="00000-0", step=0, stage="draft", has_submission=True))  # replayed where the file is not
    persistence.restore_run_files(store, tmp_path / "c")
    assert (tmp_path / "c" / "submissions" / "00000-0.csv").is_file()  # the bytes are kept
    store.close()
    other.close()


def test_processes_set_up_a_fresh_database_at_once(tmp_path, postgres_url):
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE fresh_setup")
    url = postgres_url.rsplit("/", 1)[0] + "/fresh_setup"

    def open_both(i):  # the checkpointer's migrations and the node tables, four at a time
        with persistence.open_checkpointer(tmp_path, url) as saver:
            assert saver.get_tuple({"configurable": {"thread_id": f"r{i}"}}) is None
        persistence.open_node_store(tmp_path, url, f"r{i}").close()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(open_both, range(4)))


def test_a_plain_context_keeps_its_nodes_in_postgres(tmp_path, toy_task, postgres_url):
    """Studio and notebooks name the database in the context; the node store goes there."""
    from graphs.services import close_services, services_for
    from graphs.settings import RunContext

    with StubServer() as server:
        ctx = RunContext(task_dir=str(toy_task), base_url=server.base_url, run_dir=str(tmp_path / "runs"),
                         sandbox="plain", checkpointer=with_password(postgres_url))
        assert ctx.checkpointer == postgres_url  # a context never carries the password on
        try:
            svc = services_for(ctx, "studio-thread")
            assert isinstance(svc.store, persistence.PostgresNodeStore) and svc.store.get_meta("system_text")
            assert svc.held is not None and svc.store.get_meta("file:holdout/plan.json")
            assert not (tmp_path / "runs" / "studio-thread" / "nodes.sqlite").exists()
        finally:
            close_services()


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from graphs.persistence import claim_run
    with claim_run(Path(sys.argv[1]), sys.argv[2], sys.argv[3]):
        print("held", flush=True)
        time.sleep(600)
""")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_claimed_run_is_refused_until_its_holder_dies(tmp_path, backend, request):
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else ""
    runs, run_id = tmp_path / "runs", f"claimed-{backend}"
    task = make_toy_task(tmp_path / "toy")
    with StubServer() as server:
        flags = ["--checkpointer", url] if url else []
        first = cli("--task", task, "--base-url", server.base_url, "--steps", 1, "--run-dir", runs,
                    "--exec-timeout", "30", "--run-id", run_id, *flags)
        assert first.returncode == 0, first.stdout + first.stderr
        assert sorted(p.name for p in runs.iterdir()) == [run_id]  # a released claim leaves no lock file
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(runs / run_id), run_id, url], cwd=ROOT,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            before = _files(runs)
            busy = cli("--resume", run_id, "--run-dir", runs, "--base-url", server.base_url)
            assert busy.returncode == EXIT_BUSY, busy.stdout + busy.stderr
            (line,) = busy.stderr.strip().splitlines()
            assert line.startswith(f"error: run '{run_id}' is being run by pid {holder.pid} on "), line
            assert _files(runs) == before  # nothing written
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
        if url:  # the claim went with the holder's session; a resume may take the URL from the environment
            again = cli("--resume", run_id, "--run-dir", runs, "--base-url", server.base_url,
                        env={persistence.CHECKPOINTER_ENV: url})
            assert again.returncode == 0, again.stdout + again.stderr
            taken = cli("--task", task, "--base-url", server.base_url, "--run-dir", tmp_path / "elsewhere",
                        "--run-id", run_id, "--checkpointer", url)
            assert taken.returncode == 2 and "already exists in" in taken.stderr, taken.stderr
        else:  # the kernel dropped the flock; a caller that holds the claim runs the run in-process
            with persistence.claim_run(runs / run_id, run_id, ""):
                with pytest.raises(persistence.RunBusy, match="is being run by pid"):
                    with persistence.claim_run(runs / run_id, run_id, ""):
                        pass
                assert main(["--resume", run_id, "--run-dir", str(runs), "--base-url", server.base_url],
                            claimed=True) == 0
            assert not (runs / f"{run_id}.lock").exists()
