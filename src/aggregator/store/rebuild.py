"""``aggregator stories rebuild``: re-decide the stories of stored items under the current
dedup rules, so that a store filled by older rules heals.

Two passes, each in short transactions so that a live daemon's polls wait for one batch at
most (SQLite: ``BEGIN IMMEDIATE`` per batch; PostgreSQL: the advisory locks of
``fingerprints.lock`` on the batch's band keys and URLs, as a poll takes them):

1. **URLs.** Per feed, its items (first seen since ``since``) are read as one document and
   their canonical URLs and URL refusals recomputed from the stored entry links
   (``urls``: ``dedup.document_urls``): fragments kept where entries differ only by them,
   a URL shared by different entries of the feed, or a site's front page, refused.
2. **Stories.** Items first seen since ``since``, in the order they were written, each
   decided again (``decide``: ``dedup.decide_story``) against the items written before it
   (lower ids) first seen within the dedup window before it, as ``save_poll`` did (items
   stored without a fingerprint get one now): an item stays in its story when the
   decision agrees, moves to the story decided, or starts a story of its own when it
   was merged into an earlier item's story that the rules no longer allow. A story left
   without items is deleted, with a ``story_merges`` row (reason ``rebuild``) so that its
   id still resolves (``stories explain OLD_ID``).

The store does not import ``dedup`` (stages are independent): the CLI passes its
functions in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from ..records import CleanEntry, ParsedEntry, StoryCandidate, StoryDecision, TextFingerprint
from . import fingerprints
from .tables import feeds, items, stories, story_merges

Decide = Callable[[CleanEntry, Sequence[StoryCandidate], frozenset[int]], StoryDecision]
# (link, entry key, title, text) of a feed's entries -> (canonical URL, refusal) of each
Urls = Callable[
    [Sequence[tuple[str | None, str, str | None, str | None]]],
    list[tuple[str | None, str | None]],
]
Fingerprint = Callable[[bytes], TextFingerprint | None]
TextFingerprinter = Callable[[str], TextFingerprint | None]
Transaction = Callable[[], AbstractContextManager[Connection]]


@dataclass(frozen=True)
class RebuildResult:
    items: int = 0  # items re-decided
    urls_changed: int = 0  # items whose canonical URL or URL refusal changed
    moved: int = 0  # items now in another story than before
    stories_created: int = 0
    stories_removed: int = 0  # left empty (their ids resolve through story_merges)


def rebuild(
    write: Transaction,
    read: Transaction,
    *,
    decide: Decide,
    urls: Urls,
    fingerprint: Fingerprint,
    fingerprint_text: TextFingerprinter,
    since: datetime | None,
    window: float,
    now: datetime,
    batch: int = 200,
) -> RebuildResult:
    """Both passes (see the module); ``batch`` items per transaction. ``fingerprint``:
    a stored item's fingerprint from its stored shingles; ``fingerprint_text``: from its
    text, for items stored without one (texts too short for the rules of their time)."""
    changed = _rebuild_urls(write, read, urls, since, batch)
    totals = RebuildResult(urls_changed=changed)
    after = 0
    while True:
        with read() as conn:
            rows = _next_items(conn, since, after, batch)
        if not rows:
            return totals
        after = int(rows[-1].id)
        with write() as conn:
            done = _decide_batch(conn, rows, decide, (fingerprint, fingerprint_text), window, now)
        totals = RebuildResult(
            items=totals.items + len(rows),
            urls_changed=totals.urls_changed,
            moved=totals.moved + done.moved,
            stories_created=totals.stories_created + done.stories_created,
            stories_removed=totals.stories_removed + done.stories_removed,
        )


# ---- pass 1: canonical URLs per feed ----------------------------------------------------


def _rebuild_urls(
    write: Transaction, read: Transaction, urls: Urls, since: datetime | None, batch: int
) -> int:
    changed = 0
    with read() as conn:
        feed_ids = [int(r.id) for r in conn.execute(select(feeds.c.id).order_by(feeds.c.id))]
    for feed_id in feed_ids:
        with read() as conn:
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
            rows = conn.execute(query.order_by(items.c.id)).all()
        if not rows:
            continue
        decided = urls([(r.url, r.entry_key, r.title, r.text) for r in rows])
        updates = [
            {"b_id": r.id, "b_url": url, "b_refusal": refusal}
            for r, (url, refusal) in zip(rows, decided, strict=True)
            if (url, refusal) != (r.canonical_url, r.dedup_url_refusal)
        ]
        for chunk in _chunks(updates, batch):
            with write() as conn:
                conn.execute(
                    update(items)
                    .where(items.c.id == bindparam("b_id"))
                    .values(
                        canonical_url=bindparam("b_url"),
                        dedup_url_refusal=bindparam("b_refusal"),
                    ),
                    list(chunk),
                )
        changed += len(updates)
    return changed


# ---- pass 2: stories --------------------------------------------------------------------


def _next_items(conn: Connection, since: datetime | None, after: int, batch: int) -> list[Any]:
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


def _clean(row: Any, fingerprinters: tuple[Fingerprint, TextFingerprinter]) -> CleanEntry:
    stored, from_text = fingerprinters
    if row.shingles is not None:
        fp = stored(bytes(row.shingles))
    else:
        fp = from_text(row.text) if row.text else None
    return CleanEntry(
        entry=ParsedEntry(key=row.entry_key, guid=row.guid, link=row.url, title=row.title),
        canonical_url=row.canonical_url,
        summary=None,
        content=None,
        text=row.text,
        content_hash="",
        fingerprint=fp,
        page_canonical_url=row.page_canonical_url,
        url_refusal=row.dedup_url_refusal,
    )


@dataclass
class _Done:
    moved: int = 0
    stories_created: int = 0
    stories_removed: int = 0


def _decide_batch(
    conn: Connection,
    rows: Sequence[Any],
    decide: Decide,
    fingerprinters: tuple[Fingerprint, TextFingerprinter],
    window: float,
    now: datetime,
) -> _Done:
    done = _Done()
    cleans = [_clean(r, fingerprinters) for r in rows]
    fingerprints.lock(conn, cleans)
    touched: set[int] = set()
    for row, clean in zip(rows, cleans, strict=True):
        if row.shingles is None and clean.fingerprint is not None:
            # fingerprinted now: its shingles and band rows, as a poll writes them
            conn.execute(
                update(items)
                .where(items.c.id == row.id)
                .values(shingles=clean.fingerprint.shingles)
            )
            fingerprints.index_item(conn, row.id, clean, row.first_seen_at)
        current = conn.execute(select(items.c.story_id).where(items.c.id == row.id)).scalar()
        since = row.first_seen_at - timedelta(seconds=window)
        found = fingerprints.candidates(conn, clean, since, row.feed_id, before_id=row.id)
        site = fingerprints.site_key(row.url)
        common = fingerprints.common_anchors(conn, clean, found, site) if found else frozenset()
        decision = decide(clean, found, common) if found else StoryDecision(None, 0.0, "new")
        target = decision.story_id
        if target is None:
            earlier = conn.execute(
                select(func.count())
                .select_from(items)
                .where(items.c.story_id == current, items.c.id != row.id, items.c.id < row.id)
            ).scalar_one()
            target = current if current is not None and not earlier else None
            if target is None:
                target = _new_story(conn, row)
                done.stories_created += 1
        if target != current:
            conn.execute(update(items).where(items.c.id == row.id).values(story_id=target))
            done.moved += 1
            if current is not None:
                if _drop_if_empty(conn, int(current), int(target), row.id, now):
                    done.stories_removed += 1
                    touched.discard(int(current))
                else:
                    touched.add(int(current))
        conn.execute(
            update(items)
            .where(items.c.id == row.id)
            .values(
                dedup_reason=decision.reason,
                dedup_score=decision.score,
                dedup_item_id=decision.item_id,
                dedup_url_refusal=decision.url_refusal or clean.url_refusal,
            )
        )
        if decision.merge_story_ids:
            survivor, absorbed = fingerprints.merge_stories(
                conn, replace(decision, story_id=target), row.id, now
            )
            done.stories_removed += absorbed
            touched -= set(decision.merge_story_ids)
            target = survivor
        touched.add(int(target))
    for story_id in sorted(touched):
        fingerprints.refresh_story(conn, story_id)
    return done


def _new_story(conn: Connection, row: Any) -> int:
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


def _drop_if_empty(
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


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
