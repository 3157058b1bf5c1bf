"""The graphs `langgraph dev` (LangGraph Studio) serves, and the checkpointer it persists them with.

langgraph.json names the module-level graphs below and `make_checkpointer`. The graphs are
compiled WITHOUT a checkpointer (the API server refuses graphs that carry one and attaches its
own); persistence comes from langgraph.json's `"checkpointer": {"path": ...}`, which replaces the
dev server's in-memory checkpointer with `make_checkpointer`'s SQLite file.

All four take the same runtime context, `graphs.settings.RunContext`: a run's settings (the
fields of run.json and of the CLI's flags: task_dir, base_url, strategy, steps, samples, top_p,
mem_limit_mb, ...) and `run_dir`. Given plain values they build their services with the CLI's own
builder and keep each thread's run under run_dir/<thread id>/ (or run_dir/<run_id>/). A key that
is not a setting is refused, not dropped.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from graphs.planner_coder import build_planner_coder_graph
from graphs.search import build_search_graph
from graphs.self_consistency import build_self_consistency_graph
from graphs.self_reflection import build_self_reflection_graph

DB_ENV = "ITS_MLE_STUDIO_DB"
DEFAULT_DB = Path(".langgraph_api") / "its_mle_checkpoints.sqlite"

tree_search = build_search_graph().compile(name="tree_search")
self_consistency = build_self_consistency_graph().compile(name="self_consistency")
self_reflection = build_self_reflection_graph().compile(name="self_reflection")
planner_coder = build_planner_coder_graph().compile(name="planner_coder")


def studio_db_path() -> Path:
    """The SQLite file: $ITS_MLE_STUDIO_DB, else .langgraph_api/ under the server's directory."""
    return Path(os.environ.get(DB_ENV) or DEFAULT_DB).expanduser().absolute()


@asynccontextmanager
async def make_checkpointer() -> AsyncIterator[AsyncSqliteSaver]:
    """The dev server's checkpointer: an AsyncSqliteSaver on `studio_db_path()`.

    langgraph-api calls this (no arguments) once per event-loop thread and enters the returned
    async context manager for the server's lifetime; it needs the async saver (aput, aget_tuple,
    alist, ...). Blocking file work runs off the loop (the dev server flags blocking calls).
    """
    path = studio_db_path()
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        await saver.setup()
        yield saver
