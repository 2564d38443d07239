"""`aggregator feeds …`: inspect and manage feeds."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
import yaml

from ..config import DEFAULT_CONFIG, ENV_CONFIG, parse_config
from ..errors import ConfigError, ParseError
from ..records import Subscription, feed_state
from .common import (
    ConfigOpt,
    DatabaseOpt,
    console,
    fail,
    feeds_app,
    fmt_ts,
    load_or_exit,
    open_or_exit,
    open_read_only_or_exit,
)
from .tables import print_table


@feeds_app.command("list")
def feeds_list(config: ConfigOpt = None, database: DatabaseOpt = None) -> None:
    """Show every feed's state from the database."""
    cfg = load_or_exit(config, database)
    store = open_read_only_or_exit(cfg.database_url)
    try:
        rows = store.list_feeds()
        blocked = store.blocked_counts()  # entries dropped by the feed's filters
    finally:
        store.close()
    now = datetime.now(UTC)
    columns = (
        "id",
        "name",
        "url",
        "state",
        "items",
        "last polled",
        "status",
        "errors",
        "next check",
        "last error",
        "blocked",  # last: the columns before it keep their places
    )
    table = [
        (
            str(row.id),
            row.name or "",
            row.url,
            feed_state(now, row),
            str(row.item_count),
            fmt_ts(row.last_polled_at),
            str(row.last_status or ""),
            str(row.error_count),
            fmt_ts(row.next_check_at),
            row.disabled_reason or row.last_error or "",
            str(blocked.get(row.id, 0)),
        )
        for row in rows
    ]
    print_table(console, columns, table, right=("id", "items", "blocked", "errors"))


@feeds_app.command("enable")
def feeds_enable(
    url: Annotated[str, typer.Argument(help="the feed's URL")],
    config: ConfigOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """Re-enable a retired feed (HTTP 410) or clear its error backoff."""
    cfg = load_or_exit(config, database)
    store = open_or_exit(cfg, migrate=True)
    try:
        found = store.enable_feed(url, datetime.now(UTC))
    finally:
        store.close()
    if not found:
        raise fail(f"no feed with URL {url} in the database")
    console.print(f"enabled {url}; it will be polled on the next tick")


def _config_path(config: Path | None) -> Path:
    return Path(config or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _names_in(text: str) -> set[str]:
    """The feed names a feeds.yaml text already uses (none when it does not load)."""
    try:
        data = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return set()
    feeds = data.get("feeds") if isinstance(data, dict) else None
    return {
        entry["name"].strip()
        for entry in (feeds if isinstance(feeds, list) else [])
        if isinstance(entry, dict) and isinstance(entry.get("name"), str)
    }


def _unique_names(
    subscriptions: Sequence[Subscription], new_ones: set[int], taken: set[str]
) -> tuple[list[Subscription], dict[str, str]]:
    """The subscriptions, those to be added (``id`` in ``new_ones``) with titles that are
    not yet feed names: a repeated title gets " (2)", " (3)", … Returns them and, by URL,
    the titles that were changed. ``taken`` grows with the names given."""
    result = []
    renamed: dict[str, str] = {}
    for sub in subscriptions:
        title = sub.title.strip() if sub.title else None
        if title and id(sub) in new_ones:
            name, n = title, 1
            while name in taken:
                n += 1
                name = f"{title} ({n})"
            taken.add(name)
            if name != title:
                renamed[sub.url] = title
                sub = replace(sub, title=name)
        result.append(sub)
    return result, renamed


@feeds_app.command("import")
def feeds_import(
    file: Annotated[Path, typer.Argument(help="an OPML subscription list", exists=True)],
    html_pages: Annotated[
        bool,
        typer.Option(
            "--html-pages", help="also add outlines without a feed URL, as type: html sources"
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="report what would be added; change nothing")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Add an OPML list's subscriptions to feeds.yaml (comments and order are kept)."""
    from ..feedsfile import add_subscriptions  # ruamel.yaml: for this command only
    from ..opml import read_opml  # listparser: for this command only

    path = _config_path(config)
    try:
        subscriptions = read_opml(file.read_bytes())
    except (OSError, ParseError) as exc:
        raise fail(f"{file}: {exc}") from None
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"{path}: cannot read the config file ({exc})") from None
    try:
        # feed names are unique in feeds.yaml: what would be added gets a free name
        wanted = [*subscriptions.feeds, *(subscriptions.pages if html_pages else [])]
        _, trial = add_subscriptions(text, wanted, path=str(path))
        new_ones = {id(sub) for sub in trial.added}
        taken = _names_in(text)
        feeds, renamed = _unique_names(subscriptions.feeds, new_ones, taken)
        pages, renamed_pages = _unique_names(
            subscriptions.pages if html_pages else [], new_ones, taken
        )
        renamed.update(renamed_pages)
        new_text, report = add_subscriptions(text, feeds, path=str(path))
        page_report = None
        if pages:
            new_text, page_report = add_subscriptions(
                new_text, pages, source_type="html", path=str(path)
            )
        parse_config(yaml.safe_load(new_text), path, new_text)  # never write one that fails
    except ConfigError as exc:
        raise fail(str(exc)) from None
    added = report.added + (page_report.added if page_report else [])
    duplicates = report.duplicates + (page_report.duplicates if page_report else [])
    invalid = report.invalid + (page_report.invalid if page_report else [])
    if added and not dry_run:
        _write_atomically(path, new_text)
    verb = "would add" if dry_run else "added"
    console.print(
        f"{verb} {len(added)} of {len(subscriptions.feeds) + len(subscriptions.pages)} "
        f"subscriptions from {file} to {path}",
        highlight=False,
    )
    for sub in added:
        console.print(f"  + {sub.url}" + (f"  ({sub.title})" if sub.title else ""), highlight=False)
        if sub.url in renamed:
            console.print(
                f"    named {sub.title!r}: {renamed[sub.url]!r} is another feed's name",
                highlight=False,
            )
    for sub, existing in duplicates:
        console.print(f"  = {sub.url}  (already there as {existing})", highlight=False)
    for sub, why in invalid:
        console.print(f"  ! {sub.url}  ({why})", highlight=False)
    if subscriptions.pages and not html_pages:
        console.print(
            f"  {len(subscriptions.pages)} outline(s) without a feed URL skipped "
            "(--html-pages adds them as type: html)",
            highlight=False,
        )


@feeds_app.command("export")
def feeds_export(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="PATH", help="write here (default: stdout)"),
    ] = None,
    title: Annotated[
        str, typer.Option(metavar="TEXT", help="the list's title")
    ] = "aggregator subscriptions",
    config: ConfigOpt = None,
) -> None:
    """Write the configured sources as an OPML 2.0 subscription list."""
    from ..opml import write_opml

    cfg = load_or_exit(config, None)
    document = write_opml(cfg.feeds, title=title, now=datetime.now(UTC))
    if output is None:
        sys.stdout.buffer.write(document)
        sys.stdout.flush()
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_bytes(document)
    os.replace(tmp, output)
    console.print(f"wrote {len(cfg.feeds)} sources to {output}", highlight=False)
