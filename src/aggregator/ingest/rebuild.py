"""``aggregator stories rebuild``: re-decide the stories of stored items under the current
dedup rules, so that a store filled by older rules heals.

Two passes, each in short transactions so that a live daemon's polls wait for one batch at
most (SQLite: ``BEGIN IMMEDIATE`` per batch; PostgreSQL: the row locks of
``store.index.lock`` on the batch's band keys and URLs, as a poll takes them):

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

The statements are ``store.rebuild``'s; the rules ``dedup``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from .. import dedup
from ..records import CleanEntry, ParsedEntry, StoryDecision
from ..store import Store, storyrows
from ..store import index as dedup_index
from ..store import rebuild as sql


@dataclass(frozen=True)
class RebuildResult:
    items: int = 0  # items re-decided
    urls_changed: int = 0  # items whose canonical URL or URL refusal changed
    moved: int = 0  # items now in another story than before
    stories_created: int = 0
    stories_removed: int = 0  # left empty (their ids resolve through story_merges)


def rebuild(
    store: Store,
    *,
    since: datetime | None,
    window: float,
    now: datetime,
    batch: int = 200,
) -> RebuildResult:
    """Both passes (see the module); ``batch`` items per transaction."""
    changed = _rebuild_urls(store, since, batch)
    totals = RebuildResult(urls_changed=changed)
    after = 0
    while True:
        with store.read() as conn:
            rows = sql.next_items(conn, since, after, batch)
        if not rows:
            return totals
        after = int(rows[-1].id)
        with store.locked_tx() as conn:
            done = _decide_batch(conn, rows, window, now)
        totals = RebuildResult(
            items=totals.items + len(rows),
            urls_changed=totals.urls_changed,
            moved=totals.moved + done.moved,
            stories_created=totals.stories_created + done.stories_created,
            stories_removed=totals.stories_removed + done.stories_removed,
        )


# ---- pass 1: canonical URLs per feed ----------------------------------------------------


def _rebuild_urls(store: Store, since: datetime | None, batch: int) -> int:
    changed = 0
    with store.read() as conn:
        feed_ids = sql.feed_ids(conn)
    for feed_id in feed_ids:
        with store.read() as conn:
            rows = sql.feed_items(conn, feed_id, since)
        if not rows:
            continue
        decided = dedup.document_urls(
            [dedup.DocumentEntry(r.url, r.entry_key, r.title, r.text) for r in rows]
        )
        updates = [
            (int(r.id), url, refusal)
            for r, (url, refusal) in zip(rows, decided, strict=True)
            if (url, refusal) != (r.canonical_url, r.dedup_url_refusal)
        ]
        for start in range(0, len(updates), batch):
            with store.locked_tx() as conn:
                sql.set_urls(conn, updates[start : start + batch])
        changed += len(updates)
    return changed


# ---- pass 2: stories --------------------------------------------------------------------


def _clean(row: Any) -> CleanEntry:
    if row.shingles is not None:
        fp = dedup.stored_fingerprint(bytes(row.shingles))
    else:
        fp = dedup.fingerprint(row.text) if row.text else None
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


def _decide_batch(conn: Any, rows: list[Any], window: float, now: datetime) -> _Done:
    done = _Done()
    cleans = [_clean(r) for r in rows]
    dedup_index.lock(
        conn,
        bands=(b for c in cleans if c.fingerprint for b in c.fingerprint.bands),
        sites=(s for c in cleans if (s := dedup.site_key(c.entry.link)) is not None),
        urls=(u for c in cleans for u in (c.canonical_url, c.page_canonical_url) if u),
    )
    touched: set[int] = set()
    for row, clean in zip(rows, cleans, strict=True):
        if row.shingles is None and clean.fingerprint is not None:
            # fingerprinted now: its shingles and band rows, as a poll writes them
            sql.set_shingles(conn, row.id, clean.fingerprint.shingles)
            dedup_index.index_items(conn, [(row.id, clean)], row.first_seen_at)
        current = sql.story_of(conn, row.id)
        since = row.first_seen_at - timedelta(seconds=window)
        found = dedup_index.candidates(
            conn,
            clean,
            since,
            row.feed_id,
            url_limit=dedup.MAX_URL_CANDIDATES,
            band_limit=dedup.MAX_BAND_CANDIDATES,
            before_id=row.id,
        )
        common: frozenset[int] = frozenset()
        if found and clean.fingerprint is not None:
            sites = {dedup.site_key(row.url), *(dedup.site_key(c.url) for c in found)}
            common = dedup_index.common_anchors(
                conn,
                clean.fingerprint.anchors,
                sorted(s for s in sites if s is not None),
                dedup.COMMON_DF,
            )
        decision = (
            dedup.decide_story(clean, found, common) if found else StoryDecision(None, 0.0, "new")
        )
        target = decision.story_id
        if target is None:
            earlier = sql.earlier_items(conn, current, row.id)
            target = current if current is not None and not earlier else None
            if target is None:
                target = sql.new_story(conn, row)
                done.stories_created += 1
        if target != current:
            sql.move_item(conn, row.id, target)
            done.moved += 1
            if current is not None:
                if sql.drop_if_empty(conn, current, target, row.id, now):
                    done.stories_removed += 1
                    touched.discard(current)
                else:
                    touched.add(current)
        sql.set_decision(conn, row.id, decision, decision.url_refusal or clean.url_refusal)
        if decision.merge_story_ids:
            survivor, absorbed = storyrows.merge_stories(
                conn, replace(decision, story_id=target), row.id, now, dedup.FULL_SHARE
            )
            done.stories_removed += absorbed
            touched -= set(decision.merge_story_ids)
            target = survivor
        touched.add(int(target))
    for story_id in sorted(touched):
        storyrows.refresh_story(conn, story_id, dedup.FULL_SHARE)
    return done
