"""Running an export: resolve the filters, query the store, render, write.

One entry point for every caller: ``aggregator export`` (stdout or a file), the
daemon's scheduled exports, and ``GET /export/{format}``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from ..config import Config, ExportModel, parse_duration
from ..records import FeedSpec
from ..store.queries import ExportFilter, Queries
from . import atom, csvdump, digest, jsonfeed, jsonl, opml, rss
from .atomic import write_atomic
from .model import FeedMeta, entries_from_items, entries_from_stories

DIGEST_WINDOW = timedelta(hours=24)
DEFAULT_LINK = "http://localhost/"

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


def parse_when(value: str, now: datetime) -> datetime:
    """``24h``/``7d``/``90m`` (that long before ``now``) or an ISO 8601 date or
    timestamp (UTC when it has no offset)."""
    text = value.strip()
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is neither a duration (e.g. 24h, 7d) nor an ISO 8601 timestamp "
            "(e.g. 2026-06-01 or 2026-06-01T07:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


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
    """Filters from user input (raises ValueError naming the bad value)."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    return ExportFilter(
        since=parse_when(since, now) if since else None,
        until=parse_when(until, now) if until else None,
        feeds=tuple(feeds),
        tags=tuple(tags),
        search=search.strip() if search and search.strip() else None,
        limit=limit,
    )


def with_default_window(request: ExportRequest, now: datetime) -> ExportRequest:
    """The HTML digest covers the last 24 h unless a period is given."""
    f = request.filter
    if request.format != "html" or f.since is not None:
        return request
    end = f.until or now
    return replace(request, filter=replace(f, since=end - DIGEST_WINDOW))


def _title(request: ExportRequest, now: datetime) -> str:
    if request.title:
        return request.title
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
) -> Iterator[str]:
    """The export as text chunks, produced as the rows arrive."""
    fmt = FORMATS.get(request.format)
    if fmt is None:
        raise ValueError(f"unknown format {request.format!r} (one of {', '.join(FORMATS)})")
    request = with_default_window(request, now)
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
    renderer = {
        "atom": atom.render,
        "rss": rss.render,
        "json": jsonfeed.render,
        "html": digest.render,
    }[fmt.name]
    if request.per_item:
        entries = entries_from_items(queries.iter_items(f, newest_first=True))
    else:
        order: Literal["recent", "sources"] = "sources" if fmt.name == "html" else "recent"
        entries = entries_from_stories(queries.iter_stories(f, order=order))
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
    return write_atomic(Path(export.path), stream(queries, request, now=now, feeds=config.feeds))
