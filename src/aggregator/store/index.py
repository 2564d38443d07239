"""The story-dedup index, SQL only (the rules that use it are in ``dedup``, the save
loop that reads and writes it in ``ingest``).

- ``dedup_bands`` holds each item's MinHash LSH band keys with the item's
  ``first_seen_at``: candidates are one primary-key range per band, limited to the dedup
  window (measured on when the aggregator first saw an item, not on feed dates).
- ``dedup_shingles`` counts, per site, in how many stories each sampled anchor shingle
  appeared; the caller decides from how many on an anchor is boilerplate.
- PostgreSQL, several workers: ``lock`` takes a row lock per key (``dedup_key_locks``,
  migration 0018) on every band key, site and canonical URL of a poll's new items, in
  sorted order (no deadlock between two polls), so a worker ingesting a copy waits for
  the one ingesting the original and then sees its rows, and polls with no key in common
  never wait. SQLite needs nothing: ``BEGIN IMMEDIATE`` serializes writers.
- ``IndexMixin.prune_dedup`` keeps the index the size of the window (and drops the key
  rows nobody holds).

Every limit (how many candidates, from how many stories an anchor is common) is an
argument: the values are ``dedup``'s.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, case, delete, desc, func, select, text

from ..records import CleanEntry, StoryCandidate
from .batches import chunks
from .database import Database
from .tables import dedup_bands, dedup_shingles, items

URL_COLUMNS = (items.c.canonical_url, items.c.page_canonical_url)
URL_ROWS = 50  # items looked at per URL (the latest), before the window is applied


# One poll's keys, each locked as its own row of ``dedup_key_locks``, in ascending order:
# a missing key is inserted (a second poll inserting it waits for this one's end), a present
# one is locked without being written (ON CONFLICT locks the row even when WHERE is false).
LOCK_KEYS = text(
    "INSERT INTO dedup_key_locks (key)"
    " SELECT k FROM ("
    "  SELECT unnest(CAST(:keys AS bigint[])) AS k"
    "  UNION SELECT hashtextextended(u, 0) FROM unnest(CAST(:urls AS text[])) AS u"
    " ) keys ORDER BY k"
    " ON CONFLICT (key) DO UPDATE SET key = excluded.key WHERE false"
)
UNLOCKED_KEYS = 5000  # key rows deleted per transaction by ``prune_key_locks``


def lock(conn: Connection, bands: Iterable[int], sites: Iterable[int], urls: Iterable[str]) -> None:
    """PostgreSQL: lock a poll's band keys, sites and canonical URLs (``hashtextextended``),
    in one statement, in ascending order, one row lock per key (``LOCK_KEYS``). The sites
    too: two polls of one site upsert the same anchor-count rows, in orders that could
    deadlock; with the site locked they take turns. Row locks, not advisory locks: a large
    poll takes thousands, and advisory locks fill PostgreSQL's shared lock table ("out of
    shared memory"; see migrations 0015 and 0018)."""
    if conn.dialect.name != "postgresql":
        return
    keys = sorted(set(bands) | set(sites))
    url_list = sorted(set(urls))
    if not keys and not url_list:
        return
    conn.execute(LOCK_KEYS, {"keys": keys, "urls": url_list})


def prune_key_locks(conn: Connection, limit: int = UNLOCKED_KEYS) -> int:
    """PostgreSQL: delete up to ``limit`` key rows that no poll holds now (a later poll
    makes them again); how many were deleted."""
    if conn.dialect.name != "postgresql":
        return 0
    done = conn.execute(
        text(
            "DELETE FROM dedup_key_locks WHERE key IN ("
            " SELECT key FROM dedup_key_locks LIMIT :n FOR UPDATE SKIP LOCKED)"
        ),
        {"n": limit},
    )
    return int(done.rowcount or 0)


def candidates(
    conn: Connection,
    clean: CleanEntry,
    since: datetime,
    feed_id: int | None = None,
    *,
    url_limit: int,
    band_limit: int,
    before_id: int | None = None,
) -> list[StoryCandidate]:
    """Items first seen since ``since`` that share a canonical URL (the latest
    ``url_limit`` per URL column) or an LSH band (the ``band_limit`` sharing the most
    bands) with ``clean``; ``same_feed`` set on those of ``feed_id``, the feed of the entry
    being decided; ``before_id``: only items stored before that one (``stories
    rebuild``)."""
    found: dict[int, int] = {}
    urls = [u for u in {clean.canonical_url, clean.page_canonical_url} if u]
    for column in URL_COLUMNS if urls else ():
        # one lookup per column on its index (with an OR of the two, or a condition on
        # first_seen_at, SQLite may prefer scanning); the window is applied here
        query = select(items.c.id, items.c.first_seen_at, items.c.story_id).where(column.in_(urls))
        if before_id is not None:
            query = query.where(items.c.id < before_id)
        rows = conn.execute(query.order_by(desc(items.c.id)).limit(URL_ROWS))
        recent = [r.id for r in rows if r.story_id is not None and r.first_seen_at >= since]
        found.update((i, 0) for i in recent[:url_limit])
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
            .limit(band_limit)
        )
        for r in rows:
            found[r.item_id] = int(r.n)
    if not found:
        return []
    rows_by_id = candidate_rows(conn, list(found), feed_id)
    result = [_with_bands(row, found[item_id]) for item_id, row in rows_by_id.items()]
    result.sort(key=lambda c: (-c.band_matches, c.item_id))
    return result


def _with_bands(row: StoryCandidate, band_matches: int) -> StoryCandidate:
    return replace(row, band_matches=band_matches)


def candidate_rows(
    conn: Connection, ids: Sequence[int], feed_id: int | None = None
) -> dict[int, StoryCandidate]:
    """The items ``ids`` that belong to a story, as candidates (no shared bands yet)."""
    found: dict[int, StoryCandidate] = {}
    for chunk in chunks(sorted(ids)):
        for row in conn.execute(_candidate_rows(chunk)):
            found[row.id] = _candidate(row, feed_id)
    return found


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


def _candidate(row: Any, feed_id: int | None = None) -> StoryCandidate:
    return StoryCandidate(
        item_id=row.id,
        story_id=row.story_id,
        canonical_url=row.canonical_url,
        title=row.title,
        text=row.text,
        page_canonical_url=row.page_canonical_url,
        url=row.url,
        first_seen_at=row.first_seen_at,
        shingles=bytes(row.shingles) if row.shingles is not None else None,
        feed_id=row.feed_id,
        entry_key=row.entry_key,
        url_refusal=row.dedup_url_refusal,
        same_feed=feed_id is not None and row.feed_id == feed_id,
    )


def url_rows(
    conn: Connection, urls: Sequence[str]
) -> dict[tuple[int, str], list[tuple[int, datetime, int | None]]]:
    """Items sharing each URL, per URL column (0: canonical, 1: the page's canonical):
    ``(column, url) -> [(item id, first seen, story id)]``."""
    found: dict[tuple[int, str], list[tuple[int, datetime, int | None]]] = {}
    for number, column in enumerate(URL_COLUMNS if urls else ()):
        for chunk in chunks(urls):
            rows = conn.execute(
                select(column, items.c.id, items.c.first_seen_at, items.c.story_id).where(
                    column.in_(chunk)
                )
            )
            for url, item_id, first_seen_at, story_id in rows:
                found.setdefault((number, url), []).append((item_id, first_seen_at, story_id))
    return found


def band_items(conn: Connection, bands: Sequence[int], since: datetime) -> dict[int, list[int]]:
    """Items first seen since ``since`` under each band key."""
    found: dict[int, list[int]] = {}
    stamp = bind_time(conn, since)
    mark = placeholder(conn)
    for chunk in chunks(bands):
        keys = padded(chunk)
        rows = conn.exec_driver_sql(
            "SELECT band, item_id FROM dedup_bands"
            f" WHERE band IN ({marks(mark, len(keys))}) AND first_seen_at >= {mark}",
            (*keys, stamp),
        )
        for band, item_id in rows:
            found.setdefault(int(band), []).append(int(item_id))
    return found


def anchor_counts(
    conn: Connection, pairs: Sequence[tuple[int, int]], min_df: int = 1
) -> dict[tuple[int, int], int]:
    """In how many stories of its site each ``(site, anchor)`` appeared, for the pairs
    seen in at least ``min_df`` (the others are left out): per site, one query over its
    anchors (a primary-key probe each; a row-value ``IN`` of the pairs made SQLite scan).
    Driver SQL: SQLAlchemy's expansion of a 500-value ``IN`` cost more than the probes."""
    by_site: dict[int, list[int]] = {}
    for site, anchor in pairs:
        by_site.setdefault(site, []).append(anchor)
    counts: dict[tuple[int, int], int] = {}
    mark = placeholder(conn)
    for site, anchors in sorted(by_site.items()):
        for chunk in chunks(sorted(set(anchors))):
            keys = padded(chunk)
            rows = conn.exec_driver_sql(
                f"SELECT shingle, df FROM dedup_shingles WHERE site = {mark}"
                f" AND shingle IN ({marks(mark, len(keys))}) AND df >= {mark}",
                (site, *keys, min_df),
            )
            for shingle, df in rows:
                counts[(site, int(shingle))] = int(df)
    return counts


def padded(keys: Sequence[int]) -> Sequence[int]:
    """``keys`` (at least one) repeated at the end up to the next of a few sizes, so an
    ``IN`` list takes one of a few statement texts: the driver's statement cache (SQLite
    keeps 128) then parses each once. Repeats change nothing in an ``IN``."""
    size = next((n for n in _IN_SIZES if n >= len(keys)), len(keys))
    return keys if size == len(keys) else [*keys, *([keys[-1]] * (size - len(keys)))]


_IN_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 500)


def marks(mark: str, count: int) -> str:
    """An ``IN`` list of ``count`` placeholders."""
    return ", ".join([mark] * count)


def common_anchors(
    conn: Connection, anchors: Sequence[int], sites: Sequence[int], min_df: int
) -> frozenset[int]:
    """Of ``anchors``, those seen in at least ``min_df`` stories of one of ``sites``."""
    if not anchors or not sites:
        return frozenset()
    rows = conn.execute(
        select(dedup_shingles.c.shingle).where(
            dedup_shingles.c.site.in_(list(sites)),
            dedup_shingles.c.shingle.in_(list(anchors)),
            dedup_shingles.c.df >= min_df,
        )
    )
    return frozenset(int(r.shingle) for r in rows)


def last_item_id(conn: Connection) -> int:
    """The highest item id (0: none): a read snapshot's mark (``ingest.plan``)."""
    return int(conn.execute(select(func.max(items.c.id))).scalar_one_or_none() or 0)


def data_version(conn: Connection) -> tuple[int, int]:
    """SQLite: ``(connection, PRAGMA data_version)``; the version changes when another
    connection commits, so a writer learns that someone else wrote (``ingest.plan``)."""
    driver = conn.connection.dbapi_connection
    version = conn.exec_driver_sql("PRAGMA data_version").scalar_one()
    return id(driver), int(version)


def index_items(conn: Connection, indexed: Sequence[tuple[int, CleanEntry]], now: datetime) -> None:
    """The LSH band rows of several new items, in one executemany."""
    stamp = bind_time(conn, now)
    rows = [
        (b, stamp, item_id)
        for item_id, clean in indexed
        if clean.fingerprint is not None
        for b in sorted(set(clean.fingerprint.bands))
    ]
    if rows:
        mark = placeholder(conn)
        conn.exec_driver_sql(
            "INSERT INTO dedup_bands (band, first_seen_at, item_id)"
            f" VALUES ({mark}, {mark}, {mark})",
            rows,
        )


def count_anchors(conn: Connection, counts: Counter[tuple[int, int]], now: datetime) -> None:
    """Add ``counts`` (new stories per (site, anchor)) to the anchor counts; one statement
    never touches a row twice (the caller sums per pair)."""
    if not counts:
        return
    stamp = bind_time(conn, now)
    rows = [(site, anchor, n, stamp) for (site, anchor), n in sorted(counts.items())]
    mark = placeholder(conn)
    conn.exec_driver_sql(
        "INSERT INTO dedup_shingles (site, shingle, df, last_seen_at)"
        f" VALUES ({mark}, {mark}, {mark}, {mark}) ON CONFLICT (site, shingle) DO UPDATE"
        " SET df = dedup_shingles.df + excluded.df, last_seen_at = excluded.last_seen_at",
        rows,
    )


def placeholder(conn: Connection) -> str:
    """The driver's placeholder: executemany statements that go to the driver as they
    are (SQLAlchemy's per-row parameter processing cost more than SQLite's inserts)."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def bind_time(conn: Connection, value: datetime) -> Any:
    """A time as the ``UTCDateTime`` columns store it on this database."""
    column_type = dedup_bands.c.first_seen_at.type.dialect_impl(conn.dialect)
    processor = column_type.bind_processor(conn.dialect)
    return processor(value) if processor is not None else value


# ---- pruning ---------------------------------------------------------------------------


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


class IndexMixin(Database):
    def prune_dedup(self, before: datetime, *, batch: int = 1000) -> int:
        """Drop dedup index rows older than ``before`` (now - dedup_window): band rows
        of items first seen before it, anchor counts not refreshed since. In short
        transactions (``batch`` items' band rows, or one site's counts, each), so the
        writers of new polls wait for one of them at most; returns the rows removed."""
        removed = 0
        with self.read() as conn:
            span = band_items_to_prune(conn, before)
        if span is not None:
            for first in range(span[0], span[1] + 1, batch):
                last = min(first + batch - 1, span[1])
                with self.locked_tx() as conn:
                    removed += prune_bands(conn, first, last, before)
        site: int | None = None
        while True:
            with self.read() as conn:
                site = next_anchor_site(conn, site)
            if site is None:
                break
            with self.locked_tx() as conn:
                removed += prune_anchors(conn, site, before)
        if self.dialect == "postgresql":  # the key rows of the locks (not counted: no index)
            while True:
                with self.tx() as conn:
                    if prune_key_locks(conn) < UNLOCKED_KEYS:
                        break
        return removed
