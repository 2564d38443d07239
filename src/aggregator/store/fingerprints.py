"""The story-dedup index and story bookkeeping, inside ``Store.save_poll``'s transaction.

- ``dedup_bands`` holds each item's MinHash LSH band keys with the item's
  ``first_seen_at``: candidates are one primary-key range per band, limited to the dedup
  window (measured on when the aggregator first saw an item, not on feed dates).
- ``dedup_shingles`` counts, per site, in how many stories each sampled anchor shingle
  appeared: anchors seen in ``COMMON_DF`` or more stories of a site are boilerplate.
- Merging stories moves items, records a ``story_merges`` row and deletes the absorbed
  story; a story's title and URL are those of its earliest full version.
- PostgreSQL, several workers: ``lock`` takes transaction-scoped advisory locks on every
  band key and canonical URL of the poll's new items, in sorted order (no deadlock between
  two polls), so a worker ingesting a copy waits for the one ingesting the original and
  then sees its rows. SQLite needs nothing: ``BEGIN IMMEDIATE`` serializes writers.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Select, case, delete, desc, func, insert, select, text, update

from ..records import CleanEntry, StoryCandidate, StoryDecision
from .tables import dedup_bands, dedup_shingles, items, stories, story_merges

MAX_BAND_CANDIDATES = 8  # items verified per new item, most shared bands first
MAX_URL_CANDIDATES = 5
COMMON_DF = 3  # an anchor in this many stories of one site is boilerplate
FULL_SHARE = 0.8  # an item whose text is this share of the story's longest is "full"


def site_key(url: str | None) -> int | None:
    """A 63-bit key for the host of a URL (``www.`` ignored): the unit of boilerplate."""
    host = (urlsplit(url).hostname or "").lower() if url else ""
    if host.startswith("www."):
        host = host[4:]
    if not host:
        return None
    digest = hashlib.blake2b(host.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


def lock(conn: Connection, entries: Sequence[CleanEntry]) -> None:
    """PostgreSQL: advisory locks on the poll's band keys and canonical URLs (sorted)."""
    if conn.dialect.name != "postgresql" or not entries:
        return
    bands = sorted({b for c in entries if c.fingerprint for b in c.fingerprint.bands})
    # the sites too: two polls of one site upsert the same anchor-count rows, in orders
    # that could deadlock; with the site locked they take turns
    bands += sorted({s for c in entries if (s := site_key(c.entry.link)) is not None})
    urls = sorted({u for c in entries for u in (c.canonical_url, c.page_canonical_url) if u})
    if not bands and not urls:
        return
    conn.execute(
        text(
            "SELECT count(pg_advisory_xact_lock(k)) FROM ("
            " SELECT k FROM ("
            "  SELECT unnest(CAST(:bands AS bigint[])) AS k"
            "  UNION SELECT hashtextextended(u, 0) FROM unnest(CAST(:urls AS text[])) AS u"
            " ) keys ORDER BY k) ordered"
        ),
        {"bands": bands, "urls": urls},
    )


def candidates(
    conn: Connection,
    clean: CleanEntry,
    since: datetime,
    feed_id: int | None = None,
    *,
    before_id: int | None = None,
) -> list[StoryCandidate]:
    """Items first seen since ``since`` that share a canonical URL or an LSH band
    (``same_feed`` set on those of ``feed_id``, the feed of the entry being decided;
    ``before_id``: only items stored before that one, for ``stories rebuild``)."""
    found: dict[int, int] = {}
    urls = [u for u in {clean.canonical_url, clean.page_canonical_url} if u]
    for column in (items.c.canonical_url, items.c.page_canonical_url) if urls else ():
        # one lookup per column on its index (with an OR of the two, or a condition on
        # first_seen_at, SQLite may prefer scanning); the window is applied here
        query = select(items.c.id, items.c.first_seen_at, items.c.story_id).where(column.in_(urls))
        if before_id is not None:
            query = query.where(items.c.id < before_id)
        rows = conn.execute(query.order_by(desc(items.c.id)).limit(50))
        recent = [r.id for r in rows if r.story_id is not None and r.first_seen_at >= since]
        found.update((i, 0) for i in recent[:MAX_URL_CANDIDATES])
    fp = clean.fingerprint
    if fp is not None and fp.bands:
        n = func.count().label("n")
        band_query = select(dedup_bands.c.item_id, n).where(
            dedup_bands.c.band.in_(list(fp.bands)), dedup_bands.c.first_seen_at >= since
        )
        if before_id is not None:
            band_query = band_query.where(dedup_bands.c.item_id < before_id)
        rows = conn.execute(
            band_query.group_by(dedup_bands.c.item_id)
            .order_by(desc(n), desc(dedup_bands.c.item_id))
            .limit(MAX_BAND_CANDIDATES)
        )
        for r in rows:
            found[r.item_id] = int(r.n)
    if not found:
        return []
    result = [
        _candidate(r, found[r.id], feed_id) for r in conn.execute(_candidate_rows(list(found)))
    ]
    result.sort(key=lambda c: (-c.band_matches, c.item_id))
    return result


def _candidate_rows(ids: Sequence[int]) -> Select[Any]:
    return select(
        items.c.id,
        items.c.story_id,
        items.c.canonical_url,
        items.c.page_canonical_url,
        items.c.title,
        # the text only serves to recompute missing shingles: not read (a few KB per
        # candidate, and a candidate is read for most entries) when they are stored
        case((items.c.shingles.is_(None), items.c.text), else_=None).label("text"),
        items.c.url,
        items.c.first_seen_at,
        items.c.shingles,
        items.c.feed_id,
        items.c.entry_key,
        items.c.dedup_url_refusal,
    ).where(items.c.id.in_(ids), items.c.story_id.is_not(None))


def _candidate(row: Any, band_matches: int, feed_id: int | None = None) -> StoryCandidate:
    return StoryCandidate(
        item_id=row.id,
        story_id=row.story_id,
        canonical_url=row.canonical_url,
        title=row.title,
        text=row.text,
        page_canonical_url=row.page_canonical_url,
        url=row.url,
        first_seen_at=row.first_seen_at,
        band_matches=band_matches,
        shingles=bytes(row.shingles) if row.shingles is not None else None,
        feed_id=row.feed_id,
        entry_key=row.entry_key,
        url_refusal=row.dedup_url_refusal,
        same_feed=feed_id is not None and row.feed_id == feed_id,
    )


def common_anchors(
    conn: Connection, clean: CleanEntry, found: Sequence[StoryCandidate], site: int | None
) -> frozenset[int]:
    """The new item's anchors that its site, or a candidate's site, has as boilerplate."""
    fp = clean.fingerprint
    if fp is None or not fp.anchors or not found:
        return frozenset()
    sites = {site} | {site_key(c.url) for c in found}
    sites.discard(None)
    if not sites:
        return frozenset()
    rows = conn.execute(
        select(dedup_shingles.c.shingle).where(
            dedup_shingles.c.site.in_(list(sites)),
            dedup_shingles.c.shingle.in_(list(fp.anchors)),
            dedup_shingles.c.df >= COMMON_DF,
        )
    )
    return frozenset(int(r.shingle) for r in rows)


def index_item(conn: Connection, item_id: int, clean: CleanEntry, now: datetime) -> None:
    index_items(conn, [(item_id, clean)], now)


def index_items(conn: Connection, indexed: Sequence[tuple[int, CleanEntry]], now: datetime) -> None:
    """The LSH band rows of several new items, in one executemany."""
    stamp = _bind_time(conn, now)
    rows = [
        (b, stamp, item_id)
        for item_id, clean in indexed
        if clean.fingerprint is not None
        for b in sorted(set(clean.fingerprint.bands))
    ]
    if rows:
        mark = _mark(conn)
        conn.exec_driver_sql(
            "INSERT INTO dedup_bands (band, first_seen_at, item_id)"
            f" VALUES ({mark}, {mark}, {mark})",
            rows,
        )


def _mark(conn: Connection) -> str:
    """The driver's placeholder: these executemany statements go to the driver as they
    are (SQLAlchemy's per-row parameter processing cost more than SQLite's inserts)."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _bind_time(conn: Connection, value: datetime) -> Any:
    """A time as the ``UTCDateTime`` columns store it on this database."""
    column_type = dedup_bands.c.first_seen_at.type.dialect_impl(conn.dialect)
    processor = column_type.bind_processor(conn.dialect)
    return processor(value) if processor is not None else value


def count_anchors_many(
    conn: Connection, new_stories: Sequence[tuple[CleanEntry, int | None]], now: datetime
) -> None:
    """Several new stories at once: counts are summed per (site, anchor) first, so one
    statement never touches a row twice."""
    counts: Counter[tuple[int, int]] = Counter()
    for clean, site in new_stories:
        fp = clean.fingerprint
        if fp is None or site is None:
            continue
        for anchor in set(fp.anchors):
            counts[(site, anchor)] += 1
    if not counts:
        return
    stamp = _bind_time(conn, now)
    rows = [(site, anchor, n, stamp) for (site, anchor), n in sorted(counts.items())]
    mark = _mark(conn)
    conn.exec_driver_sql(
        "INSERT INTO dedup_shingles (site, shingle, df, last_seen_at)"
        f" VALUES ({mark}, {mark}, {mark}, {mark}) ON CONFLICT (site, shingle) DO UPDATE"
        " SET df = dedup_shingles.df + excluded.df, last_seen_at = excluded.last_seen_at",
        rows,
    )


def _urls(clean: CleanEntry) -> set[str]:
    return {u for u in (clean.canonical_url, clean.page_canonical_url) if u}


def _bands(clean: CleanEntry) -> set[int]:
    return set(clean.fingerprint.bands) if clean.fingerprint is not None else set()


def _url_candidates(rows: Sequence[Any], since: datetime) -> list[int]:
    """Of the items sharing a URL column value (id, first_seen_at, story_id): the latest
    50 by id, those of the window with a story, at most ``MAX_URL_CANDIDATES``."""
    latest = sorted(rows, key=lambda r: r[0], reverse=True)[:50]
    recent = [r[0] for r in latest if r[2] is not None and r[1] >= since]
    return recent[:MAX_URL_CANDIDATES]


def _band_candidates(counts: Counter[int]) -> list[tuple[int, int]]:
    """(item id, shared bands), most shared bands first, then the latest."""
    ranked = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    return ranked[:MAX_BAND_CANDIDATES]


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
        self._df: dict[tuple[int, int], int] = {}  # (site, anchor) -> stories seen in

    def load(self, conn: Connection, sites: Sequence[int | None]) -> Prefetch:
        by_url: dict[str, list[int]] = {}
        by_band: dict[int, list[int]] = {}
        for index, clean in enumerate(self.entries):
            for url in _urls(clean):
                by_url.setdefault(url, []).append(index)
            for band in _bands(clean):
                by_band.setdefault(band, []).append(index)
        urls = sorted(by_url)
        columns = (items.c.canonical_url, items.c.page_canonical_url) if urls else ()
        for number, column in enumerate(columns):
            for chunk in _chunks(urls):
                rows = conn.execute(
                    select(column, items.c.id, items.c.first_seen_at, items.c.story_id).where(
                        column.in_(chunk)
                    )
                )
                for row in rows:
                    self._url_rows.setdefault((number, row[0]), []).append(tuple(row[1:]))
                    if row.story_id is not None and row.first_seen_at >= self.since:
                        self.hits.update(by_url[row[0]])
        for chunk in _chunks(sorted(by_band)):
            band_rows = conn.execute(
                select(dedup_bands.c.band, dedup_bands.c.item_id).where(
                    dedup_bands.c.band.in_(chunk), dedup_bands.c.first_seen_at >= self.since
                )
            )
            for band, item_id in band_rows:
                self._band_items.setdefault(band, []).append(item_id)
                self.hits.update(by_band[band])
        found = {i: self._found(self.entries[i]) for i in self.hits}
        wanted = sorted({item_id for ids in found.values() for item_id in ids})
        for chunk in _chunks(wanted):
            for row in conn.execute(_candidate_rows(chunk)):
                self._rows[row.id] = _candidate(row, 0)
        # anchor counts of every site of the poll and of its candidates, for every anchor
        # of the poll's entries (the entries of this poll can become candidates too)
        anchor_sites = {site for site in sites if site is not None}
        anchor_sites.update(s for row in self._rows.values() if (s := site_key(row.url)))
        # (only of the entries that will be decided: a hit, or one matching an earlier
        # entry of the poll; the others are new stories for certain)
        earlier = BatchIndex()
        deciders: list[CleanEntry] = []
        for index, clean in enumerate(self.entries):
            if index in self.hits or earlier.matches(clean):
                deciders.append(clean)
            earlier.add(clean)
        anchors = sorted({a for c in deciders if c.fingerprint for a in c.fingerprint.anchors})
        if anchors and anchor_sites:
            site_list = sorted(anchor_sites)
            for chunk in _chunks(anchors):
                for site, shingle, df in conn.execute(
                    select(
                        dedup_shingles.c.site, dedup_shingles.c.shingle, dedup_shingles.c.df
                    ).where(
                        dedup_shingles.c.site.in_(site_list), dedup_shingles.c.shingle.in_(chunk)
                    )
                ):
                    self._df[(int(site), int(shingle))] = int(df)
        return self

    def _found(self, clean: CleanEntry) -> dict[int, int]:
        """Candidate item ids of an entry and their shared bands (0: by URL), as
        ``candidates`` ranks them (before dropping items without a story)."""
        found: dict[int, int] = {}
        urls = _urls(clean)
        for number in (0, 1) if urls else ():
            rows = [r for u in urls for r in self._url_rows.get((number, u), ())]
            found.update((i, 0) for i in _url_candidates(rows, self.since))
        counts: Counter[int] = Counter()
        for band in _bands(clean):
            counts.update(self._band_items.get(band, ()))
        found.update(_band_candidates(counts))
        return found

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
        fp = clean.fingerprint
        if fp is None or not fp.anchors or not found:
            return frozenset()
        sites = {s for s in (site, *(site_key(c.url) for c in found)) if s is not None}
        df = self._df
        return frozenset(
            a for a in fp.anchors if any(df.get((s, a), 0) >= COMMON_DF for s in sites)
        )

    def add(self, item_id: int, story_id: int, clean: CleanEntry, now: datetime) -> None:
        """An item of this poll, now written: a candidate for the entries after it."""
        for number, url in enumerate((clean.canonical_url, clean.page_canonical_url)):
            if url:
                self._url_rows.setdefault((number, url), []).append((item_id, now, story_id))
        for band in _bands(clean):
            self._band_items.setdefault(band, []).append(item_id)
        fp = clean.fingerprint
        self._rows[item_id] = StoryCandidate(
            item_id=item_id,
            story_id=story_id,
            canonical_url=clean.canonical_url,
            title=clean.entry.title,
            text=clean.text if fp is None else None,  # as `_candidate_rows` reads it
            page_canonical_url=clean.page_canonical_url,
            url=clean.entry.link,
            first_seen_at=now,
            shingles=fp.shingles if fp is not None else None,
            feed_id=self.feed_id,
            entry_key=clean.entry.key,
            url_refusal=clean.url_refusal,
        )

    def count(self, clean: CleanEntry, site: int | None) -> None:
        """A new story of this poll: its anchors were seen in one more story of its site
        (what ``count_anchors_many`` writes)."""
        fp = clean.fingerprint
        if fp is None or site is None:
            return
        for anchor in set(fp.anchors):
            self._df[(site, anchor)] = self._df.get((site, anchor), 0) + 1


def _chunks(values: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


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


def refresh_story(conn: Connection, story_id: int) -> None:
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
    full = [r for r in rows if int(r.length) >= FULL_SHARE * longest]
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
    conn: Connection, decision: StoryDecision, item_id: int, now: datetime
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
    refresh_story(conn, survivor.id)
    return int(survivor.id), absorbed


def band_items_to_prune(conn: Connection, before: datetime) -> tuple[int, int] | None:
    """The range of item ids whose band rows may be older than ``before``: from the lowest
    item id in the band index to the highest id of an item first seen before ``before``
    (items are kept for ever: only those still in the band index are looked at)."""
    low = conn.execute(select(func.min(dedup_bands.c.item_id))).scalar_one_or_none()
    if low is None:
        return None
    high = conn.execute(
        select(func.max(items.c.id)).where(items.c.id >= low, items.c.first_seen_at < before)
    ).scalar_one_or_none()
    return None if high is None else (int(low), int(high))


def prune_bands(conn: Connection, first_item: int, last_item: int, before: datetime) -> int:
    """Band rows of the items ``first_item``..``last_item`` first seen before ``before``
    (they can never be candidates again)."""
    removed = conn.execute(
        delete(dedup_bands).where(
            dedup_bands.c.item_id.between(first_item, last_item),
            dedup_bands.c.first_seen_at < before,
        )
    )
    return int(removed.rowcount or 0)


def next_anchor_site(conn: Connection, after: int | None) -> int | None:
    """The next site with anchor counts after ``after`` (the first when None): one
    primary-key seek, so the sites are walked without scanning the counts."""
    query = select(dedup_shingles.c.site).order_by(dedup_shingles.c.site).limit(1)
    if after is not None:
        query = query.where(dedup_shingles.c.site > after)
    site = conn.execute(query).scalar_one_or_none()
    return None if site is None else int(site)


def prune_anchors(conn: Connection, site: int, before: datetime) -> int:
    """A site's anchor counts not refreshed since ``before``."""
    removed = conn.execute(
        delete(dedup_shingles).where(
            dedup_shingles.c.site == site, dedup_shingles.c.last_seen_at < before
        )
    )
    return int(removed.rowcount or 0)


# ---- reporting ------------------------------------------------------------------------


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
