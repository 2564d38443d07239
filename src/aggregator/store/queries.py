"""Read-only queries for exports and the HTTP server. Rows never leave: records do.

Every listing streams (``yield_per``: a server-side cursor on PostgreSQL, a stepped
cursor on SQLite), so memory stays flat however many items match. Filters:

- ``since``/``until``: on when the aggregator first saw the item (per item) or the
  story (per story: ``stories.first_seen_at``, the first copy of it);
- ``feeds``: feed names (or URLs), ``tags``: feed tags (a feed matches when it has
  any of them); both given: feeds matching both;
- ``search``: full-text search over titles and text (SQLite FTS5, PostgreSQL
  ``websearch_to_tsquery`` over ``item_search``), created by migrations 0002 and 0017;
- ``limit``: at most that many records.

A story matches the feed/tag/search filters when at least one of its items does;
its source count and sources list are always complete.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    column,
    distinct,
    false,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StoreError
from ..records import feed_state
from .faults import short as _short
from .search import ITEM_SEARCH
from .store import Store
from .tables import feeds, items, stories

BATCH = 500

StoryOrder = Literal["recent", "sources"]


@dataclass(frozen=True)
class ExportFilter:
    since: datetime | None = None
    until: datetime | None = None
    feeds: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    search: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class Cursor:
    """A keyset position in a newest-first listing: (first_seen_at, id)."""

    first_seen_at: datetime
    id: int


@dataclass(frozen=True)
class ExportSummary:
    """What a listing holds: entries (stories or items), items, feeds, the top feeds."""

    entries: int
    items: int
    feeds: int
    top_feeds: tuple[tuple[str, int], ...]  # (feed name, title or URL; entries it carried)


@dataclass(frozen=True)
class ChangeValidator:
    """A digest of what an export would list, and the newest change among it."""

    digest: str
    last_changed: datetime | None


@dataclass(frozen=True)
class ItemRecord:
    id: int
    story_id: int | None
    feed_id: int
    feed_name: str | None
    feed_url: str
    feed_title: str | None
    feed_tags: tuple[str, ...]
    guid: str | None
    url: str | None
    canonical_url: str | None
    title: str | None
    author: str | None
    published_at: datetime | None
    first_seen_at: datetime
    updated_at: datetime
    summary: str | None
    content: str | None
    text: str | None
    language: str | None
    image_url: str | None

    @property
    def feed_label(self) -> str:
        return self.feed_name or self.feed_title or self.feed_url


@dataclass(frozen=True)
class SourceRecord:
    """One copy of a story: which feed carried it, where it links, when it was seen."""

    item_id: int
    feed_id: int
    feed_name: str | None
    feed_url: str
    feed_title: str | None
    feed_tags: tuple[str, ...]
    url: str | None
    title: str | None
    first_seen_at: datetime

    @property
    def feed_label(self) -> str:
        return self.feed_name or self.feed_title or self.feed_url


@dataclass(frozen=True)
class StoryRecord:
    id: int
    title: str | None
    url: str | None
    canonical_url: str | None
    first_seen_at: datetime
    last_seen_at: datetime
    source_count: int  # distinct feeds
    item_count: int
    representative: ItemRecord  # stories.representative_item_id, else the first item
    sources: tuple[SourceRecord, ...]


@dataclass(frozen=True)
class FeedInfo:
    id: int
    url: str
    name: str | None
    title: str | None
    tags: tuple[str, ...]
    type: str
    enabled: bool
    removed: bool
    disabled_reason: str | None
    hold_until: datetime | None
    error_count: int
    last_polled_at: datetime | None
    last_success_at: datetime | None
    not_found_since: datetime | None = None


def fts5_query(search: str) -> str | None:
    """A web-search-like string → an FTS5 query: words and "quoted phrases" must all
    occur, ``-word`` must not. Every token is quoted, so no FTS5 syntax leaks through."""
    include: list[str] = []
    exclude: list[str] = []
    for match in re.finditer(r'(-?)"([^"]*)"|(-?)([^\s"]+)', search):
        negative = bool(match.group(1) or match.group(3))
        raw = match.group(2) if match.group(2) is not None else match.group(4)
        words = re.findall(r"\w+", raw or "")
        if not words:
            continue
        phrase = '"' + " ".join(words).replace('"', '""') + '"'
        (exclude if negative else include).append(phrase)
    if not include:
        return None
    query = " AND ".join(include)
    if exclude:
        query = f"({query}) NOT ({' OR '.join(exclude)})"
    return query


def _tags(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    return ()


_ITEM_COLUMNS = (
    items.c.id,
    items.c.story_id,
    items.c.feed_id,
    items.c.guid,
    items.c.url,
    items.c.canonical_url,
    items.c.title,
    items.c.author,
    items.c.published_at,
    items.c.first_seen_at,
    items.c.updated_at,
    items.c.summary,
    items.c.content,
    items.c.text,
    items.c.language,
    items.c.image_url,
    feeds.c.name.label("feed_name"),
    feeds.c.url.label("feed_url"),
    feeds.c.title.label("feed_title"),
    feeds.c.tags.label("feed_tags"),
)


def _item(row: Any, prefix: str = "") -> ItemRecord:
    m = row._mapping
    return ItemRecord(
        id=m[prefix + "id"],
        story_id=m[prefix + "story_id"],
        feed_id=m[prefix + "feed_id"],
        feed_name=m["feed_name"],
        feed_url=m["feed_url"],
        feed_title=m["feed_title"],
        feed_tags=_tags(m["feed_tags"]),
        guid=m[prefix + "guid"],
        url=m[prefix + "url"],
        canonical_url=m[prefix + "canonical_url"],
        title=m[prefix + "title"],
        author=m[prefix + "author"],
        published_at=m[prefix + "published_at"],
        first_seen_at=m[prefix + "first_seen_at"],
        updated_at=m[prefix + "updated_at"],
        summary=m[prefix + "summary"],
        content=m[prefix + "content"],
        text=m[prefix + "text"],
        language=m[prefix + "language"],
        image_url=m[prefix + "image_url"],
    )


class Queries:
    """Read-only queries over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine
        self.dialect = store.dialect

    # ---- feeds ---------------------------------------------------------------------
    def feeds(self) -> list[FeedInfo]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(feeds).order_by(feeds.c.id)).mappings().all()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read feeds: {_short(exc)}") from None
        return [
            FeedInfo(
                id=r["id"],
                url=r["url"],
                name=r["name"],
                title=r["title"],
                tags=_tags(r["tags"]),
                type=r["type"],
                enabled=bool(r["enabled"]),
                removed=r["removed_at"] is not None,
                disabled_reason=r["disabled_reason"],
                hold_until=r["hold_until"],
                error_count=r["error_count"],
                last_polled_at=r["last_polled_at"],
                last_success_at=r["last_success_at"],
                not_found_since=r["not_found_since"],
            )
            for r in rows
        ]

    def unknown_feeds(self, names: Sequence[str]) -> list[str]:
        """The names (or URLs) in ``names`` that match no feed."""
        known: set[str] = set()
        for feed in self.feeds():
            known.update(v for v in (feed.name, feed.url) if v)
        return [n for n in names if n not in known]

    def _feed_ids(self, f: ExportFilter) -> list[int] | None:
        if not f.feeds and not f.tags:
            return None
        wanted_names = set(f.feeds)
        wanted_tags = set(f.tags)
        ids = []
        for feed in self.feeds():
            if wanted_names and feed.name not in wanted_names and feed.url not in wanted_names:
                continue
            if wanted_tags and not wanted_tags.intersection(feed.tags):
                continue
            ids.append(feed.id)
        return ids

    def last_success_at(self) -> datetime | None:
        """When any configured feed was last polled successfully."""
        try:
            with self.engine.connect() as conn:
                value: datetime | None = conn.execute(
                    select(func.max(feeds.c.last_success_at)).where(feeds.c.removed_at.is_(None))
                ).scalar_one()
        except SQLAlchemyError as exc:
            raise StoreError(f"the database does not answer: {_short(exc)}") from None
        return value  # max() keeps the column type: a tz-aware UTC datetime

    def feed_state_counts(self, now: datetime) -> dict[str, int]:
        """Feeds by state: ok, failing, held, retired, disabled, removed, pending."""
        counts = dict.fromkeys(
            ("ok", "failing", "dormant", "held", "retired", "disabled", "removed", "pending"), 0
        )
        for feed in self.feeds():
            state = feed_state(now, feed)
            counts[state] += 1
        return counts

    # ---- filters -------------------------------------------------------------------
    def _item_conditions(self, f: ExportFilter, *, dates: bool) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = []
        feed_ids = self._feed_ids(f)
        if feed_ids is not None:
            conds.append(items.c.feed_id.in_(feed_ids) if feed_ids else false())
        if dates and f.since is not None:
            conds.append(items.c.first_seen_at >= f.since)
        if dates and f.until is not None:
            conds.append(items.c.first_seen_at < f.until)
        if f.search is not None:
            conds.append(self._search(f.search))
        return conds

    def _search(self, search: str) -> ColumnElement[bool]:
        if self.dialect == "sqlite":
            query = fts5_query(search)
            if query is None:
                return false()
            matches = text("SELECT rowid FROM items_fts WHERE items_fts MATCH :fts").bindparams(
                fts=query
            )
            return items.c.id.in_(matches.columns(column("rowid", Integer)).scalar_subquery())
        if self.dialect == "postgresql":
            tsquery = func.websearch_to_tsquery(literal_column("'simple'"), search)
            found = select(ITEM_SEARCH.c.item_id).where(ITEM_SEARCH.c.vector.op("@@")(tsquery))
            return items.c.id.in_(found.scalar_subquery())
        words = re.findall(r"\w+", search)  # other databases: a plain substring match
        return and_(
            *(or_(items.c.title.contains(w), items.c.text.contains(w)) for w in words or [""])
        )

    # ---- items ---------------------------------------------------------------------
    def _items_query(
        self, f: ExportFilter, *, newest_first: bool, after: Cursor | None
    ) -> Select[Any]:
        query = select(*_ITEM_COLUMNS).select_from(items.join(feeds, feeds.c.id == items.c.feed_id))
        conds = self._item_conditions(f, dates=True)
        if after is not None:
            conds.append(
                or_(
                    items.c.first_seen_at < after.first_seen_at,
                    and_(items.c.first_seen_at == after.first_seen_at, items.c.id < after.id),
                )
            )
        if conds:
            query = query.where(*conds)
        if newest_first:
            query = query.order_by(items.c.first_seen_at.desc(), items.c.id.desc())
        else:
            query = query.order_by(items.c.id)
        if f.limit is not None:
            query = query.limit(f.limit)
        return query

    def iter_items(
        self, f: ExportFilter, *, newest_first: bool = False, after: Cursor | None = None
    ) -> Iterator[ItemRecord]:
        """Items matching ``f``: oldest first by id (dumps), or newest first by first seen."""
        query = self._items_query(f, newest_first=newest_first, after=after)
        try:
            with self.engine.connect() as conn:
                result = conn.execution_options(yield_per=BATCH).execute(query)
                for row in result:
                    yield _item(row)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read items: {_short(exc)}") from None

    # ---- stories -------------------------------------------------------------------
    def _story_conditions(self, f: ExportFilter, after: Cursor | None) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = []
        if f.since is not None:
            conds.append(stories.c.first_seen_at >= f.since)
        if f.until is not None:
            conds.append(stories.c.first_seen_at < f.until)
        item_conds = self._item_conditions(f, dates=False)
        if item_conds:
            conds.append(
                stories.c.id.in_(
                    select(items.c.story_id).where(items.c.story_id.is_not(None), *item_conds)
                )
            )
        if after is not None:
            conds.append(
                or_(
                    stories.c.first_seen_at < after.first_seen_at,
                    and_(stories.c.first_seen_at == after.first_seen_at, stories.c.id < after.id),
                )
            )
        return conds

    @staticmethod
    def _representative(rep: Any) -> ColumnElement[bool]:
        """Join condition: ``rep`` is the story's representative (chosen by deduplication,
        migration 0003), else its first item."""
        inner = items.alias("i1")
        first_item = (
            select(func.min(inner.c.id)).where(inner.c.story_id == stories.c.id).scalar_subquery()
        )
        condition: ColumnElement[bool] = rep.c.id == func.coalesce(
            stories.c.representative_item_id, first_item
        )
        return condition

    def _stories_query(
        self, f: ExportFilter, *, order: StoryOrder, after: Cursor | None
    ) -> Select[Any]:
        inner = items.alias("i2")
        source_count = (
            select(func.count(distinct(inner.c.feed_id)))
            .where(inner.c.story_id == stories.c.id)
            .scalar_subquery()
            .label("source_count")
        )
        item_count = (
            select(func.count())
            .where(inner.c.story_id == stories.c.id)
            .scalar_subquery()
            .label("item_count")
        )
        rep = items.alias("rep")
        columns = [
            stories.c.id.label("s_id"),
            stories.c.title.label("s_title"),
            stories.c.url.label("s_url"),
            stories.c.canonical_url.label("s_canonical_url"),
            stories.c.first_seen_at.label("s_first_seen_at"),
            stories.c.last_seen_at.label("s_last_seen_at"),
            source_count,
            item_count,
            *(c.label("r_" + c.name) for c in rep.c if c.name in _REP_NAMES),
            feeds.c.name.label("feed_name"),
            feeds.c.url.label("feed_url"),
            feeds.c.title.label("feed_title"),
            feeds.c.tags.label("feed_tags"),
        ]
        query = select(*columns).select_from(
            stories.join(rep, self._representative(rep)).join(feeds, feeds.c.id == rep.c.feed_id)
        )
        conds = self._story_conditions(f, after)
        if conds:
            query = query.where(*conds)
        if order == "sources":
            query = query.order_by(
                source_count.desc(), stories.c.first_seen_at.desc(), stories.c.id.desc()
            )
        else:
            query = query.order_by(stories.c.first_seen_at.desc(), stories.c.id.desc())
        if f.limit is not None:
            query = query.limit(f.limit)
        return query

    def iter_stories(
        self, f: ExportFilter, *, order: StoryOrder = "recent", after: Cursor | None = None
    ) -> Iterator[StoryRecord]:
        """Stories matching ``f`` with their sources: newest first, or (``sources``) by
        how many feeds carried them, then newest first."""
        query = self._stories_query(f, order=order, after=after)
        try:
            with self.engine.connect() as conn:
                result = conn.execution_options(yield_per=BATCH).execute(query)
                for batch in result.partitions(BATCH):
                    sources = self._sources(conn, [row.s_id for row in batch])
                    for row in batch:
                        yield StoryRecord(
                            id=row.s_id,
                            title=row.s_title,
                            url=row.s_url,
                            canonical_url=row.s_canonical_url,
                            first_seen_at=row.s_first_seen_at,
                            last_seen_at=row.s_last_seen_at,
                            source_count=int(row.source_count),
                            item_count=int(row.item_count),
                            representative=_item(row, "r_"),
                            sources=tuple(sources.get(row.s_id, ())),
                        )
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read stories: {_short(exc)}") from None

    # ---- the digest's summary ---------------------------------------------------------
    def summary(
        self, f: ExportFilter, *, per_item: bool, order: StoryOrder = "sources", top: int = 5
    ) -> ExportSummary:
        """Counts over what a listing of ``f`` shows (its limit included): entries,
        items, feeds, and the ``top`` feeds that carried the most entries."""
        if per_item:
            listed = self._items_query(f, newest_first=True, after=None)
            ids = listed.with_only_columns(items.c.id).subquery()
            key = items.c.id
        else:
            listed = self._stories_query(f, order=order, after=None)
            ids = listed.with_only_columns(stories.c.id).subquery()
            key = items.c.story_id
        members = key.in_(select(ids.c.id))
        label = func.coalesce(feeds.c.name, feeds.c.title, feeds.c.url)
        carried = func.count(distinct(key))
        try:
            with self.engine.connect() as conn:
                entries = conn.execute(select(func.count()).select_from(ids)).scalar_one()
                item_count, feed_count = conn.execute(
                    select(func.count(), func.count(distinct(items.c.feed_id))).where(members)
                ).one()
                by_feed = conn.execute(
                    select(label, carried)
                    .select_from(items.join(feeds, feeds.c.id == items.c.feed_id))
                    .where(members)
                    .group_by(feeds.c.id, label)
                    .order_by(carried.desc(), label)
                    .limit(top)
                ).all()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read stories: {_short(exc)}") from None
        return ExportSummary(
            entries=int(entries),
            items=int(item_count),
            feeds=int(feed_count),
            top_feeds=tuple((str(name), int(count)) for name, count in by_feed),
        )

    # ---- change validators (ETag / Last-Modified) ------------------------------------
    def change_validator(self, f: ExportFilter, *, per_item: bool) -> ChangeValidator:
        """What an export of ``f`` (newest first) would show, reduced to a digest: the
        stories (or items) it would list with their change times, and the feeds' names.
        Reads ids and times only (no text), so a feed reader's poll that ends in a 304
        costs one light query."""
        digest = hashlib.sha256()
        newest: datetime | None = None
        if per_item:
            query = select(items.c.id, items.c.updated_at).select_from(items)
            conds = self._item_conditions(f, dates=True)
            order = (items.c.first_seen_at.desc(), items.c.id.desc())
        else:
            changed = (
                select(func.max(items.c.updated_at))
                .where(items.c.story_id == stories.c.id)
                .scalar_subquery()
            )
            rep = items.alias("rep")
            query = select(
                stories.c.id, stories.c.last_seen_at, stories.c.item_count, changed.label("c")
            ).select_from(stories.join(rep, self._representative(rep)))
            conds = self._story_conditions(f, None)
            order = (stories.c.first_seen_at.desc(), stories.c.id.desc())
        query = query.where(*conds).order_by(*order)
        if f.limit is not None:
            query = query.limit(f.limit)
        try:
            with self.engine.connect() as conn:
                for row in conn.execution_options(yield_per=BATCH).execute(query):
                    digest.update(repr(tuple(row)).encode())
                    for value in row[1:]:
                        if isinstance(value, datetime) and (newest is None or value > newest):
                            newest = value
                labels = conn.execute(
                    select(
                        feeds.c.id, feeds.c.name, feeds.c.title, feeds.c.url, feeds.c.tags
                    ).order_by(feeds.c.id)
                )
                for label in labels:
                    digest.update(repr(tuple(label)).encode())
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read stories: {_short(exc)}") from None
        return ChangeValidator(digest.hexdigest()[:32], newest)

    def _sources(self, conn: Any, story_ids: list[int]) -> dict[int, list[SourceRecord]]:
        found: dict[int, list[SourceRecord]] = {}
        if not story_ids:
            return found
        query = (
            select(
                items.c.id,
                items.c.story_id,
                items.c.feed_id,
                items.c.url,
                items.c.title,
                items.c.first_seen_at,
                feeds.c.name,
                feeds.c.url.label("feed_url"),
                feeds.c.title.label("feed_title"),
                feeds.c.tags,
            )
            .select_from(items.join(feeds, feeds.c.id == items.c.feed_id))
            .where(items.c.story_id.in_(story_ids))
            .order_by(items.c.story_id, items.c.first_seen_at, items.c.id)
        )
        for r in conn.execute(query):
            found.setdefault(r.story_id, []).append(
                SourceRecord(
                    item_id=r.id,
                    feed_id=r.feed_id,
                    feed_name=r.name,
                    feed_url=r.feed_url,
                    feed_title=r.feed_title,
                    feed_tags=_tags(r.tags),
                    url=r.url,
                    title=r.title,
                    first_seen_at=r.first_seen_at,
                )
            )
        return found


_REP_NAMES = {
    "id",
    "story_id",
    "feed_id",
    "guid",
    "url",
    "canonical_url",
    "title",
    "author",
    "published_at",
    "first_seen_at",
    "updated_at",
    "summary",
    "content",
    "text",
    "language",
    "image_url",
}
