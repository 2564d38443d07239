"""The writer's journal: what it wrote lately, to check plans against (see ``plan``).

A plan was taken against a snapshot whose highest item id is its mark; the journal holds
every item the writer wrote since (for about ``keep`` items), and re-checks a plan only
against those: the few items committed since its snapshot.

- An item sharing a canonical URL with an entry: refused (the URL could be its identity).
- Items sharing an LSH band with an entry are candidates the plan could not see: the
  entry is decided again (``dedup.decide_story``) with the plan's candidates and those,
  ranked and limited as ``Prefetch`` ranks them, and the anchors common in their sites
  read again; the plan stands if the decision is the plan's, to the score. An entry that
  was a new story for certain and still is must also not move the point where the writer
  writes the poll's new stories before a decision (the items' ids would come in another
  order).
- Anchors counted by new stories since the mark, in the sites an entry's decision
  consulted: decided again the same way.
- The floor: stored items changed other than by new items (a story merge, a changed
  entry, another connection's commit, seen by SQLite's ``data_version``): every plan
  whose mark is not above the item id of that moment is refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from .. import dedup
from ..records import CleanEntry, SavePlan, StoryCandidate
from ..store import index as dedup_index
from .candidates import BatchIndex, candidate_row, ranked

if TYPE_CHECKING:
    from sqlalchemy import Connection

JOURNAL_ITEMS = 2000  # items the journal remembers at least (a few seconds of writing)
ANCHOR_PAIRS = 50_000  # anchor counts the writer keeps (about 6 MB), then starts again


class Journal:
    """Lives in the writer (one thread)."""

    def __init__(self, keep: int = JOURNAL_ITEMS) -> None:
        self.keep = keep
        self.floor: int | None = None  # plans must have seen past this item id
        self._version: tuple[int, int] | None = None
        self._urls: dict[str, int] = {}  # -> the latest item with it
        self._bands: dict[int, list[int]] = {}  # -> items with it, in order
        self._pairs: dict[tuple[int, int], int] = {}  # (site, anchor) -> latest new story
        self._items: dict[int, StoryCandidate] = {}  # as a candidate row
        self._last = 0  # highest item id recorded
        # anchor counts as read and then counted by this writer (only the writer counts
        # anchors; another connection's commit, e.g. a pruning, empties it)
        self._df: dict[tuple[int, int], int] = {}
        self.accepted = 0  # plans taken (tests, benchmarks, the writer's log)
        self.refused = 0  # plans refused: the writer decided those polls itself

    # ---- what the writer wrote ---------------------------------------------------
    def sync(self, conn: Connection) -> None:
        """In the writer's transaction: if another connection committed since the last
        look, nothing older than now can be trusted."""
        version = dedup_index.data_version(conn)
        if version != self._version or self.floor is None:
            self._version = version
            self._df.clear()
            self.moved(conn)

    def reset(self) -> None:
        """A save failed (its savepoint, or the group, rolled back): what was recorded
        may never have been committed. Forget everything; plans before now are refused."""
        self.floor = self._version = None
        self._urls, self._bands, self._pairs, self._items, self._df = {}, {}, {}, {}, {}

    def anchor_counts(
        self, conn: Connection, pairs: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], int]:
        """``index.anchor_counts``, with the counts already read or counted kept."""
        df = self._df
        missing = [p for p in pairs if p not in df]
        if missing:
            if len(df) + len(missing) > ANCHOR_PAIRS:
                df.clear()
                missing = list(pairs)
            found = dedup_index.anchor_counts(conn, missing)
            for pair in missing:
                df[pair] = found.get(pair, 0)
        return {p: n for p in pairs if (n := df[p])}

    def counted(self, counts: Counter[tuple[int, int]]) -> None:
        """New stories counted in these (site, anchor) pairs (in the same transaction)."""
        df = self._df
        for pair, n in counts.items():
            if pair in df:
                df[pair] += n

    def moved(self, conn: Connection) -> None:
        """Stored items changed other than by new items: plans must have seen
        everything written so far."""
        self.floor = max(self.floor or 0, dedup_index.last_item_id(conn))

    def record(
        self,
        item_id: int,
        story_id: int,
        clean: CleanEntry,
        feed_id: int,
        site: int | None,
        now: datetime,
        *,
        new_story: bool,
    ) -> None:
        """An item just written (a new story's anchors counted in ``site``)."""
        for url in (clean.canonical_url, clean.page_canonical_url):
            if url:
                self._urls[url] = item_id
        fp = clean.fingerprint
        if fp is not None:
            for band in set(fp.bands):
                self._bands.setdefault(band, []).append(item_id)
            if new_story and site is not None:
                for anchor in fp.anchors:
                    self._pairs[(site, anchor)] = item_id
        self._items[item_id] = candidate_row(item_id, story_id, clean, feed_id, now)
        self._last = max(self._last, item_id)
        if len(self._items) >= 2 * self.keep:
            self._trim()

    def _trim(self) -> None:
        cut = self._last - self.keep
        self._urls = {k: v for k, v in self._urls.items() if v > cut}
        self._bands = {
            k: kept for k, v in self._bands.items() if (kept := [i for i in v if i > cut])
        }
        self._pairs = {k: v for k, v in self._pairs.items() if v > cut}
        self._items = {k: v for k, v in self._items.items() if k > cut}
        self.floor = max(self.floor or 0, cut)

    # ---- plans -------------------------------------------------------------------
    def accepts(
        self,
        conn: Connection,
        plan: SavePlan,
        todo: Sequence[tuple[CleanEntry, int | None]],
        feed_id: int,
    ) -> bool:
        """May ``plan`` be written as it is, for the entries still new ``todo``?"""
        self.sync(conn)
        ok = (
            self.floor is not None
            and plan.mark > self.floor
            and tuple(c.entry.key for c, _ in todo) == plan.keys
            # each entry with its site as the plan has it (what the writer writes with)
            and _Check(self, conn, plan, feed_id).holds(
                [(c, s) for (c, _), s in zip(todo, plan.sites, strict=True)]
            )
        )
        if ok:
            self.accepted += 1
        else:
            self.refused += 1
        return ok


class _Check:
    """One plan against the journal (see the module)."""

    def __init__(self, journal: Journal, conn: Connection, plan: SavePlan, feed_id: int) -> None:
        self.journal = journal
        self.conn = conn
        self.plan = plan
        self.feed_id = feed_id
        self.counted: Counter[tuple[int, int]] = Counter()  # the poll's earlier new stories

    def holds(self, todo: Sequence[tuple[CleanEntry, int | None]]) -> bool:
        plan = self.plan
        unwritten = BatchIndex()
        for number, (clean, site) in enumerate(todo):
            later = self._later_band_items(clean)
            if later is None:
                return False
            decider = plan.deciders[number] or bool(later)
            if decider and unwritten.matches(clean):
                if not plan.deciders[number]:
                    return False  # the new stories would be written at another point
                unwritten = BatchIndex()
            if (later or self._recounted(clean, number)) and not self._same(
                clean, site, number, later
            ):
                return False
            decision = plan.decisions[number]
            if not decider or decision is None or decision.story_id is None:
                unwritten.add(clean)
                fp = clean.fingerprint
                if fp is not None and site is not None:
                    self.counted.update((site, a) for a in set(fp.anchors))
        return True

    def _later_band_items(self, clean: CleanEntry) -> dict[int, int] | None:
        """Items written after the mark sharing bands with ``clean``: id -> how many
        (None: one shares a URL with it)."""
        journal, mark = self.journal, self.plan.mark
        for url in (clean.canonical_url, clean.page_canonical_url):
            if url and journal._urls.get(url, 0) > mark:
                return None
        fp = clean.fingerprint
        found: Counter[int] = Counter()
        for band in set(fp.bands) if fp is not None else ():
            found.update(i for i in journal._bands.get(band, ()) if i > mark)
        return dict(found)

    def _recounted(self, clean: CleanEntry, number: int) -> bool:
        """Did a new story since the mark count an anchor of ``clean`` in a consulted site?"""
        fp, sites = clean.fingerprint, self.plan.consulted[number]
        if fp is None or not sites:
            return False
        pairs, mark = self.journal._pairs, self.plan.mark
        return any(pairs.get((s, a), 0) > mark for s in sites for a in set(fp.anchors))

    def _same(
        self, clean: CleanEntry, site: int | None, number: int, later: dict[int, int]
    ) -> bool:
        """``clean`` decided again with the later items among its candidates: the plan's
        decision?"""
        plan, items = self.plan, self.journal._items
        rows = {c.item_id: c for c in plan.candidates[number]}
        rows.update((i, items[i]) for i in later)
        found = ranked(plan.url_found[number], plan.band_found[number], *later.items())
        candidates = [
            replace(row, band_matches=n, same_feed=row.feed_id == self.feed_id)
            for item_id, n in found.items()
            if (row := rows.get(item_id)) is not None
        ]
        candidates.sort(key=lambda c: (-c.band_matches, c.item_id))
        planned = plan.decisions[number]
        if not candidates:
            return planned is None or planned.story_id is None
        decision = dedup.decide_story(
            clean, candidates, self._common(clean, number, site, candidates)
        )
        if planned is None:  # was a new story for certain: must still be one, as it was
            return decision.story_id is None and decision.url_refusal in (None, clean.url_refusal)
        return decision == planned

    def _common(
        self, clean: CleanEntry, number: int, site: int | None, found: Sequence[StoryCandidate]
    ) -> frozenset[int]:
        """The anchors of ``clean`` common in its site or a candidate's, as
        ``Prefetch.common_anchors`` would find them now. Counts only grow (a pruning is
        another connection's commit: the floor), so the plan's common anchors still are
        while every site it consulted still is; then only the pairs of a site the plan
        did not consult, or counted since its mark, are read again (with the poll's
        earlier new stories counted, as ``Prefetch``)."""
        fp = clean.fingerprint
        if fp is None or not fp.anchors:
            return frozenset()
        sites = {s for s in (site, *(dedup.site_key(c.url) for c in found)) if s is not None}
        consulted, mark = self.plan.consulted[number], self.plan.mark
        # a site the plan consulted may be gone (its candidate pushed out of the limit):
        # then nothing of the plan's common anchors is taken, every pair is read
        known = self.plan.common[number]
        if not consulted <= sites:
            known, consulted = frozenset(), frozenset()
        recounted = self.journal._pairs
        pairs = sorted(
            (s, a)
            for s in sites
            for a in set(fp.anchors) - known
            if s not in consulted or recounted.get((s, a), 0) > mark
        )
        counts = self.journal.anchor_counts(self.conn, pairs) if pairs else {}
        more = {
            a for s, a in pairs if counts.get((s, a), 0) + self.counted[(s, a)] >= dedup.COMMON_DF
        }
        return frozenset(a for a in fp.anchors if a in known or a in more)
