"""`aggregator export`: any export format to stdout or (atomically) to a file."""

from __future__ import annotations

import itertools
import os
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from ..config import (
    DEFAULT_CONFIG,
    DEFAULT_DATABASE_URL,
    ENV_CONFIG,
    ENV_DATABASE_URL,
    EXPORT_FORMATS,
    Config,
    Settings,
    load_config,
)
from ..errors import ConfigError, StoreError
from ..store import Store
from ..store.queries import Queries
from .common import ConfigOpt, DatabaseOpt, app, fail, open_read_only_or_exit

MAX_LIMIT = 2**63 - 1  # export.MAX_LIMIT (the formats load for the export command only)

# The read-only commands (export, serve) work without a feeds.yaml (only the database
# is needed) and never migrate the database.


def load_for_reading(config: Path | None, database: str | None) -> Config:
    """The config file when there is one; without one (and none asked for), default
    settings and the database from --database / the environment / the default."""
    explicit = config is not None or os.environ.get(ENV_CONFIG)
    if not explicit and not Path(DEFAULT_CONFIG).exists():
        url = database or os.environ.get(ENV_DATABASE_URL) or DEFAULT_DATABASE_URL
        return Config(path=None, settings=Settings(database_url=url), feeds=())
    try:
        return load_config(config, database)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def open_for_reading(cfg: Config, *, needs_database: bool = True) -> Store | None:
    if not needs_database:
        return None
    return open_read_only_or_exit(cfg.database_url)


@app.command("export")
def export_command(
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-f", help=f"one of: {', '.join(EXPORT_FORMATS)}", show_default=False
        ),
    ],
    since: Annotated[
        str | None,
        typer.Option(help="first seen at or after: a duration back (24h, 7d) or a timestamp"),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="first seen before: a duration back or a timestamp")
    ] = None,
    feed: Annotated[
        list[str] | None, typer.Option("--feed", help="only this feed (name or URL); repeatable")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="only feeds with this tag; repeatable")
    ] = None,
    search: Annotated[
        str | None, typer.Option(help='full-text search: words, "phrases", -excluded')
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_LIMIT,
            help="at most this many entries (atom, rss, json: settings.feed_export_limit, 100)",
        ),
    ] = None,
    per_item: Annotated[
        bool, typer.Option("--per-item", help="one entry per item instead of per story")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="write to this file atomically (default: stdout)"),
    ] = None,
    title: Annotated[str | None, typer.Option(help="the feed or page title")] = None,
    link: Annotated[
        str | None,
        typer.Option(
            help="the site URL the feed points to (default: settings.public_url, else localhost)"
        ),
    ] = None,
    timezone: Annotated[
        str | None, typer.Option(help="time zone of the digest's times (default: UTC)")
    ] = None,
    config: ConfigOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """Export stories (or items) as atom, rss, json, jsonl, csv, html or opml."""
    from .. import export  # the formats (feedgen, lxml, …) load for this command only
    from ..export.clean import safe_url

    name = fmt.strip().lower()
    if name not in export.FORMATS:
        raise fail(f"unknown format {fmt!r} (one of {', '.join(export.FORMATS)})")
    try:
        tz = ZoneInfo(timezone) if timezone else UTC
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long
        raise fail(f"unknown time zone {timezone!r}") from None
    if link is not None and safe_url(link) != link.strip():
        raise fail(f"--link must be an http(s) URL with a host, not {link!r}")
    now = datetime.now(UTC)
    try:
        request = export.ExportRequest(
            format=name,
            filter=export.build_filter(
                now=now,
                since=since,
                until=until,
                feeds=feed or (),
                tags=tag or (),
                search=search,
                limit=limit,
            ),
            per_item=per_item,
            title=title,
            link=link,
            tz=tz,
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    cfg = load_for_reading(config, database)
    if link is None and cfg.settings.public_url:
        request = replace(request, link=cfg.settings.public_url)
    store = open_for_reading(cfg, needs_database=name != "opml")
    try:
        queries = Queries(store) if store is not None else None
        if queries is not None and request.filter.feeds:
            unknown = queries.unknown_feeds(request.filter.feeds)
            if unknown:
                raise fail(f"no feed named {', '.join(map(repr, unknown))} in the database")
        chunks = export.stream(
            queries,
            request,
            now=now,
            feeds=cfg.feeds,
            feed_limit=cfg.settings.feed_export_limit,
        )
        # the head and the first rows before anything is written: a failing query
        # leaves no half document behind on stdout
        chunks = itertools.chain(list(itertools.islice(chunks, 2)), chunks)
        if output is not None:
            export.write_atomic(output, chunks)
        else:
            out = sys.stdout.buffer
            for chunk in chunks:
                out.write(chunk.encode("utf-8"))
            out.flush()
    except StoreError as exc:
        raise fail(f"{exc} (is the database migrated? run `aggregator db upgrade`)", 3) from None
    except BrokenPipeError:
        raise  # stdout's reader went away: the root command ends quietly (cli.root)
    except OSError as exc:
        raise fail(f"cannot write {output or 'stdout'}: {exc}") from None
    finally:
        if store is not None:
            store.close()
