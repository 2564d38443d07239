"""`aggregator prune [--dry-run]`: apply retention now (docs/operations.md, "Retention")."""

from __future__ import annotations

from typing import Annotated

import typer

from ..records import PruneCounts
from .common import (
    ConfigOpt,
    DatabaseOpt,
    app,
    console,
    load_or_exit,
    open_or_exit,
    store_or_exit,
)
from .tables import print_table


@app.command()
def prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print what would be removed; remove nothing")
    ] = False,
    config: ConfigOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """Apply retention now (settings.retention and each feed's own) and print what it
    removed: items deleted, texts dropped, stories left empty, tombstones forgotten."""
    from datetime import UTC, datetime

    from ..ingest.prune import prune_config

    cfg = load_or_exit(config, database)
    store = open_or_exit(cfg, migrate=True)
    with store_or_exit(store):
        report = prune_config(store, cfg.feeds, cfg.retention, datetime.now(UTC), dry_run=dry_run)
    if not cfg.retention and not any(f.retention for f in cfg.feeds):
        console.print("no retention configured (settings.retention, or a feed's retention)")
    rows = [
        (
            feed.url,
            str(feed.counts.items),
            str(feed.counts.stories),
            str(feed.counts.texts),
            str(feed.counts.tombstones_pruned),
            _size(feed.counts.bytes),
        )
        for feed in report.feeds
    ]
    if rows:
        columns = ("url", "items", "stories", "texts", "tombstones", "bytes")
        print_table(
            console, columns, rows, right=columns[1:], title="would remove" if dry_run else None
        )
    console.print(_summary(report.total, dry_run, report.reclaimed_bytes), highlight=False)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _summary(total: PruneCounts, dry_run: bool, reclaimed: int) -> str:
    verb = "would delete" if dry_run else "deleted"
    text = (
        f"{verb} {total.items} items ({total.stories} stories left empty), "
        f"{'would drop' if dry_run else 'dropped'} the text of {total.texts}, "
        f"{'would forget' if dry_run else 'forgot'} {total.tombstones_pruned} tombstones: "
        f"{_size(total.bytes)} of item data"
    )
    if total.kept_in_feed:
        text += f"; {total.kept_in_feed} items due but kept (still in their feed's document)"
    if total.skipped_feeds:
        text += (
            f"; {total.skipped_feeds} feeds not pruned yet (their current document is "
            "recorded by their next poll)"
        )
    if reclaimed:
        text += f"; {_size(reclaimed)} given back to the file system"
    return text + ("  (dry run: nothing removed)" if dry_run else "")
