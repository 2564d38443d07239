"""Story decisions taken off the single writer: planned against a read snapshot, checked
by the writer (SQLite; issue 18 item 4).

The writer of an SQLite store is one thread of one process; reading a poll's candidates
and deciding its stories was most of its time. ``plan_poll`` does that reading and
deciding in a pool worker, against a read snapshot (an SQLite WAL reader never blocks the
writer), and returns a ``SavePlan``: for each new entry whether it needs a decision and
which. The writer (``poll.save_poll``) then only checks that nothing it committed since
that snapshot could change the plan, and writes. Optimistic: when something could, the
writer decides the poll itself, as before. Either way the outcome is the one deciding
serially gives (``tests/test_plan.py`` replays the same polls both ways).

What the writer checks, with its ``Journal``:

- the snapshot's mark (the highest item id it saw) must be above the journal's floor;
  the floor is raised to the latest item id whenever stored items change other than by
  new items: a story merge or a changed entry of this writer, or a commit by another
  connection (retention, ``stories rebuild``, another process: SQLite's
  ``data_version``);
- no item written since the mark shares a canonical URL or an LSH band with an entry of
  the poll (it would be a candidate), and no new story since the mark counted an anchor
  in a (site, anchor) pair the plan consulted (it could make that anchor common);
- the entries still new are the ones planned (another writer stored none of them).

A plan never holds a story merge (after one, decisions read the database again): a poll
whose planning meets one is decided by the writer. Items and stories the poll itself
writes are named in the plan by placeholders (``PLACEHOLDER`` + their order of writing,
which the writer's order reproduces), mapped to the real ids as they are written.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from ..records import PollToSave, SavePlan
from ..store import open_store

if TYPE_CHECKING:
    from ..store import Store

log = logging.getLogger(__name__)
# a poll with fewer new entries is decided by the writer: a plan costs the poll a trip to
# the pool and back and a read transaction, more than the writer's own decisions on a few
# entries (the daemon's usual poll brings one or two; a cold start, dozens)
PLAN_MIN_ENTRIES = 10


# ---- the pool's side -----------------------------------------------------------------

_stores: dict[str, Store] = {}  # per worker: the databases it plans against
KEEP_STORES = 4


def plan_job(url: str, poll: PollToSave, window: float) -> SavePlan | None:
    """Pool job: plan ``poll`` against a snapshot of the SQLite database at ``url`` (a
    read-only handle kept per worker). None when it cannot be planned, for whatever
    reason: the writer then decides it itself."""
    try:
        store = _stores.get(url)
        if store is None:
            while len(_stores) >= KEEP_STORES:  # a pool serves one database, tests many
                _stores.pop(next(iter(_stores))).close(truncate_wal=False)
            store = _stores[url] = open_store(url, pool_size=1, read_only=True)
        from . import planner  # dedup and numpy: in the worker only

        with store.read() as conn:
            return planner.plan_poll(conn, poll, window)
    except Exception as exc:  # noqa: BLE001  (a plan is an optimization: never a failure)
        log.debug("poll of feed %s not planned: %s", poll.feed_id, exc)
        return None


async def ahead(
    executor: Executor | None, url: str | None, poll: PollToSave, window: float
) -> SavePlan | None:
    """``poll``'s plan from a pool worker (None without a pool, for an SQLite file only,
    for a poll of fewer than ``PLAN_MIN_ENTRIES`` new entries, or when the pool cannot
    take it)."""
    if executor is None or url is None or len(poll.new) < PLAN_MIN_ENTRIES:
        return None
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(executor, plan_job, url, poll, window)
    except Exception as exc:  # noqa: BLE001  (a broken pool: the writer decides)
        log.debug("poll of feed %s not planned: %s", poll.feed_id, exc)
        return None


def plan_url(store: Store) -> str | None:
    """The database a pool worker plans against: an SQLite file only (an in-memory
    database is not shared; PostgreSQL decides in each poll's own transaction)."""
    path = store.file_path
    return None if path is None else f"sqlite:///{path}"
