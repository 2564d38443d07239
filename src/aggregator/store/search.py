"""Full-text indexing in batches, apart from the item inserts (SQLite; migration 0014).

An inserted item is queued (``search_queue``, by a trigger); ``index_queued`` indexes
the queued items in one ``INSERT … SELECT`` into ``items_fts`` and empties the queue up
to them. The save path (``ingest``) calls it after its commits, every
``INDEX_EVERY`` seconds at most, and before it stops, so a search misses at most the
items of the last few seconds; ``lag`` says how many and since when (the HTTP face sends
it as ``X-Search-Lag``). PostgreSQL indexes every insert by itself (a GIN expression
index): nothing is queued there, and the lag is always none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, column, func, select, table, text

from .database import Database
from .tables import items

INDEX_EVERY = 2.0  # seconds between two indexing passes of the save path
BATCH = 5000  # items indexed per transaction
QUEUE = table("search_queue", column("item_id"))  # SQLite only (not in the metadata)


@dataclass(frozen=True)
class SearchLag:
    """Items the full-text index does not hold yet, and the first-seen time of the
    oldest of them."""

    items: int = 0
    oldest: datetime | None = None


def index_queued(conn: Connection, limit: int = BATCH) -> int:
    """Index up to ``limit`` queued items (the oldest first); how many were."""
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
    if conn.dialect.name != "sqlite":
        return SearchLag()
    count, oldest = conn.execute(
        select(func.count(), func.min(items.c.first_seen_at)).select_from(
            QUEUE.join(items, items.c.id == QUEUE.c.item_id)
        )
    ).one()
    return SearchLag(int(count), oldest)


class SearchMixin(Database):
    def index_search(self, *, everything: bool = False) -> int:
        """Index the queued items (SQLite): one batch, or ``everything`` queued, in short
        transactions; how many were indexed."""
        if self.dialect != "sqlite" or self.read_only:
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
