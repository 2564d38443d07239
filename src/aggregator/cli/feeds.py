"""`aggregator feeds …`: inspect and manage feeds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from .common import (
    ConfigOpt,
    DatabaseOpt,
    console,
    fail,
    feeds_app,
    fmt_ts,
    load_or_exit,
    open_or_exit,
)


@feeds_app.command("list")
def feeds_list(config: ConfigOpt = None, database: DatabaseOpt = None) -> None:
    """Show every feed's state from the database."""
    cfg = load_or_exit(config, database)
    store = open_or_exit(cfg, migrate=True)
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
        if row.removed:
            state = "removed"
        elif row.disabled_reason:
            state = "retired"
        elif not row.enabled:
            state = "disabled"
        elif row.hold_until and row.hold_until > now:
            state = "held"
        elif row.error_count:
            state = "failing"
        else:
            state = "ok"
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
