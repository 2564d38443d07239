"""Entries the feeds' filters blocked (``blocked_entries``, migration 0010): SQL only.

A blocked entry never becomes an item. Its key is remembered here, per feed, with the
fingerprint of the rules that blocked it (``filters.fingerprint``), so that later polls
drop it without evaluating it again and without fetching its page; a poll under other
rules evaluates it again (and replaces or deletes its row). The pipeline decides; this
module writes what a poll decided (``records.BlockedChanges``) in the poll's own
transaction, and reads. A row is deleted once its entry has left the feed's document, or
is kept by the rules now, so the table holds no more than the feeds' current documents.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StoreError
from ..records import BlockedChanges
from .tables import blocked_entries, feeds

_CHUNK = 500  # keys per IN (...) list


def _chunks(keys: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(keys), _CHUNK):
        yield list(keys[start : start + _CHUNK])


def remembered(conn: Connection, feed_id: int) -> dict[str, str]:
    """The feed's blocked entries: key -> the fingerprint of the rules that blocked it."""
    rows = conn.execute(
        select(blocked_entries.c.entry_key, blocked_entries.c.rules_hash).where(
            blocked_entries.c.feed_id == feed_id
        )
    )
    return {row.entry_key: row.rules_hash for row in rows}


def save(conn: Connection, feed_id: int, changes: BlockedChanges | None, now: datetime) -> None:
    """Write what one poll changed (inside the poll's transaction)."""
    if changes is None:
        return
    keys = [*changes.forget, *(entry.key for entry in changes.add)]
    for chunk in _chunks(keys):
        conn.execute(
            delete(blocked_entries).where(
                blocked_entries.c.feed_id == feed_id, blocked_entries.c.entry_key.in_(chunk)
            )
        )
    if changes.add:
        conn.execute(
            insert(blocked_entries),
            [
                {
                    "feed_id": feed_id,
                    "entry_key": entry.key,
                    "rules_hash": changes.rules_hash,
                    "rule": entry.rule[:500],
                    "title": entry.title[:500] if entry.title else None,
                    "url": entry.url,
                    "blocked_at": now,
                }
                for entry in changes.add
            ],
        )


def rules_changed(conn: Connection, fingerprints: dict[str, str]) -> list[int]:
    """At config load (``fingerprints``: configured URL -> the fingerprint of the feed's
    rules, "" for none): a feed without rules now forgets its blocked entries; a feed
    whose entries were blocked under other rules loses its validators, so that its next
    poll gets the whole document (not a 304) and evaluates them again: a changed rule
    applies from the next poll. Returns the ids of the feeds whose rules changed."""
    pairs = conn.execute(
        select(feeds.c.id, feeds.c.configured_url, feeds.c.url, blocked_entries.c.rules_hash)
        .select_from(blocked_entries.join(feeds, feeds.c.id == blocked_entries.c.feed_id))
        .distinct()
    )
    stale: set[int] = set()
    unfiltered: set[int] = set()
    for row in pairs:
        wanted = fingerprints.get(row.configured_url or row.url, "")
        if not wanted:
            unfiltered.add(row.id)
        elif wanted != row.rules_hash:
            stale.add(row.id)
    gone = sorted(unfiltered)
    for start in range(0, len(gone), _CHUNK):
        conn.execute(
            delete(blocked_entries).where(
                blocked_entries.c.feed_id.in_(gone[start : start + _CHUNK])
            )
        )
    changed = sorted(stale)
    for start in range(0, len(changed), _CHUNK):
        conn.execute(
            update(feeds)
            .where(
                feeds.c.id.in_(changed[start : start + _CHUNK]),
                or_(feeds.c.etag.is_not(None), feeds.c.last_modified.is_not(None)),
            )
            .values(etag=None, last_modified=None)
        )
    return sorted(stale | unfiltered)


def counts(conn: Connection) -> dict[int, int]:
    """Blocked entries per feed id (feeds with none are left out)."""
    query = select(blocked_entries.c.feed_id, func.count().label("n")).group_by(
        blocked_entries.c.feed_id
    )
    return {row.feed_id: row.n for row in conn.execute(query)}


def counts_by_feed(engine: Engine) -> dict[str, int]:
    """Blocked entries per configured feed, by its name (else its URL), for ``/metrics``."""
    query = (
        select(func.coalesce(feeds.c.name, feeds.c.url).label("feed"), func.count().label("n"))
        .select_from(blocked_entries.join(feeds, feeds.c.id == blocked_entries.c.feed_id))
        .where(feeds.c.removed_at.is_(None))
        .group_by(feeds.c.id, feeds.c.name, feeds.c.url)
    )
    try:
        with engine.connect() as conn:
            return {row.feed: row.n for row in conn.execute(query)}
    except SQLAlchemyError as exc:
        raise StoreError(f"the database does not answer: {type(exc).__name__}") from None
