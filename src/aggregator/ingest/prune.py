"""A retention pass (``aggregator prune``, the daemon's retention job): each feed's rule
(``retention.py``) applied to its items through ``store.retention``'s statements.

Per feed: its candidates are read in a read transaction; then, ``batch`` items at a
time, one short write transaction (inside the write turn on SQLite) reads the feed's
current document, decides (``retention.due``) and deletes or slims; last, the feed's
tombstones whose entries have left the document go (``retention.stale_tombstones``).
A poll of the feed is never in the middle of it: on SQLite the writers take turns, on
PostgreSQL the feed's document row is locked for the transaction. ``dry_run`` runs the
same reads and decisions in read transactions and writes nothing. After the pass an
SQLite file gives its free pages back (``Store.reclaim_space``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import dedup, retention
from ..records import FeedSpec, PruneCounts, Retention
from ..store import retention as retention_sql
from ..store.batches import chunks
from ..store.store import Store

BATCH = 200  # items per write transaction


@dataclass
class FeedPruned:
    url: str
    counts: PruneCounts


@dataclass
class PruneReport:
    """What a pass removed (or would), in total and per feed that lost anything."""

    dry_run: bool
    total: PruneCounts = field(default_factory=PruneCounts)
    feeds: list[FeedPruned] = field(default_factory=list)
    reclaimed_bytes: int = 0  # SQLite: file space given back
    seconds: float = 0.0


def prune(
    store: Store,
    rules: Mapping[str, Retention | None],
    default: Retention | None,
    now: datetime,
    *,
    dry_run: bool = False,
    batch: int = BATCH,
    reclaim: bool = True,
    on_batch: Callable[[PruneCounts], None] | None = None,
) -> PruneReport:
    """Apply retention to every feed with items: ``rules`` maps a feed's configured URL
    to its rule; a feed not in it (no longer configured) gets ``default``. ``on_batch``
    is told what each committed transaction removed (the daemon's metrics)."""
    started = time.monotonic()
    report = PruneReport(dry_run)
    with store.read() as conn:
        feeds = retention_sql.feed_rows(conn)
    for feed in feeds:
        rule = rules.get(feed.url, default)
        counts = _prune_feed(store, feed.id, rule, now, dry_run, batch, on_batch)
        if counts.items or counts.texts or counts.tombstones_pruned:
            counts.feeds = 1
            report.feeds.append(FeedPruned(feed.url, counts))
        report.total.add(counts)
    if reclaim and not dry_run and (report.total.items or report.total.texts):
        store.compact_search_index()  # SQLite: the deleted rows leave the FTS5 segments
        report.reclaimed_bytes = store.reclaim_space()
    report.seconds = time.monotonic() - started
    return report


def _prune_feed(
    store: Store,
    feed_id: int,
    rule: Retention | None,
    now: datetime,
    dry_run: bool,
    batch: int,
    on_batch: Callable[[PruneCounts], None] | None,
) -> PruneCounts:
    counts = PruneCounts()
    if rule is not None:
        cut = retention.cutoffs(rule, now)
        with store.read() as conn:
            found = retention_sql.candidates(
                conn,
                feed_id,
                delete_before=cut.delete_before,
                drop_text_before=cut.drop_text_before,
                keep_newest=cut.keep_newest,
            )
        for chunk in chunks(found, batch):
            step = PruneCounts()
            with store.read() if dry_run else store.locked_tx() as conn:
                current = retention_sql.current_keys(conn, feed_id)
                due = retention.due(cut, chunk, current)
                if current is None and rule.deletes:
                    counts.skipped_feeds = 1  # its next poll records its document
                step.kept_in_feed = due.kept_in_feed
                if dry_run:
                    step.stories, step.bytes = retention_sql.dry_counts(conn, due.delete)
                    step.items = len(due.delete)
                    step.texts = len(due.drop_text)
                    step.bytes += retention_sql.item_bytes(conn, due.drop_text, retention_sql.HEAVY)
                else:
                    deleted = retention_sql.delete_items(
                        conn, feed_id, due.delete, now, dedup.FULL_SHARE
                    )
                    texts, cleared = retention_sql.drop_text(conn, due.drop_text)
                    step.items, step.stories = deleted.items, deleted.stories
                    step.texts, step.bytes = texts, deleted.bytes + cleared
                step.tombstones = step.items
            if on_batch is not None and not dry_run:
                on_batch(step)
            counts.add(step)
    # tombstones of entries that have left their feed's document: read first, so a feed
    # without any costs no write transaction
    with store.read() as conn:
        current = retention_sql.current_keys(conn, feed_id)
        stale = retention.stale_tombstones(retention_sql.tombstones(conn, feed_id), current, now)
    if stale and not dry_run:
        with store.locked_tx() as conn:
            current = retention_sql.current_keys(conn, feed_id)
            stale = retention.stale_tombstones(
                retention_sql.tombstones(conn, feed_id), current, now
            )
            retention_sql.forget_tombstones(conn, feed_id, stale)
        if on_batch is not None:
            on_batch(PruneCounts(tombstones_pruned=len(stale)))
    counts.tombstones_pruned = len(stale)
    return counts


def prune_config(
    store: Store,
    feeds: Sequence[FeedSpec],
    default: Retention | None,
    now: datetime,
    **options: Any,
) -> PruneReport:
    """``prune`` with the rules of the configured ``feeds`` (by their configured URL)
    and ``default`` (``settings.retention``) for the feeds no longer configured."""
    return prune(store, {spec.url: spec.retention for spec in feeds}, default, now, **options)
