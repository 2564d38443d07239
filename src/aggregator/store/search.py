"""Full-text indexing in batches, apart from the item inserts (SQLite: migration 0014;
PostgreSQL: migration 0017).

An inserted item is queued (``search_queue``, by a trigger); ``index_queued`` indexes
the queued items in one ``INSERT … SELECT`` (into ``items_fts`` on SQLite, into
``item_search`` on PostgreSQL) and removes them from the queue. The save path
(``ingest``) calls it after its commits, every ``INDEX_EVERY`` seconds at most, and
before it stops, so a search misses at most the items of the last few seconds; ``lag``
says how many and since when (the HTTP face sends it as ``X-Search-Lag``).

On PostgreSQL several daemons index at once: each takes queued ids ``FOR UPDATE SKIP
LOCKED``, so two batches never hold the same item and never wait on each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, column, func, select, table, text

from .database import Database
from .tables import items

INDEX_EVERY = 2.0  # seconds between two indexing passes of the save path
BATCH = 5000  # items indexed per transaction
QUEUE = table("search_queue", column("item_id"))  # not in the metadata (migrations 0014, 0017)
ITEM_SEARCH = table("item_search", column("item_id"), column("vector"))  # PostgreSQL (0017)
# The text-search vector of an item (PostgreSQL): migration 0017 computes the same.
PG_VECTOR = (
    "to_tsvector('simple'::regconfig, "
    "left(coalesce(i.title, '') || ' ' || coalesce(i.text, ''), 100000))"
)
# One PostgreSQL batch: the oldest queued ids no other batch holds, their vectors, the
# queue emptied of them (also of ids whose item is gone); the count of ids taken. The
# items are locked FOR KEY SHARE: one deleted meanwhile is skipped once its deletion
# commits (instead of failing the vector's foreign key), and one changed meanwhile is
# read as changed (the change's own trigger wrote its vector too, see migration 0017).
PG_BATCH = text(
    "WITH batch AS (DELETE FROM search_queue WHERE item_id IN ("
    " SELECT item_id FROM search_queue ORDER BY item_id LIMIT :n FOR UPDATE SKIP LOCKED)"
    " RETURNING item_id),"
    " indexed AS (INSERT INTO item_search (item_id, vector)"
    f" SELECT i.id, {PG_VECTOR} FROM batch JOIN items AS i ON i.id = batch.item_id"
    " FOR KEY SHARE OF i"
    " ON CONFLICT (item_id) DO UPDATE SET vector = excluded.vector RETURNING 1)"
    " SELECT count(*) FROM batch"
)


@dataclass(frozen=True)
class SearchLag:
    """Items the full-text index does not hold yet, and the first-seen time of the
    oldest of them."""

    items: int = 0
    oldest: datetime | None = None


def index_queued(conn: Connection, limit: int = BATCH) -> int:
    """Index up to ``limit`` queued items (the oldest first); how many were."""
    if conn.dialect.name == "postgresql":
        return int(conn.execute(PG_BATCH, {"n": limit}).scalar_one())
    if conn.dialect.name != "sqlite":
        return 0
    last = conn.execute(
        text(
            "SELECT max(item_id) FROM (SELECT item_id FROM search_queue ORDER BY item_id LIMIT :n)"
        ),
        {"n": limit},
    ).scalar()
    if last is None:
        return 0
    conn.execute(
        text(
            "INSERT INTO items_fts(rowid, title, text)"
            " SELECT i.id, i.title, i.text FROM search_queue AS q"
            " JOIN items AS i ON i.id = q.item_id WHERE q.item_id <= :last"
        ),
        {"last": last},
    )
    done = conn.execute(text("DELETE FROM search_queue WHERE item_id <= :last"), {"last": last})
    return int(done.rowcount or 0)


def lag(conn: Connection) -> SearchLag:
    if conn.dialect.name not in ("sqlite", "postgresql"):
        return SearchLag()
    count, oldest = conn.execute(
        select(func.count(), func.min(items.c.first_seen_at)).select_from(
            QUEUE.join(items, items.c.id == QUEUE.c.item_id)
        )
    ).one()
    return SearchLag(int(count), oldest)


class SearchMixin(Database):
    def index_search(self, *, everything: bool = False) -> int:
        """Index the queued items: one batch, or ``everything`` queued, in short
        transactions; how many were indexed."""
        if self.dialect not in ("sqlite", "postgresql") or self.read_only:
            return 0
        total = 0
        while True:
            with self.locked_tx() as conn:
                done = index_queued(conn)
            total += done
            if not everything or done < BATCH:
                return total

    def search_lag(self) -> SearchLag:
        with self.read() as conn:
            return lag(conn)
