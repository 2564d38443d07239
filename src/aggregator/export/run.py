"""Running an export: resolve the filters, query the store, render, write.

One entry point for every caller: ``aggregator export`` (stdout or a file), the
daemon's scheduled exports, and ``GET /export/{format}``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from ..config import Config, ExportModel
from ..records import FeedSpec
from ..store.queries import ExportFilter, Queries
from . import atom, csvdump, digest, jsonfeed, jsonl, opml, rss
from .atomic import write_atomic
from .clean import clean_line
from .model import FeedMeta, entries_from_items, entries_from_stories
from .when import parse_when

DIGEST_WINDOW = timedelta(hours=24)
DEFAULT_LINK = "http://localhost/"
FEED_FORMATS = ("atom", "rss", "json")  # polled by feed readers: a default limit, validators
DEFAULT_FEED_LIMIT = 100  # newest entries in a feed format unless a limit is given
MAX_LIMIT = 2**63 - 1  # the largest limit SQL (a signed 64-bit LIMIT) can take

Kind = Literal["entries", "rows", "feeds"]


@dataclass(frozen=True)
class Format:
    name: str
    media_type: str
    extension: str
    kind: Kind


FORMATS: dict[str, Format] = {
    "atom": Format("atom", atom.MEDIA_TYPE, "atom", "entries"),
    "rss": Format("rss", rss.MEDIA_TYPE, "rss", "entries"),
    "json": Format("json", jsonfeed.MEDIA_TYPE, "json", "entries"),
    "jsonl": Format("jsonl", jsonl.MEDIA_TYPE, "jsonl", "rows"),
    "csv": Format("csv", csvdump.MEDIA_TYPE, "csv", "rows"),
    "html": Format("html", digest.MEDIA_TYPE, "html", "entries"),
    "opml": Format("opml", opml.MEDIA_TYPE, "opml", "feeds"),
}


@dataclass(frozen=True)
class ExportRequest:
    format: str
    filter: ExportFilter = field(default_factory=ExportFilter)
    per_item: bool = False
    title: str | None = None
    link: str | None = None
    feed_url: str | None = None
    tz: tzinfo = UTC


def _no_nul(name: str, values: Sequence[str]) -> None:
    """Text a database can take: no NUL (PostgreSQL refuses it), valid Unicode (a lone
    surrogate, from undecodable bytes in argv, cannot be encoded)."""
    for value in values:
        if "\x00" in value:
            raise ValueError(f"{name} must not contain a NUL character: {value!r}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{name} is not valid UTF-8 text: {value!r}") from None


def build_filter(
    *,
    now: datetime,
    since: str | None = None,
    until: str | None = None,
    feeds: Sequence[str] = (),
    tags: Sequence[str] = (),
    search: str | None = None,
    limit: int | None = None,
) -> ExportFilter:
    """Filters from user input (raises ValueError naming the bad value): every value is
    checked here, before anything is written or sent."""
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {limit}")
    _no_nul("search", [search or ""])
    _no_nul("feed", feeds)
    _no_nul("tag", tags)
    return ExportFilter(
        since=parse_when(since, now) if since else None,
        until=parse_when(until, now) if until else None,
        feeds=tuple(feeds),
        tags=tuple(tags),
        search=search.strip() if search and search.strip() else None,
        limit=limit,
    )


def with_defaults(
    request: ExportRequest, now: datetime, *, feed_limit: int = DEFAULT_FEED_LIMIT
) -> ExportRequest:
    """The HTML digest covers the last 24 h unless a period is given; the feed formats
    (Atom, RSS, JSON Feed) carry the newest ``feed_limit`` entries unless a limit is."""
    f = request.filter
    if request.format == "html" and f.since is None:
        end = f.until or now
        return replace(request, filter=replace(f, since=end - DIGEST_WINDOW))
    if request.format in FEED_FORMATS and f.limit is None:
        return replace(request, filter=replace(f, limit=feed_limit))
    return request


def _title(request: ExportRequest, now: datetime) -> str:
    if clean_line(request.title):
        return clean_line(request.title)
    if request.format == "html":
        day = (request.filter.until or now).astimezone(request.tz)
        return f"Digest · {day.day} {day:%B %Y}"
    if request.format == "opml":
        return "aggregator: feeds"
    return "aggregator: items" if request.per_item else "aggregator: stories"


def stream(
    queries: Queries | None,
    request: ExportRequest,
    *,
    now: datetime,
    feeds: Sequence[FeedSpec] = (),
    feed_limit: int = DEFAULT_FEED_LIMIT,
) -> Iterator[str]:
    """The export as text chunks, produced as the rows arrive."""
    fmt = FORMATS.get(request.format)
    if fmt is None:
        raise ValueError(f"unknown format {request.format!r} (one of {', '.join(FORMATS)})")
    request = with_defaults(request, now, feed_limit=feed_limit)
    f = request.filter
    meta = FeedMeta(
        title=_title(request, now),
        link=request.link or DEFAULT_LINK,
        generated_at=now,
        feed_url=request.feed_url,
        since=f.since,
        until=f.until,
        feeds=tuple(feeds),
        tz=request.tz,
    )
    if fmt.kind == "feeds":
        return opml.render(feeds, meta)
    if queries is None:
        raise ValueError(f"the {fmt.name} export needs a database")
    if fmt.kind == "rows":
        rows = queries.iter_items(f)
        return jsonl.render(rows) if fmt.name == "jsonl" else csvdump.render(rows)
    if request.per_item:
        entries = entries_from_items(queries.iter_items(f, newest_first=True))
    else:
        order: Literal["recent", "sources"] = "sources" if fmt.name == "html" else "recent"
        entries = entries_from_stories(queries.iter_stories(f, order=order))
    if fmt.name == "html":
        counts = functools.partial(queries.summary, f, per_item=request.per_item)
        return digest.render(entries, meta, counts)
    renderer = {"atom": atom.render, "rss": rss.render, "json": jsonfeed.render}[fmt.name]
    return renderer(entries, meta)


def request_for(export: ExportModel, now: datetime) -> ExportRequest:
    """The request a scheduled export (``exports:`` in feeds.yaml) stands for."""
    return ExportRequest(
        format=export.format,
        filter=build_filter(
            now=now,
            since=export.since,
            until=export.until,
            feeds=export.feeds,
            tags=export.tags,
            search=export.search,
            limit=export.limit,
        ),
        per_item=export.per_item,
        title=export.title,
        link=export.link,
        tz=ZoneInfo(export.timezone) if export.timezone else UTC,
    )


def run_scheduled(queries: Queries, config: Config, export: ExportModel, now: datetime) -> int:
    """Write one configured export atomically; returns the bytes written. A relative
    ``path`` is relative to the working directory, like the default database."""
    request = request_for(export, now)
    if request.link is None and config.settings.public_url:
        request = replace(request, link=config.settings.public_url)
    chunks = stream(
        queries,
        request,
        now=now,
        feeds=config.feeds,
        feed_limit=config.settings.feed_export_limit,
    )
    return write_atomic(Path(export.path), chunks)
