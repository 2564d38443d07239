"""Story rows as their items change: counts, times, the representative item, merges.

A story's title, URL and ``representative_item_id`` are those of its earliest *full*
version (text at least ``full_share`` of the story's longest; the share is ``dedup``'s),
recomputed on every change; ``first_seen_at``/``last_seen_at``/``item_count`` come from
its items. Merging moves the items, records a ``story_merges`` row and deletes the
absorbed story; its id stays resolvable through ``story_merges.merged_story_id``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, select, update

from ..records import StoryDecision
from .tables import items, stories, story_merges


def refresh_story(conn: Connection, story_id: int, full_share: float) -> None:
    """Counts, times and the representative (earliest full version) of a story."""
    length = func.coalesce(func.length(items.c.text), 0).label("length")
    rows = conn.execute(
        select(
            items.c.id,
            items.c.first_seen_at,
            items.c.title,
            items.c.url,
            items.c.canonical_url,
            length,
        ).where(items.c.story_id == story_id)
    ).all()
    if not rows:
        return
    longest = max(int(r.length) for r in rows)
    full = [r for r in rows if int(r.length) >= full_share * longest]
    rep = min(full, key=lambda r: (r.first_seen_at, r.id))
    conn.execute(
        update(stories)
        .where(stories.c.id == story_id)
        .values(
            title=rep.title,
            url=rep.url,
            canonical_url=rep.canonical_url,
            representative_item_id=rep.id,
            item_count=len(rows),
            first_seen_at=min(r.first_seen_at for r in rows),
            last_seen_at=max(r.first_seen_at for r in rows),
        )
    )


def merge_stories(
    conn: Connection, decision: StoryDecision, item_id: int, now: datetime, full_share: float
) -> tuple[int, int]:
    """Merge the decision's stories into the earliest one; (survivor id, stories absorbed)."""
    ids = [i for i in (decision.story_id, *decision.merge_story_ids) if i is not None]
    rows = conn.execute(select(stories).where(stories.c.id.in_(ids))).all()
    if not rows:
        raise LookupError(f"stories {ids} vanished inside a locked transaction")
    survivor = min(rows, key=lambda r: (r.first_seen_at, r.id))
    absorbed = 0
    for row in rows:
        if row.id == survivor.id:
            continue
        conn.execute(update(items).where(items.c.story_id == row.id).values(story_id=survivor.id))
        conn.execute(
            update(story_merges)
            .where(story_merges.c.story_id == row.id)
            .values(story_id=survivor.id)
        )
        conn.execute(
            insert(story_merges).values(
                story_id=survivor.id,
                merged_story_id=row.id,
                item_id=item_id,
                score=decision.score,
                reason=decision.reason,
                merged_at=now,
                merged_title=row.title,
                merged_url=row.url,
                merged_first_seen_at=row.first_seen_at,
                merged_item_count=row.item_count,
            )
        )
        conn.execute(delete(stories).where(stories.c.id == row.id))
        absorbed += 1
    refresh_story(conn, survivor.id, full_share)
    return int(survivor.id), absorbed
