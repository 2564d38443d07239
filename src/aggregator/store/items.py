"""Items: the stored entries, written by the save path (``ingest``) and read back by key.

``ItemsMixin.known_entries`` tells the pipeline which entries of a fetched document are
stored already (and their content hash, to see a changed entry). The functions below are
the statements of one poll's save, run on the save path's connection: items that start
a story each, in bulk; one item joining a story; an item updated in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, or_, select, update

from ..records import CleanEntry, KnownEntry, StoryDecision
from . import blocked, retention
from .batches import chunks
from .database import Database
from .tables import items, stories


class ItemsMixin(Database):
    def known_entries(self, feed_id: int, keys: Sequence[str]) -> dict[str, KnownEntry]:
        with self.read() as conn:
            return known_entries(conn, feed_id, keys)

    def blocked_entries(self, feed_id: int) -> dict[str, str]:
        """The feed's entries blocked by filters: key -> rules fingerprint (``blocked``)."""
        with self.read() as conn:
            return blocked.remembered(conn, feed_id)

    def blocked_counts(self) -> dict[int, int]:
        """Entries blocked by filters, per feed id (``blocked``)."""
        with self.read() as conn:
            return blocked.counts(conn)


def known_entries(conn: Connection, feed_id: int, keys: Sequence[str]) -> dict[str, KnownEntry]:
    """The stored items of ``feed_id`` among the entry ``keys``, and the entries whose
    items retention deleted while the feed still served them (``deleted``: tombstones)."""
    found: dict[str, KnownEntry] = {
        key: KnownEntry(0, "", deleted=True) for key in retention.tombstoned(conn, feed_id, keys)
    }
    for chunk in chunks(keys):
        rows = conn.execute(
            select(items.c.entry_key, items.c.id, items.c.content_hash).where(
                items.c.feed_id == feed_id, items.c.entry_key.in_(list(chunk))
            )
        )
        for row in rows:
            found[row.entry_key] = KnownEntry(row.id, row.content_hash)
    return found


def stored_keys(conn: Connection, feed_id: int, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` the feed has stored (inside the save's transaction: another
    worker may have stored them since the pipeline asked), or had stored until retention
    deleted them (tombstones: never stored again while the feed serves them)."""
    found: set[str] = retention.tombstoned(conn, feed_id, keys)
    for chunk in chunks(keys):
        found.update(
            r.entry_key
            for r in conn.execute(
                select(items.c.entry_key).where(
                    items.c.feed_id == feed_id, items.c.entry_key.in_(list(chunk))
                )
            )
        )
    return found


def insert_new_stories(
    conn: Connection, feed_id: int, new: Sequence[CleanEntry], now: datetime
) -> list[tuple[int, int]]:
    """Items that start a story each: their stories and items in a handful of
    executemany statements; ``(story id, item id)`` of each, in order."""
    story_ids = (
        conn.execute(
            insert(stories).returning(stories.c.id, sort_by_parameter_order=True),
            [
                {
                    "title": clean.entry.title,
                    "url": clean.entry.link,
                    "canonical_url": clean.canonical_url,
                    "first_seen_at": now,
                    "last_seen_at": now,
                    "item_count": 1,
                }
                for clean in new
            ],
        )
        .scalars()
        .all()
    )
    # a plain executemany, then the ids by the (feed, entry key) unique index: cheaper
    # than SQLAlchemy's multi-row INSERT … RETURNING for rows this wide
    conn.execute(
        insert(items),
        [
            {
                "feed_id": feed_id,
                "story_id": story_id,
                "dedup_reason": "new",
                "dedup_score": 0.0,
                "dedup_item_id": None,
                "dedup_url_refusal": clean.url_refusal,
                "first_seen_at": now,
                "updated_at": now,
                **item_values(clean),
            }
            for clean, story_id in zip(new, story_ids, strict=True)
        ],
    )
    keys = [clean.entry.key for clean in new]
    by_key: dict[str, int] = {}
    for chunk in chunks(keys):
        rows = conn.execute(
            select(items.c.entry_key, items.c.id).where(
                items.c.feed_id == feed_id, items.c.entry_key.in_(chunk)
            )
        )
        by_key.update((key, item_id) for key, item_id in rows)
    item_ids = [by_key[key] for key in keys]
    conn.execute(
        update(stories)
        .where(stories.c.id == bindparam("b_story"))
        .values(representative_item_id=bindparam("b_item")),
        [
            {"b_story": story_id, "b_item": item_id}
            for story_id, item_id in zip(story_ids, item_ids, strict=True)
        ],
    )
    return list(zip(story_ids, item_ids, strict=True))


def insert_item(
    conn: Connection, feed_id: int, clean: CleanEntry, decision: StoryDecision, now: datetime
) -> int:
    """One item joining the story of ``decision``; its id."""
    return int(
        conn.execute(
            insert(items)
            .values(
                feed_id=feed_id,
                story_id=decision.story_id,
                dedup_reason=decision.reason,
                dedup_score=decision.score,
                dedup_item_id=decision.item_id,
                dedup_url_refusal=clean.url_refusal,
                first_seen_at=now,
                updated_at=now,
                **item_values(clean),
            )
            .returning(items.c.id)
        ).scalar_one()
    )


def update_item(
    conn: Connection,
    item_id: int,
    values: dict[str, Any],
    now: datetime,
    *,
    where_feed_text: dict[str, Any] | None = None,
) -> None:
    """Set ``values`` on an item (and ``updated_at``); ``where_feed_text`` first, only if
    the item's text came from its feed (not from its article page)."""
    if where_feed_text:
        conn.execute(
            update(items)
            .where(
                items.c.id == item_id,
                or_(items.c.text_source.is_(None), items.c.text_source == "feed"),
            )
            .values(updated_at=now, **where_feed_text)
        )
    conn.execute(update(items).where(items.c.id == item_id).values(updated_at=now, **values))


def item_values(clean: CleanEntry) -> dict[str, Any]:
    """An entry's columns in ``items`` (those of the entry and of its article page)."""
    entry = clean.entry
    article = clean.article
    return {
        "entry_key": entry.key,
        "guid": entry.guid,
        "url": entry.link,
        "canonical_url": clean.canonical_url,
        "page_canonical_url": clean.page_canonical_url,
        "title": entry.title,
        "author": entry.author or (article.author if article else None),
        "published_at": entry.published or (article.published if article else None),
        "summary": clean.summary,
        "content": clean.content,
        "text": clean.text,
        "text_source": "article" if article is not None else "feed",
        "language": article.language if article else None,
        "image_url": entry.image or (article.image if article else None),
        "content_hash": clean.content_hash,
        # the shingles of THIS text (None when it changed and was not fingerprinted again:
        # dedup then recomputes them from the text)
        "shingles": (clean.fingerprint.shingles if clean.fingerprint else None),
    }
