"""`aggregator events list|retry|purge`: the webhook outbox (docs/push.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import typer

from ..config import parse_duration
from ..store.outbox import EventRow
from .common import (
    ConfigOpt,
    DatabaseOpt,
    app,
    console,
    fail,
    fmt_ts,
    load_or_exit,
    open_or_exit,
    store_or_exit,
)
from .tables import print_table

events_app = typer.Typer(
    help="Events and their webhook deliveries: pending, delivered, dead.",
    no_args_is_help=True,
)
app.add_typer(events_app, name="events")

StateName = Literal["pending", "delivered", "dead", "none"]


def _json(row: EventRow) -> dict[str, object]:
    return {
        "id": row.id,
        "webhook_id": row.event_key,
        "type": row.type,
        "created_at": row.created_at.isoformat(),
        "webhook": row.webhook_url,
        "state": row.state,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at.isoformat() if row.next_attempt_at else None,
        "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
        "last_status": row.last_status,
        "last_error": row.last_error,
        "data": json.loads(row.data),
    }


def _when(row: EventRow) -> str:
    if row.state == "delivered":
        return fmt_ts(row.delivered_at)
    if row.state == "pending":
        return fmt_ts(row.next_attempt_at)
    return ""


@events_app.command("list")
def events_list(
    state: Annotated[
        StateName | None,
        typer.Option(
            "--state", help="only deliveries in this state (none: events no webhook wanted)"
        ),
    ] = None,
    event: Annotated[
        str | None, typer.Option("--event", metavar="ID", help="one event, by id or webhook-id")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many rows")] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON object per line, with the event's data")
    ] = False,
    config: ConfigOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """The latest events, newest first, one row per webhook delivery."""
    cfg = load_or_exit(config, database)
    store = open_or_exit(cfg, migrate=True)
    with store_or_exit(store):
        outbox = store.outbox()
        rows = outbox.list(state=state, limit=limit, event=event)
        counts = outbox.counts()
    if as_json:
        for row in rows:
            print(json.dumps(_json(row), ensure_ascii=False))
        return
    console.print(
        f"deliveries: {counts['pending']} pending, {counts['delivered']} delivered, "
        f"{counts['dead']} dead; {counts['none']} events wanted by no webhook",
        highlight=False,
    )
    columns = ("id", "type", "created", "webhook", "state", "attempts", "due / delivered", "last")
    table = [
        (
            str(row.id),
            row.type,
            fmt_ts(row.created_at),
            row.webhook_url or "",
            row.state or "(no webhook)",
            str(row.attempts),
            _when(row),
            row.last_error or (str(row.last_status) if row.last_status else ""),
        )
        for row in rows
    ]
    print_table(console, columns, table, keep=("webhook",), right=("id", "attempts"))


@events_app.command("retry")
def events_retry(
    event: Annotated[
        str | None,
        typer.Argument(help="an event id or webhook-id (default: every dead or waiting one)"),
    ] = None,
    config: ConfigOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """Make dead and waiting deliveries due now, with a fresh retry window."""
    cfg = load_or_exit(config, database)
    store = open_or_exit(cfg, migrate=True)
    with store_or_exit(store):
        count = store.outbox().retry(datetime.now(UTC), event=event)
    if event is not None and count == 0:
        raise fail(f"no dead or waiting delivery of event {event}")
    console.print(
        f"{count} deliveries due now; the daemon (or the next run --once) sends them",
        highlight=False,
    )


@events_app.command("purge")
def events_purge(
    older_than: Annotated[
        str,
        typer.Option("--older-than", metavar="DURATION", help="only events older than this"),
    ] = "0s",
    pending: Annotated[
        bool, typer.Option("--pending", help="also events with deliveries still pending")
    ] = False,
    config: ConfigOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """Delete finished events (every delivery delivered or dead) and their deliveries."""
    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise fail(f"--older-than: {exc}") from None
    cfg = load_or_exit(config, database)
    store = open_or_exit(cfg, migrate=True)
    with store_or_exit(store):
        before = datetime.now(UTC) - timedelta(seconds=age)
        count = store.outbox().purge(before, pending=pending)
    console.print(f"{count} events deleted", highlight=False)
