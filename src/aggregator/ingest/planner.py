"""Planning a poll's story decisions against a read snapshot, in a pool worker (see
``plan``): ``plan_poll`` takes them as ``save_poll`` would, without writing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from .. import dedup
from ..records import CleanEntry, PollToSave, SavePlan, StoryCandidate, StoryDecision
from ..store import feedrows, items
from ..store import index as dedup_index
from .candidates import BatchIndex, Prefetch

if TYPE_CHECKING:
    from sqlalchemy import Connection

PLACEHOLDER = 1 << 62  # ids of a plan's own items and stories: PLACEHOLDER + write order


def entry_sites(conn: Connection, poll: PollToSave) -> list[int | None]:
    feed_url = feedrows.feed_url(conn, poll.feed_id)
    return [dedup.site_key(c.entry.link or feed_url) for c in poll.new]


def still_new(
    conn: Connection, poll: PollToSave, sites: Sequence[int | None]
) -> list[tuple[CleanEntry, int | None]]:
    """The poll's new entries not stored meanwhile (nor twice in the poll), with sites."""
    stored = items.stored_keys(conn, poll.feed_id, [c.entry.key for c in poll.new])
    todo: list[tuple[CleanEntry, int | None]] = []
    for clean, site in zip(poll.new, sites, strict=True):
        if clean.entry.key in stored:
            continue  # another worker stored it meanwhile
        stored.add(clean.entry.key)
        todo.append((clean, site))
    return todo


def refused(clean: CleanEntry, decision: StoryDecision) -> CleanEntry:
    """``clean`` with the URL refusal its decision found (what its item stores)."""
    if decision.url_refusal and decision.url_refusal != clean.url_refusal:
        return replace(clean, url_refusal=decision.url_refusal)
    return clean


def plan_poll(conn: Connection, poll: PollToSave, window: float) -> SavePlan | None:
    """The decisions ``save_poll`` would take for ``poll`` on this snapshot, taken the
    same way (the same order of candidates, the same anchor counts), without writing;
    None when one of them merges stories."""
    mark = dedup_index.last_item_id(conn)
    now = poll.update.polled_at
    since = now - timedelta(seconds=window)
    sites = entry_sites(conn, poll)
    todo = still_new(conn, poll, sites)
    prefetch = Prefetch([c for c, _ in todo], since, poll.feed_id).load(conn, [s for _, s in todo])
    written = _Written(prefetch, now)
    batch = BatchIndex()
    unwritten = BatchIndex()
    deciders: list[bool] = []
    decisions: list[StoryDecision | None] = []
    url_found: list[tuple[int, ...]] = []
    band_found: list[tuple[tuple[int, int], ...]] = []
    rows: list[tuple[StoryCandidate, ...]] = []
    consulted: list[frozenset[int]] = []
    commons: list[frozenset[int]] = []
    for number, (clean, site) in enumerate(todo):
        if number not in prefetch.hits and not batch.matches(clean):
            deciders.append(False)
            decisions.append(None)
            url_found.append(())
            band_found.append(())
            rows.append(())
            consulted.append(frozenset())
            commons.append(frozenset())
            written.pending.append(clean)
            prefetch.count(clean, site)
            batch.add(clean)
            unwritten.add(clean)
            continue
        deciders.append(True)
        if unwritten.matches(clean):  # the writer writes them first here
            written.flush()
            unwritten = BatchIndex()
        batch.add(clean)
        found = prefetch.candidates(clean)
        common = prefetch.common_anchors(clean, found, site)
        by_url, by_band = prefetch.found(clean)
        url_found.append(by_url)
        band_found.append(by_band)
        rows.append(tuple(found))
        sites_seen = {site, *(dedup.site_key(c.url) for c in found)} if found else set()
        consulted.append(frozenset(s for s in sites_seen if s is not None))
        commons.append(common)
        decision = dedup.decide_story(clean, found, common) if found else None
        if decision is None:
            decision = StoryDecision(None, 0.0, "new")
        if decision.merge_story_ids:
            return None
        decisions.append(decision)
        clean = refused(clean, decision)
        if decision.story_id is None:
            written.pending.append(clean)
            prefetch.count(clean, site)
            unwritten.add(clean)
            continue
        written.join(clean, decision.story_id)
    return SavePlan(
        mark=mark,
        keys=tuple(c.entry.key for c, _ in todo),
        sites=tuple(s for _, s in todo),
        deciders=tuple(deciders),
        decisions=tuple(decisions),
        url_found=tuple(url_found),
        band_found=tuple(band_found),
        candidates=tuple(rows),
        consulted=tuple(consulted),
        common=tuple(commons),
    )


class _Written:
    """The planner's stand-in for the writer's writes: placeholder ids, given in the
    order the writer will write (new stories in bulk at each flush, a joining item at
    its turn), so candidates rank as they will in the writer."""

    def __init__(self, prefetch: Prefetch, now: datetime) -> None:
        self.prefetch = prefetch
        self.now = now
        self.pending: list[CleanEntry] = []
        self.items = 0
        self.stories = 0

    def flush(self) -> None:
        for clean in self.pending:
            self.prefetch.add(PLACEHOLDER + self.items, PLACEHOLDER + self.stories, clean, self.now)
            self.items += 1
            self.stories += 1
        self.pending = []

    def join(self, clean: CleanEntry, story_id: int) -> None:
        self.prefetch.add(PLACEHOLDER + self.items, story_id, clean, self.now)
        self.items += 1


class Placeholders:
    """The writer's side: real ids for a plan's placeholders, as they are written."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.stories: list[int] = []

    def real(self, decision: StoryDecision) -> StoryDecision:
        def one(value: int | None, written: list[int]) -> int | None:
            if value is None or value < PLACEHOLDER:
                return value
            return written[value - PLACEHOLDER]

        return replace(
            decision,
            story_id=one(decision.story_id, self.stories),
            item_id=one(decision.item_id, self.items),
        )
