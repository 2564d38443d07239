"""`aggregator run`, `check` and `db upgrade`."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..config import DEFAULT_CONFIG, DEFAULT_DATABASE_URL, ENV_DATABASE_URL, Config, load_config
from ..errors import ConfigError, StoreError
from ..logs import setup_logging
from ..records import PollOutcome
from ..scheduler import Daemon, RunSummary, run_once
from ..store import Store, redact_url
from .common import (
    ConfigOpt,
    DatabaseOpt,
    LogLevelOpt,
    app,
    console,
    db_app,
    fail,
    load_or_exit,
    open_or_exit,
    open_url_or_exit,
)


@app.command()
def run(
    once: Annotated[
        bool, typer.Option("--once", help="poll every enabled feed now, then exit")
    ] = False,
    config: ConfigOpt = None,
    database: DatabaseOpt = None,
    log_level: LogLevelOpt = "INFO",
) -> None:
    """Start the daemon (or poll everything once with --once)."""
    cfg = load_or_exit(config, database)
    interactive = sys.stdout.isatty()
    setup_logging("WARNING" if once and interactive else log_level)
    store = open_or_exit(cfg, migrate=True)
    # SQLite: polls are written by a process of its own, beside this one (store.writerproc)
    store.start_writer_process()
    try:
        if once:
            summary = asyncio.run(_run_once(cfg, store, interactive))
            _print_summary(summary)
        else:
            daemon = Daemon(
                cfg,
                store,
                config_path=cfg.path,
                database_override=database,
            )
            asyncio.run(daemon.run())
    except StoreError as exc:
        raise fail(str(exc), 3) from None
    finally:
        store.close()


async def _run_once(cfg: Config, store: Store, interactive: bool) -> RunSummary:
    if not interactive:
        return await run_once(cfg, store)
    with Progress(
        TextColumn("[bold]polling"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("poll", total=0, last="")

        def started(n: int) -> None:
            progress.update(task, total=n)

        def done(outcome: PollOutcome) -> None:
            progress.update(task, advance=1, last=outcome.feed_url[-50:])

        return await run_once(cfg, store, started, done)


def _print_summary(summary: RunSummary) -> None:
    table = Table(title="aggregator run --once", show_header=True)
    table.add_column("feeds polled", justify="right")
    table.add_column("not modified", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("skipped (held/retired)", justify="right")
    table.add_column("new items", justify="right")
    table.add_column("updated items", justify="right")
    table.add_column("new stories", justify="right")
    table.add_column("time", justify="right")
    table.add_row(
        str(summary.polled),
        str(summary.not_modified),
        str(summary.failed),
        str(summary.skipped),
        str(summary.new_items),
        str(summary.updated_items),
        str(summary.new_stories),
        f"{summary.duration:.1f} s",
    )
    out = Console(width=max(console.width, 120)) if not console.is_terminal else console
    out.print(table)
    if summary.failures:
        failures = Table(title="failed feeds", show_header=True)
        failures.add_column("feed")
        failures.add_column("error")
        for url, error in sorted(summary.failures):
            failures.add_row(url, error)
        out.print(failures)


@app.command()
def check(config: ConfigOpt = None, database: DatabaseOpt = None) -> None:
    """Validate the config and print what would be polled."""
    cfg = load_or_exit(config, database)
    s = cfg.settings
    console.print(f"[bold]{cfg.path}[/]: valid, {len(cfg.feeds)} feeds")
    console.print(
        f"database {redact_url(cfg.database_url)} · default interval {s.default_interval:g} s · "
        f"full text {'on' if s.full_text else 'off'} · concurrency {s.concurrency} "
        f"({s.per_host_concurrency} per host, {s.per_host_delay:g} s apart)",
        highlight=False,
    )
    table = Table(show_header=True)
    for column in ("#", "url", "name", "type", "interval", "full text", "enabled", "tags"):
        table.add_column(column)
    for index, feed in enumerate(cfg.feeds, 1):
        table.add_row(
            str(index),
            feed.url,
            feed.name or "",
            feed.type,
            "adaptive" if feed.interval is None else f"{feed.interval:g} s",
            "yes" if feed.full_text else "no",
            "yes" if feed.enabled else "no",
            ", ".join(feed.tags),
        )
    console.print(table)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None, database: DatabaseOpt = None) -> None:
    """Apply the database migrations (safe to run from several workers at once)."""
    try:
        url = load_config(config, database).database_url
    except ConfigError as exc:
        no_url = not (database or os.environ.get(ENV_DATABASE_URL))
        if config is not None or (no_url and Path(DEFAULT_CONFIG).exists()):
            raise fail(str(exc)) from None
        url = database or os.environ.get(ENV_DATABASE_URL) or DEFAULT_DATABASE_URL
    store = open_url_or_exit(url)
    try:
        store.upgrade()
    except StoreError as exc:
        raise fail(str(exc), 3) from None
    finally:
        store.close()
    console.print(
        f"database {store.engine.url.render_as_string(hide_password=True)} is up to date",
        highlight=False,
    )
