"""The candidates of a poll's entries, read once for the whole poll.

``Prefetch`` reads, for all the new entries of a poll at once, the stored items sharing a
canonical URL or an LSH band with them (``store.index``), those items' rows, and the
anchor counts of the poll's sites and the candidates' sites; the poll's own entries are
added as they are decided (``add``, ``count``), so each entry gets exactly the candidates
and common anchors the database would give at that moment, without a query per entry.
``BatchIndex`` holds what ``Prefetch`` cannot see: the entries of the same poll.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import dedup
from ..records import CleanEntry, StoryCandidate
from ..store import index as dedup_index

if TYPE_CHECKING:
    from sqlalchemy import Connection

AnchorCounts = Callable[["Connection", Sequence[tuple[int, int]]], dict[tuple[int, int], int]]


def common_counts(conn: Connection, pairs: Sequence[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """The anchor counts of ``pairs`` that make an anchor common (``dedup.COMMON_DF``)."""
    return dedup_index.anchor_counts(conn, pairs, dedup.COMMON_DF)


def _urls(clean: CleanEntry) -> set[str]:
    return {u for u in (clean.canonical_url, clean.page_canonical_url) if u}


def _bands(clean: CleanEntry) -> set[int]:
    return set(clean.fingerprint.bands) if clean.fingerprint is not None else set()


def _url_candidates(rows: Sequence[Any], since: datetime) -> list[int]:
    """Of the items sharing a URL column value (id, first_seen_at, story_id): the latest
    50 by id, those of the window with a story, at most ``dedup.MAX_URL_CANDIDATES``."""
    latest = sorted(rows, key=lambda r: r[0], reverse=True)[:50]
    recent = [r[0] for r in latest if r[2] is not None and r[1] >= since]
    return recent[: dedup.MAX_URL_CANDIDATES]


def _band_candidates(counts: Counter[int] | dict[int, int]) -> list[tuple[int, int]]:
    """(item id, shared bands), most shared bands first, then the latest."""
    ranked = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    return ranked[: dedup.MAX_BAND_CANDIDATES]


def ranked(
    url_found: Sequence[int], band_found: Sequence[tuple[int, int]], *more: tuple[int, int]
) -> dict[int, int]:
    """Candidate ids and their shared bands (0: by URL only): the URL's, then the band
    candidates of ``band_found`` and ``more`` (item id, shared bands) within the limit."""
    found = dict.fromkeys(url_found, 0)
    found.update(_band_candidates(dict([*band_found, *more])))
    return found


class Prefetch:
    """What ``candidates`` and ``common_anchors`` would find for each entry of a poll,
    read in a few queries for the whole poll before anything of it is written.

    ``hits`` are the indexes of the entries that share a canonical URL or an LSH band with
    a stored item of the window; the others are new stories for certain (unless an earlier
    entry of the poll matches them) and are written in bulk. The poll's own entries are
    added as they are decided: ``add`` makes a written item a candidate for the entries
    after it, ``count`` raises the anchor counts of a new story, so the answers stay what
    the database would give. A story merge moves items between stories; after one the
    store asks the database again."""

    def __init__(
        self, entries: Sequence[CleanEntry], since: datetime, feed_id: int | None = None
    ) -> None:
        self.entries = entries
        self.since = since
        self.feed_id = feed_id  # the poll's feed: its items are ``same_feed`` candidates
        self.hits: set[int] = set()
        self._url_rows: dict[tuple[int, str], list[Any]] = {}  # (column, url) -> rows
        self._band_items: dict[int, list[int]] = {}
        self._rows: dict[int, StoryCandidate] = {}
        # anchor counts, (site, anchor) -> stories seen in: as the database had them when
        # the poll began (read as needed: ``known`` holds the pairs read), plus the poll's
        # new stories (``local``), of which ``flushed`` are written to the database
        self._df: dict[tuple[int, int], int] = {}
        self._known: set[tuple[int, int]] = set()
        self._local: Counter[tuple[int, int]] = Counter()
        self._flushed: Counter[tuple[int, int]] = Counter()
        self._conn: Connection | None = None
        self._poll_sites: set[int] = set()
        self._counts: AnchorCounts = dedup_index.anchor_counts
        self._common: AnchorCounts | None = common_counts

    def load(
        self,
        conn: Connection,
        sites: Sequence[int | None],
        counts: AnchorCounts = dedup_index.anchor_counts,
        common: AnchorCounts | None = common_counts,
    ) -> Prefetch:
        """Read the candidates and anchor counts of the poll's entries (``sites``: each
        entry's site): ``counts`` gives exact counts, ``common`` those of at least
        ``dedup.COMMON_DF`` (None: ``counts`` for every site); the counts are read
        when ``common_anchors`` needs them, on ``conn``."""
        by_url: dict[str, list[int]] = {}
        by_band: dict[int, list[int]] = {}
        for number, clean in enumerate(self.entries):
            for url in _urls(clean):
                by_url.setdefault(url, []).append(number)
            for band in _bands(clean):
                by_band.setdefault(band, []).append(number)
        urls = sorted(by_url)
        self._url_rows = dedup_index.url_rows(conn, urls)
        for (_number, url), rows in self._url_rows.items():
            if any(story is not None and seen >= self.since for _id, seen, story in rows):
                self.hits.update(by_url[url])
        self._band_items = dedup_index.band_items(conn, sorted(by_band), self.since)
        for band in self._band_items:
            self.hits.update(by_band[band])
        found = {i: self._found(self.entries[i]) for i in self.hits}
        wanted = sorted({item_id for ids in found.values() for item_id in ids})
        self._rows = dedup_index.candidate_rows(conn, wanted)
        # anchor counts: read when a decision needs them (``common_anchors``), which
        # is rare: most candidates are passed over before any boilerplate discount
        # (``dedup.ignored``, ``dedup.no_text_match``). Reading every decided entry's
        # anchors in its candidates' sites up front was 30 % of a writer's time
        self._conn = conn
        self._poll_sites = {site for site in sites if site is not None}
        self._counts, self._common = counts, common
        return self

    def _found(self, clean: CleanEntry) -> dict[int, int]:
        """Candidate item ids of an entry and their shared bands (0: by URL), as
        ``candidates`` ranks them (before dropping items without a story)."""
        url_found, band_found = self.found(clean)
        return ranked(url_found, band_found)

    def found(self, clean: CleanEntry) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
        """An entry's candidate ids by URL, and by LSH band with their shared bands."""
        url_found: list[int] = []
        urls = _urls(clean)
        for number in (0, 1) if urls else ():
            rows = [r for u in urls for r in self._url_rows.get((number, u), ())]
            url_found += _url_candidates(rows, self.since)
        counts: Counter[int] = Counter()
        for band in _bands(clean):
            counts.update(self._band_items.get(band, ()))
        return tuple(url_found), tuple(_band_candidates(counts))

    def row(self, item_id: int) -> StoryCandidate | None:
        return self._rows.get(item_id)

    def candidates(self, clean: CleanEntry) -> list[StoryCandidate]:
        result = [
            replace(
                row,
                band_matches=n,
                same_feed=self.feed_id is not None and row.feed_id == self.feed_id,
            )
            for item_id, n in self._found(clean).items()
            if (row := self._rows.get(item_id)) is not None
        ]
        result.sort(key=lambda c: (-c.band_matches, c.item_id))
        return result

    def common_anchors(
        self, clean: CleanEntry, found: Sequence[StoryCandidate], site: int | None
    ) -> frozenset[int]:
        """The anchors of ``clean`` seen in ``dedup.COMMON_DF`` stories of its site or of
        a candidate's site, counting the poll's new stories before ``clean``."""
        fp = clean.fingerprint
        if fp is None or not fp.anchors or not found:
            return frozenset()
        sites = {s for s in (site, *(dedup.site_key(c.url) for c in found)) if s is not None}
        self._read(sites, fp.anchors)
        df, local = self._df, self._local
        return frozenset(
            a
            for a in fp.anchors
            if any(df.get((s, a), 0) + local.get((s, a), 0) >= dedup.COMMON_DF for s in sites)
        )

    def _read(self, sites: set[int], anchors: Sequence[int]) -> None:
        """The counts of ``sites`` x ``anchors`` not read yet, as at the poll's start: the
        poll's own sites exactly (its new stories add to them; those already written are
        taken off again), another site's only where common (nothing of the poll adds to
        it)."""
        missing = {(s, a) for s in sites for a in anchors} - self._known
        if not missing or self._conn is None:
            return
        self._known |= missing
        own = sorted(p for p in missing if p[0] in self._poll_sites)
        elsewhere = sorted(p for p in missing if p[0] not in self._poll_sites)
        read = self._counts(self._conn, own) if own else {}
        if elsewhere:
            reader = self._counts if self._common is None else self._common
            read.update(reader(self._conn, elsewhere))
        flushed = self._flushed
        self._df.update((p, n - flushed.get(p, 0)) for p, n in read.items())

    def add(self, item_id: int, story_id: int, clean: CleanEntry, now: datetime) -> None:
        """An item of this poll, now written: a candidate for the entries after it."""
        for number, url in enumerate((clean.canonical_url, clean.page_canonical_url)):
            if url:
                self._url_rows.setdefault((number, url), []).append((item_id, now, story_id))
        for band in _bands(clean):
            self._band_items.setdefault(band, []).append(item_id)
        self._rows[item_id] = candidate_row(item_id, story_id, clean, self.feed_id, now)

    def count(self, clean: CleanEntry, site: int | None) -> None:
        """A new story of this poll: its anchors were seen in one more story of its site
        (what ``index.count_anchors`` writes when they are)."""
        fp = clean.fingerprint
        if fp is None or site is None:
            return
        for anchor in set(fp.anchors):
            self._local[(site, anchor)] += 1

    def flushed(self, counts: Counter[tuple[int, int]]) -> None:
        """Counts of the poll's new stories now written to the database (``count_anchors``):
        a count read after this is taken as at the poll's start by subtracting them."""
        self._flushed.update(counts)


def candidate_row(
    item_id: int, story_id: int, clean: CleanEntry, feed_id: int | None, now: datetime
) -> StoryCandidate:
    """A written item as a candidate row (what ``index.candidate_rows`` would read)."""
    fp = clean.fingerprint
    return StoryCandidate(
        item_id=item_id,
        story_id=story_id,
        canonical_url=clean.canonical_url,
        title=clean.entry.title,
        text=clean.text if fp is None else None,  # as `_candidate_rows` reads it
        page_canonical_url=clean.page_canonical_url,
        url=clean.entry.link,
        first_seen_at=now,
        shingles=fp.shingles if fp is not None else None,
        feed_id=feed_id,
        entry_key=clean.entry.key,
        url_refusal=clean.url_refusal,
    )


class BatchIndex:
    """URLs, bands and (site, anchor) pairs of entries of the same poll that
    ``Prefetch`` could not see: an entry matching none of them finds exactly the same
    candidates, and the same anchor counts, whether those entries are written yet or not."""

    def __init__(self) -> None:
        self.urls: set[str] = set()
        self.bands: set[int] = set()
        self.anchors: set[int] = set()  # of any site: a candidate's site counts too

    def matches(self, clean: CleanEntry, *, anchors: bool = False) -> bool:
        if _urls(clean) & self.urls or _bands(clean) & self.bands:
            return True
        fp = clean.fingerprint
        return bool(anchors and fp is not None and not self.anchors.isdisjoint(fp.anchors))

    def add(self, clean: CleanEntry) -> None:
        self.urls |= _urls(clean)
        self.bands |= _bands(clean)
        if clean.fingerprint is not None:
            self.anchors.update(clean.fingerprint.anchors)
