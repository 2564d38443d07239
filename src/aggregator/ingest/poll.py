"""Saving one poll on one connection: items, story decisions, the dedup index, the feed.

``save_poll`` writes a poll's new items (each with its story decided by
``dedup.decide_story``), its changed items and its feed's new state in the caller's
transaction, so a poll is all or nothing. The SQL is the store's (``store.items``,
``store.index``, ``store.storyrows``, ``store.feedrows``); the rules are ``dedup``'s. This
module only sequences them:

1. PostgreSQL: a row lock per band key, site and URL of the poll (``index.lock``), so
   a worker saving a copy waits for the one saving the original, then sees it.
2. Entries another worker stored meanwhile are dropped.
3. ``Prefetch`` reads the candidates of every entry at once. An entry that shares no URL
   and no LSH band with any stored item, nor with an earlier entry of the poll, can have
   no candidate: it is a new story for certain and is written in bulk. The others are
   decided one by one, after the bulk rows before them are written.
4. Changed entries are updated in place (``changed_values``: what the feed may replace).
5. The feed's row (``feedrows``), and the entry keys of the document the poll read
   (``retention.record_documents``: retention never deletes what is still in it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .. import dedup
from ..records import CleanEntry, PollToSave, SavePlan, SaveResult, StoryDecision
from ..store import blocked, events, feedrows, items, retention, storyrows
from ..store import index as dedup_index
from .candidates import BatchIndex, Prefetch
from .journal import Journal
from .planner import Placeholders, entry_sites, refused, still_new

if TYPE_CHECKING:
    from sqlalchemy import Connection


def save_poll(
    conn: Connection,
    poll: PollToSave,
    window: float,
    plan: SavePlan | None = None,
    journal: Journal | None = None,
) -> SaveResult:
    """Write ``poll`` in the caller's transaction; each new item's story is decided
    against candidates first seen within ``window`` seconds, or taken from ``plan``
    when ``journal`` (the writer's record of what it wrote since) accepts it."""
    result = SaveResult()
    if poll.new:
        result = _NewItems(conn, poll, window, journal).save(plan)
    update_changed(conn, poll.changed, poll.update.polled_at)
    if journal is not None and poll.changed:
        journal.moved(conn)  # stored items changed: plans taken before are stale
    # entry filters: the entries this poll blocked, remembered by key (store/blocked.py)
    blocked.save(conn, poll.feed_id, poll.update.blocked, poll.update.polled_at)
    feedrows.write_feeds(conn, [(poll.feed_id, poll.update)])
    # retention: the entry keys of the feed's current document (store/retention.py)
    if poll.document is not None:
        retention.record_documents(conn, [(poll.feed_id, poll.document, poll.update.polled_at)])
    # OUTBOX HOOK (store/events.py): story.new / story.sources_reached / item.new events
    # of this poll's new items (after the feed row: its title is news too), in this same
    # transaction
    events.record_poll(conn, poll.feed_id, [c.entry.key for c in poll.new], poll.update.polled_at)
    return SaveResult(result.new_items, len(poll.changed), result.new_stories, result.merged_items)


class _NewItems:
    """The new entries of one poll, decided and written in order (see the module)."""

    def __init__(
        self, conn: Connection, poll: PollToSave, window: float, journal: Journal | None
    ) -> None:
        self.conn = conn
        self.poll = poll
        self.feed_id = poll.feed_id
        self.now = poll.update.polled_at
        self.since = self.now - timedelta(seconds=window)
        self.journal = journal
        self.new_items = self.new_stories = self.merged = 0
        self.merges = 0  # stories merged by this poll so far
        self.prefetch: Prefetch | None = None  # None: a plan's decisions are written
        self.placeholders = Placeholders()

    def save(self, plan: SavePlan | None) -> SaveResult:
        conn, entries = self.conn, self.poll.new
        sites = list(plan.sites) if plan is not None else entry_sites(conn, self.poll)
        dedup_index.lock(
            conn,
            bands=(b for c in entries if c.fingerprint for b in c.fingerprint.bands),
            sites=(s for c in entries if (s := dedup.site_key(c.entry.link)) is not None),
            urls=(u for c in entries for u in (c.canonical_url, c.page_canonical_url) if u),
        )
        if plan is not None:
            todo = still_new(conn, self.poll, [None] * len(entries))
            if self.journal is not None and self.journal.accepts(conn, plan, todo, self.feed_id):
                self._write_plan(plan, [(c, s) for (c, _), s in zip(todo, plan.sites, strict=True)])
                return self._result()
            sites = entry_sites(conn, self.poll)
        self._decide_and_write(still_new(conn, self.poll, sites))
        if self.merges and self.journal is not None:
            self.journal.moved(conn)  # items moved between stories: plans before are stale
        return self._result()

    def _result(self) -> SaveResult:
        return SaveResult(self.new_items, 0, self.new_stories, self.merged)

    def _write_plan(self, plan: SavePlan, todo: Sequence[tuple[CleanEntry, int | None]]) -> None:
        """Write ``plan``'s decisions, flushing the new stories where the serial path
        does (so ids come in the order the plan's placeholders assumed)."""
        unwritten = BatchIndex()
        pending: list[tuple[CleanEntry, int | None]] = []
        for (clean, site), decider, planned in zip(
            todo, plan.deciders, plan.decisions, strict=True
        ):
            if not decider or planned is None:
                pending.append((clean, site))
                unwritten.add(clean)
                continue
            if unwritten.matches(clean):
                self._write_new_stories(pending)
                pending = []
                unwritten = BatchIndex()
            clean = refused(clean, planned)
            if planned.story_id is None:
                pending.append((clean, site))
                unwritten.add(clean)
                continue
            self._join(clean, site, self.placeholders.real(planned))
        if pending:
            self._write_new_stories(pending)

    def _decide_and_write(self, todo: Sequence[tuple[CleanEntry, int | None]]) -> None:
        prefetch = Prefetch([c for c, _ in todo], self.since, self.feed_id)
        if self.journal is None:
            prefetch.load(self.conn, [s for _, s in todo])
        else:  # the journal's cache of exact counts serves every site
            prefetch.load(self.conn, [s for _, s in todo], self.journal.anchor_counts, None)
        self.prefetch = prefetch
        batch = BatchIndex()  # every earlier entry of this poll
        unwritten = BatchIndex()  # those of them still in `pending`
        pending: list[tuple[CleanEntry, int | None]] = []
        for number, (clean, site) in enumerate(todo):
            if number not in prefetch.hits and not batch.matches(clean):
                pending.append((clean, site))
                prefetch.count(clean, site)
                batch.add(clean)
                unwritten.add(clean)
                continue
            # an unwritten entry could be its candidate (or, when the database is asked,
            # have anchor counts not written yet): write them first
            if unwritten.matches(clean, anchors=self.merges > 0):
                self._write_new_stories(pending)
                pending = []
                unwritten = BatchIndex()
            batch.add(clean)
            decision = self._decide(clean, site)
            clean = refused(clean, decision)
            if decision.story_id is None:
                # a new story after all: written in bulk like the certain ones
                pending.append((clean, site))
                prefetch.count(clean, site)
                unwritten.add(clean)
                continue
            self._join(clean, site, decision)
        if pending:
            self._write_new_stories(pending)

    def _decide(self, clean: CleanEntry, site: int | None) -> StoryDecision:
        prefetch = self.prefetch
        assert prefetch is not None
        common: Callable[[], frozenset[int]]
        if self.merges:  # items moved between stories: ask the database
            found = dedup_index.candidates(
                self.conn,
                clean,
                self.since,
                self.feed_id,
                url_limit=dedup.MAX_URL_CANDIDATES,
                band_limit=dedup.MAX_BAND_CANDIDATES,
            )

            def common() -> frozenset[int]:
                anchors = clean.fingerprint.anchors if clean.fingerprint is not None else ()
                sites = {site, *(dedup.site_key(c.url) for c in found)}
                return dedup_index.common_anchors(
                    self.conn, anchors, sorted(s for s in sites if s is not None), dedup.COMMON_DF
                )

        else:
            found = prefetch.candidates(clean)

            def common() -> frozenset[int]:
                return prefetch.common_anchors(clean, found, site)

        if not found:
            return StoryDecision(None, 0.0, "new")
        # the common anchors are read only if a candidate gets as far as the discount
        return dedup.decide_story(clean, found, common)

    def _join(self, clean: CleanEntry, site: int | None, decision: StoryDecision) -> None:
        """An item that joins an existing story (and may merge others into it)."""
        conn, now = self.conn, self.now
        self.merged += 1
        item_id = items.insert_item(conn, self.feed_id, clean, decision, now)
        dedup_index.index_items(conn, [(item_id, clean)], now)
        story_id = decision.story_id
        assert story_id is not None
        if decision.merge_story_ids:
            story_id, _ = storyrows.merge_stories(conn, decision, item_id, now, dedup.FULL_SHARE)
            self.merges += 1
        else:
            storyrows.refresh_story(conn, story_id, dedup.FULL_SHARE)
        if self.prefetch is not None:
            self.prefetch.add(item_id, story_id, clean, now)
        if self.journal is not None:
            self.journal.record(item_id, story_id, clean, self.feed_id, site, now, new_story=False)
        self.placeholders.items.append(item_id)
        self.new_items += 1

    def _write_new_stories(self, pending: Sequence[tuple[CleanEntry, int | None]]) -> None:
        """Items that start a story each: stories, items, index rows and anchor counts in
        a handful of executemany statements (what the per-item path does, in bulk)."""
        conn, now = self.conn, self.now
        written = items.insert_new_stories(conn, self.feed_id, [c for c, _ in pending], now)
        dedup_index.index_items(
            conn,
            [(item_id, clean) for (clean, _), (_, item_id) in zip(pending, written, strict=True)],
            now,
        )
        counted = _anchor_counts(pending)
        dedup_index.count_anchors(conn, counted, now)
        if self.journal is not None:
            self.journal.counted(counted)
        if self.prefetch is not None:
            self.prefetch.flushed(counted)
        for (clean, site), (story_id, item_id) in zip(pending, written, strict=True):
            if self.prefetch is not None:
                self.prefetch.add(item_id, story_id, clean, now)
            if self.journal is not None:
                self.journal.record(
                    item_id, story_id, clean, self.feed_id, site, now, new_story=True
                )
            self.placeholders.items.append(item_id)
            self.placeholders.stories.append(story_id)
        self.new_items += len(pending)
        self.new_stories += len(pending)


def _anchor_counts(
    new_stories: Sequence[tuple[CleanEntry, int | None]],
) -> Counter[tuple[int, int]]:
    """New stories per (site, anchor): each story's distinct anchors, once."""
    counts: Counter[tuple[int, int]] = Counter()
    for clean, site in new_stories:
        fp = clean.fingerprint
        if fp is None or site is None:
            continue
        for anchor in set(fp.anchors):
            counts[(site, anchor)] += 1
    return counts


def update_changed(
    conn: Connection, changed: Sequence[tuple[int, CleanEntry]], now: datetime
) -> None:
    """Entries whose content changed, updated in place."""
    for item_id, clean in changed:
        values, feed_text = changed_values(clean)
        items.update_item(conn, item_id, values, now, where_feed_text=feed_text)


def changed_values(clean: CleanEntry) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """What a changed entry sets on its item: ``(always, only where the item's text came
    from the feed)``. With an article page of its own, everything; without one, the item
    keeps what its page gave (text, author, date, image, language) unless the feed now
    says something itself, and its text only where that text came from the feed."""
    values = items.item_values(clean)
    values.pop("entry_key")
    if values["page_canonical_url"] is None:
        del values["page_canonical_url"]
    if clean.article is not None:
        return values, None
    values = {
        k: v
        for k, v in values.items()
        if k != "language" and not (k in ("author", "published_at", "image_url") and v is None)
    }
    always = {k: v for k, v in values.items() if k not in ("text", "text_source")}
    return always, values
