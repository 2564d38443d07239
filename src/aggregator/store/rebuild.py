"""The statements of ``aggregator stories rebuild`` (the algorithm is
``ingest.rebuild``'s): stored items read back in the order they were written, their URLs
and story decisions rewritten, stories created or removed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from ..records import StoryDecision
from .tables import feeds, items, stories, story_merges


def feed_ids(conn: Connection) -> list[int]:
    return [int(r.id) for r in conn.execute(select(feeds.c.id).order_by(feeds.c.id))]


def feed_items(conn: Connection, feed_id: int, since: datetime | None) -> list[Any]:
    """A feed's items (first seen since ``since``), as one document: id, entry key, link,
    title, text, canonical URL and URL refusal."""
    query = select(
        items.c.id,
        items.c.entry_key,
        items.c.url,
        items.c.title,
        items.c.text,
        items.c.canonical_url,
        items.c.dedup_url_refusal,
    ).where(items.c.feed_id == feed_id)
    if since is not None:
        query = query.where(items.c.first_seen_at >= since)
    return list(conn.execute(query.order_by(items.c.id)))


def set_urls(conn: Connection, updates: Sequence[tuple[int, str | None, str | None]]) -> None:
    """``(item id, canonical URL, URL refusal)`` of several items."""
    conn.execute(
        update(items)
        .where(items.c.id == bindparam("b_id"))
        .values(canonical_url=bindparam("b_url"), dedup_url_refusal=bindparam("b_refusal")),
        [{"b_id": i, "b_url": url, "b_refusal": refusal} for i, url, refusal in updates],
    )


def next_items(conn: Connection, since: datetime | None, after: int, batch: int) -> list[Any]:
    """The next items after id ``after``, in the order they were written (the order in
    which the live path saw them)."""
    query = select(
        items.c.id,
        items.c.feed_id,
        items.c.story_id,
        items.c.entry_key,
        items.c.guid,
        items.c.url,
        items.c.title,
        items.c.text,
        items.c.canonical_url,
        items.c.page_canonical_url,
        items.c.dedup_url_refusal,
        items.c.shingles,
        items.c.first_seen_at,
    ).where(items.c.id > after)
    if since is not None:
        query = query.where(items.c.first_seen_at >= since)
    return list(conn.execute(query.order_by(items.c.id).limit(batch)))


def set_shingles(conn: Connection, item_id: int, shingles: bytes) -> None:
    conn.execute(update(items).where(items.c.id == item_id).values(shingles=shingles))


def story_of(conn: Connection, item_id: int) -> int | None:
    story = conn.execute(select(items.c.story_id).where(items.c.id == item_id)).scalar()
    return None if story is None else int(story)


def earlier_items(conn: Connection, story_id: int | None, item_id: int) -> int:
    """How many items of ``story_id`` were written before ``item_id``."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(items)
            .where(items.c.story_id == story_id, items.c.id != item_id, items.c.id < item_id)
        ).scalar_one()
    )


def move_item(conn: Connection, item_id: int, story_id: int) -> None:
    conn.execute(update(items).where(items.c.id == item_id).values(story_id=story_id))


def set_decision(
    conn: Connection, item_id: int, decision: StoryDecision, refusal: str | None
) -> None:
    conn.execute(
        update(items)
        .where(items.c.id == item_id)
        .values(
            dedup_reason=decision.reason,
            dedup_score=decision.score,
            dedup_item_id=decision.item_id,
            dedup_url_refusal=refusal,
        )
    )


def new_story(conn: Connection, row: Any) -> int:
    """A story of its own for the item ``row`` (of ``next_items``)."""
    story_id = conn.execute(
        insert(stories)
        .values(
            title=row.title,
            url=row.url,
            canonical_url=row.canonical_url,
            first_seen_at=row.first_seen_at,
            last_seen_at=row.first_seen_at,
            item_count=1,
            representative_item_id=row.id,
        )
        .returning(stories.c.id)
    ).scalar_one()
    return int(story_id)


def drop_if_empty(
    conn: Connection, story_id: int, survivor: int, item_id: int, now: datetime
) -> bool:
    """Delete a story left without items; its id resolves to ``survivor`` from now on."""
    left = conn.execute(
        select(func.count()).select_from(items).where(items.c.story_id == story_id)
    ).scalar_one()
    if left:
        return False
    row = conn.execute(select(stories).where(stories.c.id == story_id)).first()
    if row is None:
        return False
    conn.execute(
        update(story_merges).where(story_merges.c.story_id == story_id).values(story_id=survivor)
    )
    conn.execute(
        insert(story_merges).values(
            story_id=survivor,
            merged_story_id=story_id,
            item_id=item_id,
            score=None,
            reason="rebuild",
            merged_at=now,
            merged_title=row.title,
            merged_url=row.url,
            merged_first_seen_at=row.first_seen_at,
            merged_item_count=row.item_count,
        )
    )
    conn.execute(delete(stories).where(stories.c.id == story_id))
    return True
