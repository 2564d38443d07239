"""Read-only story queries for ``aggregator stories`` (list, explain)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from .tables import feeds, items, stories, story_merges


@dataclass(frozen=True)
class StorySource:
    item_id: int
    feed_id: int
    feed: str  # the feed's name, else its URL
    title: str | None
    url: str | None
    first_seen_at: datetime
    reason: str | None
    score: float | None
    matched_item_id: int | None
    url_refusal: str | None = None  # why its URL was not taken as its identity


@dataclass(frozen=True)
class StoryRow:
    id: int
    title: str | None
    url: str | None
    first_seen_at: datetime
    last_seen_at: datetime
    item_count: int
    representative_item_id: int | None
    sources: tuple[StorySource, ...]


@dataclass(frozen=True)
class MergeRow:
    merged_story_id: int
    item_id: int | None
    score: float | None
    reason: str | None
    merged_at: datetime
    merged_title: str | None
    merged_item_count: int | None


@dataclass(frozen=True)
class StoryExplanation:
    story: StoryRow
    requested_id: int  # the id asked for (differs from story.id if it was merged away)
    merges: tuple[MergeRow, ...]


def _sources(conn: Connection, story_ids: list[int]) -> dict[int, list[StorySource]]:
    out: dict[int, list[StorySource]] = defaultdict(list)
    if not story_ids:
        return out
    rows = conn.execute(
        select(
            items.c.id,
            items.c.story_id,
            items.c.feed_id,
            func.coalesce(feeds.c.name, feeds.c.url).label("feed"),
            items.c.title,
            items.c.url,
            items.c.first_seen_at,
            items.c.dedup_reason,
            items.c.dedup_score,
            items.c.dedup_item_id,
            items.c.dedup_url_refusal,
        )
        .select_from(items.join(feeds, feeds.c.id == items.c.feed_id))
        .where(items.c.story_id.in_(story_ids))
        .order_by(items.c.first_seen_at, items.c.id)
    )
    for r in rows:
        out[r.story_id].append(
            StorySource(
                item_id=r.id,
                feed_id=r.feed_id,
                feed=r.feed,
                title=r.title,
                url=r.url,
                first_seen_at=r.first_seen_at,
                reason=r.dedup_reason,
                score=r.dedup_score,
                matched_item_id=r.dedup_item_id,
                url_refusal=r.dedup_url_refusal,
            )
        )
    return out


def _row(r: object, sources: list[StorySource]) -> StoryRow:
    return StoryRow(
        id=r.id,  # type: ignore[attr-defined]
        title=r.title,  # type: ignore[attr-defined]
        url=r.url,  # type: ignore[attr-defined]
        first_seen_at=r.first_seen_at,  # type: ignore[attr-defined]
        last_seen_at=r.last_seen_at,  # type: ignore[attr-defined]
        item_count=r.item_count,  # type: ignore[attr-defined]
        representative_item_id=r.representative_item_id,  # type: ignore[attr-defined]
        sources=tuple(sources),
    )


def list_stories(conn: Connection, since: datetime, min_sources: int, limit: int) -> list[StoryRow]:
    n_sources = func.count(func.distinct(items.c.feed_id))
    ids = [
        int(r.id)
        for r in conn.execute(
            select(stories.c.id)
            .select_from(stories.join(items, items.c.story_id == stories.c.id))
            .where(stories.c.first_seen_at >= since)
            .group_by(stories.c.id)
            .having(n_sources >= min_sources)
            .order_by(stories.c.id.desc())
            .limit(limit)
        )
    ]
    if not ids:
        return []
    sources = _sources(conn, ids)
    rows = conn.execute(
        select(stories).where(stories.c.id.in_(ids)).order_by(stories.c.first_seen_at.desc())
    )
    return [_row(r, sources[r.id]) for r in rows]


def explain_story(conn: Connection, story_id: int) -> StoryExplanation | None:
    current = story_id
    for _ in range(100):  # follow merges: an absorbed story points at its survivor
        found = conn.execute(select(stories).where(stories.c.id == current)).first()
        if found is not None:
            break
        survivor = conn.execute(
            select(story_merges.c.story_id).where(story_merges.c.merged_story_id == current)
        ).scalar_one_or_none()
        if survivor is None:
            return None
        current = int(survivor)
    else:
        return None
    sources = _sources(conn, [current])
    merges = tuple(
        MergeRow(
            merged_story_id=m.merged_story_id,
            item_id=m.item_id,
            score=m.score,
            reason=m.reason,
            merged_at=m.merged_at,
            merged_title=m.merged_title,
            merged_item_count=m.merged_item_count,
        )
        for m in conn.execute(
            select(story_merges)
            .where(story_merges.c.story_id == current)
            .order_by(story_merges.c.merged_at, story_merges.c.id)
        )
    )
    return StoryExplanation(_row(found, sources[current]), story_id, merges)
