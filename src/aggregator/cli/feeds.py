"""`aggregator feeds …`: inspect and manage feeds."""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from ..config import DEFAULT_CONFIG, ENV_CONFIG, parse_config
from ..errors import ConfigError, ParseError
from ..records import feed_state
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


@feeds_app.command("list")
def feeds_list(config: ConfigOpt = None, database: DatabaseOpt = None) -> None:
    """Show every feed's state from the database."""
    cfg = load_or_exit(config, database)
    store = open_read_only_or_exit(cfg.database_url)
    try:
        rows = store.list_feeds()
    finally:
        store.close()
    table = Table(show_header=True)
    for column in (
        "id",
        "url",
        "state",
        "items",
        "last polled",
        "status",
        "errors",
        "next check",
        "last error",
    ):
        table.add_column(column, overflow="fold")
    now = datetime.now(UTC)
    for row in rows:
        state = feed_state(now, row)
        table.add_row(
            str(row.id),
            row.url,
            state,
            str(row.item_count),
            fmt_ts(row.last_polled_at),
            str(row.last_status or ""),
            str(row.error_count),
            fmt_ts(row.next_check_at),
            row.disabled_reason or row.last_error or "",
        )
    console.print(table)


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
        new_text, report = add_subscriptions(text, subscriptions.feeds, path=str(path))
        page_report = None
        if html_pages and subscriptions.pages:
            new_text, page_report = add_subscriptions(
                new_text, subscriptions.pages, source_type="html", path=str(path)
            )
        parse_config(yaml.safe_load(new_text), path)  # never write a file that does not load
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
        Path | None, typer.Option("--output", "-o", help="write here (default: stdout)")
    ] = None,
    title: Annotated[str, typer.Option(help="the list's title")] = "aggregator subscriptions",
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
