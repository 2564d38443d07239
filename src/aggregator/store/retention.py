"""Retention's SQL (migration 0016): current documents, tombstones, deletions, space.

- ``record_documents``: the save path records the entry keys of the document each poll
  read (``feed_documents``), in the poll's transaction; a row is rewritten only when the
  keys changed. A 304, a failure or a push leaves it as it was.
- ``tombstoned``: the entries whose items retention deleted (``item_tombstones``); the
  save path treats them as known (``items.known_entries``, ``items.stored_keys``).
- ``candidates``, ``delete_items``, ``drop_text``: the statements of a retention pass
  (``ingest/prune.py`` runs them in short transactions; the rule is ``retention.py``'s).
  Deleting items keeps their stories consistent (counts, times, representative; a story
  left without items is deleted); the dedup band rows go with their items (ON DELETE
  CASCADE), the full-text index follows by its triggers (SQLite) or its expression index
  (PostgreSQL), ``story_merges.item_id`` is set NULL. Events keep their own copy of what
  they announce (no foreign key).
- ``RetentionMixin.reclaim_space``: SQLite gives the freed pages back to the file system
  (``auto_vacuum=INCREMENTAL``, converting a file made without it once, by ``VACUUM``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    LargeBinary,
    and_,
    cast,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from ..records import ItemAge
from .batches import chunks
from .database import Database, db_errors
from .engine import BUSY_TIMEOUT_MS
from .storyrows import refresh_story
from .tables import dedup_bands, feed_documents, feeds, item_tombstones, items, stories

HEAVY = ("content", "text", "shingles")  # the columns drop_text_after clears
log = logging.getLogger("aggregator.store")
VACUUM_STEP = 2048  # pages (8 MiB at 4 KiB) given back per incremental_vacuum statement
FTS_MERGE_PAGES = 500  # full-text index pages merged per step


# ---- the current documents (the save path) -------------------------------------------------


def record_documents(
    conn: Connection, documents: Sequence[tuple[int, Sequence[str], datetime]]
) -> None:
    """Each feed's current document (``(feed id, its entry keys, when read)``), in the
    poll's transaction; a row whose keys did not change is not written."""
    if not documents:
        return
    rows = [
        {"feed_id": feed_id, "entry_keys": json.dumps(list(keys)), "updated_at": now}
        for feed_id, keys, now in documents
    ]
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(feed_documents)
        conn.execute(
            pg.on_conflict_do_update(
                index_elements=[feed_documents.c.feed_id],
                set_={"entry_keys": pg.excluded.entry_keys, "updated_at": pg.excluded.updated_at},
                where=feed_documents.c.entry_keys != pg.excluded.entry_keys,
            ),
            rows,
        )
        return
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    lite = sqlite_insert(feed_documents)
    conn.execute(
        lite.on_conflict_do_update(
            index_elements=[feed_documents.c.feed_id],
            set_={"entry_keys": lite.excluded.entry_keys, "updated_at": lite.excluded.updated_at},
            where=feed_documents.c.entry_keys != lite.excluded.entry_keys,
        ),
        rows,
    )


def current_keys(conn: Connection, feed_id: int) -> frozenset[str] | None:
    """The entry keys of the feed's current document (None: none recorded yet). On
    PostgreSQL the row is locked until the transaction ends, so no poll replaces the
    document while a retention pass decides on it."""
    query = select(feed_documents.c.entry_keys).where(feed_documents.c.feed_id == feed_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    found = conn.execute(query).scalar_one_or_none()
    return None if found is None else frozenset(json.loads(found))


# ---- tombstones --------------------------------------------------------------------------


def tombstoned(conn: Connection, feed_id: int, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` have a tombstone in the feed."""
    found: set[str] = set()
    for chunk in chunks(keys):
        found.update(
            conn.execute(
                select(item_tombstones.c.entry_key).where(
                    item_tombstones.c.feed_id == feed_id,
                    item_tombstones.c.entry_key.in_(list(chunk)),
                )
            ).scalars()
        )
    return found


def tombstones(conn: Connection, feed_id: int) -> list[tuple[str, datetime]]:
    """Every tombstone of the feed: ``(entry key, deleted at)``."""
    rows = conn.execute(
        select(item_tombstones.c.entry_key, item_tombstones.c.deleted_at).where(
            item_tombstones.c.feed_id == feed_id
        )
    )
    return [(r.entry_key, r.deleted_at) for r in rows]


def forget_tombstones(conn: Connection, feed_id: int, keys: Sequence[str]) -> int:
    removed = 0
    for chunk in chunks(keys):
        result = conn.execute(
            delete(item_tombstones).where(
                item_tombstones.c.feed_id == feed_id,
                item_tombstones.c.entry_key.in_(list(chunk)),
            )
        )
        removed += int(result.rowcount or 0)
    return removed


# ---- a retention pass ---------------------------------------------------------------------


@dataclass(frozen=True)
class FeedRow:
    id: int
    url: str  # the URL it is configured under (else its current URL)
    removed: bool  # no longer in feeds.yaml


def feed_rows(conn: Connection) -> list[FeedRow]:
    """Every feed with items or tombstones, in id order."""
    has_rows = or_(
        exists().where(items.c.feed_id == feeds.c.id),
        exists().where(item_tombstones.c.feed_id == feeds.c.id),
    )
    rows = conn.execute(
        select(feeds.c.id, feeds.c.configured_url, feeds.c.url, feeds.c.removed_at)
        .where(has_rows)
        .order_by(feeds.c.id)
    )
    return [FeedRow(r.id, r.configured_url or r.url, r.removed_at is not None) for r in rows]


def _heavy() -> ColumnElement[bool]:
    return or_(*(items.c[name].is_not(None) for name in HEAVY))


def candidates(
    conn: Connection,
    feed_id: int,
    *,
    delete_before: datetime | None,
    drop_text_before: datetime | None,
    keep_newest: int | None,
) -> list[ItemAge]:
    """The feed's items a rule may remove, oldest first: first seen before
    ``delete_before``; first seen before ``drop_text_before`` with their text still
    stored; past the feed's newest ``keep_newest`` (by first seen, then id)."""
    columns = (
        items.c.id,
        items.c.entry_key,
        items.c.first_seen_at,
        _heavy().label("heavy"),
    )
    found: dict[int, ItemAge] = {}
    if keep_newest is not None:
        query = (
            select(*columns)
            .where(items.c.feed_id == feed_id)
            .order_by(items.c.first_seen_at.desc(), items.c.id.desc())
            .offset(keep_newest)
        )
        if conn.dialect.name == "sqlite":
            query = query.limit(-1)  # SQLite takes no OFFSET without a LIMIT
        for row in conn.execute(query):
            found[row.id] = ItemAge(
                row.id, row.entry_key, row.first_seen_at, bool(row.heavy), beyond_newest=True
            )
    by_age: list[ColumnElement[bool]] = []
    if delete_before is not None:
        by_age.append(items.c.first_seen_at < delete_before)
    if drop_text_before is not None:
        by_age.append(and_(items.c.first_seen_at < drop_text_before, _heavy()))
    if by_age:
        query = select(*columns).where(items.c.feed_id == feed_id, or_(*by_age))
        for row in conn.execute(query):
            if row.id not in found:
                found[row.id] = ItemAge(row.id, row.entry_key, row.first_seen_at, bool(row.heavy))
    return sorted(found.values(), key=lambda a: (a.first_seen_at, a.item_id))


def _bytes(conn: Connection, column: Any) -> Any:
    """The bytes a column's value takes (0 for NULL)."""
    if conn.dialect.name == "postgresql":
        return func.coalesce(func.octet_length(column), 0)
    return func.coalesce(func.length(cast(column, LargeBinary)), 0)


def item_bytes(conn: Connection, ids: Sequence[int], columns: Sequence[str]) -> int:
    """The bytes of ``columns`` of the items ``ids``."""
    total = 0
    size = sum((_bytes(conn, items.c[name]) for name in columns), literal(0))
    for chunk in chunks(ids):
        total += int(
            conn.execute(select(func.sum(size)).where(items.c.id.in_(list(chunk)))).scalar() or 0
        )
    return total


ITEM_DATA = ("title", "url", "summary", "content", "text", "shingles", "entry_key", "guid")


@dataclass(frozen=True)
class Deleted:
    items: int
    stories: int
    bytes: int


def stories_of(conn: Connection, ids: Sequence[int]) -> set[int]:
    """The stories of the items ``ids``."""
    found: set[int] = set()
    for chunk in chunks(ids):
        found.update(
            s
            for s in conn.execute(
                select(items.c.story_id).where(items.c.id.in_(list(chunk))).distinct()
            ).scalars()
            if s is not None
        )
    return found


def delete_items(
    conn: Connection, feed_id: int, doomed: Sequence[ItemAge], now: datetime, full_share: float
) -> Deleted:
    """Delete the items ``doomed`` of ``feed_id``, each leaving a tombstone, and bring
    their stories up to date (``full_share``: dedup's share for the representative)."""
    if not doomed:
        return Deleted(0, 0, 0)
    ids = [a.item_id for a in doomed]
    size = item_bytes(conn, ids, ITEM_DATA)
    story_ids = stories_of(conn, ids)
    have = tombstoned(conn, feed_id, [a.entry_key for a in doomed])
    fresh = [a for a in doomed if a.entry_key not in have]
    if fresh:
        conn.execute(
            item_tombstones.insert(),
            [{"feed_id": feed_id, "entry_key": a.entry_key, "deleted_at": now} for a in fresh],
        )
    deleted = 0
    for chunk in chunks(ids):
        result = conn.execute(
            delete(items).where(items.c.feed_id == feed_id, items.c.id.in_(list(chunk)))
        )
        deleted += int(result.rowcount or 0)
    gone = 0
    touched = sorted(story_ids)
    for chunk in chunks(touched):
        result = conn.execute(
            delete(stories).where(
                stories.c.id.in_(list(chunk)),
                ~exists().where(items.c.story_id == stories.c.id),
            )
        )
        gone += int(result.rowcount or 0)
    left: list[int] = []
    for chunk in chunks(touched):
        left.extend(
            conn.execute(select(stories.c.id).where(stories.c.id.in_(list(chunk)))).scalars()
        )
    for story_id in left:
        refresh_story(conn, story_id, full_share)
    return Deleted(deleted, gone, size)


def drop_text(conn: Connection, ids: Sequence[int]) -> tuple[int, int]:
    """Clear content, text and shingles of the items ``ids`` (their metadata stays), and
    drop their dedup band rows (a candidate without text cannot be verified);
    ``(items changed, bytes cleared)``."""
    if not ids:
        return 0, 0
    size = item_bytes(conn, ids, HEAVY)
    changed = 0
    for chunk in chunks(ids):
        result = conn.execute(
            update(items)
            .where(items.c.id.in_(list(chunk)), _heavy())
            .values(content=None, text=None, shingles=None)
        )
        changed += int(result.rowcount or 0)
        conn.execute(delete(dedup_bands).where(dedup_bands.c.item_id.in_(list(chunk))))
    return changed, size


def dry_counts(conn: Connection, doomed: Sequence[ItemAge]) -> tuple[int, int]:
    """``(stories that would be left without items, bytes)`` if ``doomed`` were deleted."""
    ids = [a.item_id for a in doomed]
    if not ids:
        return 0, 0
    size = item_bytes(conn, ids, ITEM_DATA)
    story_ids = stories_of(conn, ids)
    doomed_ids = set(ids)
    emptied = 0
    for chunk in chunks(sorted(story_ids)):
        members: dict[int, list[int]] = {}
        rows = conn.execute(
            select(items.c.story_id, items.c.id).where(items.c.story_id.in_(list(chunk)))
        )
        for story_id, item_id in rows:
            members.setdefault(story_id, []).append(item_id)
        emptied += sum(1 for m in members.values() if all(i in doomed_ids for i in m))
    return emptied, size


def counts(conn: Connection) -> dict[str, int]:
    """Rows of the tables retention writes (for reports and tests)."""
    return {
        "documents": int(
            conn.execute(select(func.count()).select_from(feed_documents)).scalar_one()
        ),
        "tombstones": int(
            conn.execute(select(func.count()).select_from(item_tombstones)).scalar_one()
        ),
        "items_with_text": int(
            conn.execute(select(func.count()).select_from(items).where(_heavy())).scalar_one()
        ),
    }


class RetentionMixin(Database):
    def reclaim_space(self, *, max_seconds: float = 30.0) -> int:
        """SQLite: give the file's free pages back to the file system; bytes given back.
        PostgreSQL: nothing (autovacuum makes the space reusable). Steps of
        ``VACUUM_STEP`` pages, each in its own write turn, for at most ``max_seconds``.
        A file made without ``auto_vacuum=INCREMENTAL`` (before migration 0016) is
        converted first (``convert_auto_vacuum``); while it cannot be, nothing is given
        back (the free pages are reused by later writes)."""
        if self.dialect != "sqlite" or self.read_only or self.file_path is None:
            return 0
        if self.auto_vacuum() != "incremental":
            return self.convert_auto_vacuum()
        freed = 0
        page = 0
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            with db_errors(), self.write_lock, self.write_engine.connect() as conn:
                dbapi = conn.connection.dbapi_connection
                assert dbapi is not None
                page = int(dbapi.execute("PRAGMA page_size").fetchone()[0])
                free = int(dbapi.execute("PRAGMA freelist_count").fetchone()[0])
                if free == 0:
                    break
                step = min(free, VACUUM_STEP)
                dbapi.execute(f"PRAGMA incremental_vacuum({step})").fetchall()
                freed += step
        self.keep_wal_small()
        return freed * page

    def compact_search_index(self, *, max_seconds: float = 10.0) -> int:
        """SQLite: merge the full-text index's segments after deletions (FTS5 keeps a
        deleted row's entries, as delete markers, until its segments are merged), in
        steps of ``FTS_MERGE_PAGES`` pages, each in its own write turn, for at most
        ``max_seconds`` (FTS5 resumes an unfinished merge at the next call). Returns
        the steps that did work."""
        if self.dialect != "sqlite" or self.read_only:
            return 0
        steps = 0
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            with self.locked_tx() as conn:
                before = conn.exec_driver_sql("SELECT total_changes()").scalar_one()
                conn.exec_driver_sql(
                    "INSERT INTO items_fts(items_fts, rank) VALUES ('merge', ?)",
                    (-FTS_MERGE_PAGES,),
                )
                after = conn.exec_driver_sql("SELECT total_changes()").scalar_one()
            if after - before < 2:  # nothing left to merge (FTS5's documented test)
                break
            steps += 1
        return steps

    def convert_auto_vacuum(self) -> int:
        """SQLite: switch a file made before migration 0016 to ``auto_vacuum=INCREMENTAL``,
        once. That takes a ``VACUUM`` outside WAL mode, so this process must be the only
        one with the file open (stop the daemon, run ``aggregator prune``); it rewrites
        the whole file in the write turn and needs free disk as large as the file.
        Returns the bytes given back; 0 (and the file unchanged) when another connection
        has the file open."""
        self.engine.dispose()  # this process's readers let go of the file
        with db_errors(), self.write_lock, self.write_engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            page = int(dbapi.execute("PRAGMA page_size").fetchone()[0])
            before = int(dbapi.execute("PRAGMA page_count").fetchone()[0])
            dbapi.execute("PRAGMA busy_timeout=1000")
            try:
                mode = str(dbapi.execute("PRAGMA journal_mode=DELETE").fetchone()[0])
            except sqlite3.OperationalError:
                mode = "wal"
            try:
                if mode.lower() != "delete":
                    log.warning(
                        "the database file cannot give freed space back yet: it was made "
                        "before auto_vacuum=INCREMENTAL and converting it needs the file "
                        "to itself; stop the daemon and run `aggregator prune` once",
                        extra={"event": "auto_vacuum_not_converted"},
                    )
                    return 0
                dbapi.execute("PRAGMA auto_vacuum=INCREMENTAL")
                dbapi.execute("VACUUM")
                after = int(dbapi.execute("PRAGMA page_count").fetchone()[0])
            finally:
                dbapi.execute("PRAGMA journal_mode=WAL")
                dbapi.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        log.info(
            "database file converted to auto_vacuum=INCREMENTAL (%d bytes given back)",
            max(0, before - after) * page,
            extra={"event": "auto_vacuum_converted"},
        )
        return max(0, before - after) * page

    def auto_vacuum(self) -> str | None:
        """SQLite's auto_vacuum mode of the file (none, full, incremental); None: not SQLite."""
        if self.dialect != "sqlite":
            return None
        with self.read() as conn:
            mode = int(conn.exec_driver_sql("PRAGMA auto_vacuum").scalar_one())
        return {0: "none", 1: "full", 2: "incremental"}.get(mode, str(mode))
