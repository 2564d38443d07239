"""`aggregator run`, `check` and `db upgrade`."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..config import DEFAULT_CONFIG, DEFAULT_DATABASE_URL, ENV_DATABASE_URL, Config, load_config
from ..errors import ConfigError
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
    store_or_exit,
)
from .tables import print_table


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
    with store_or_exit(store):
        if once:
            notices: list[tuple[str, str]] = []
            summary = asyncio.run(_run_once(cfg, store, interactive, notices))
            _print_summary(summary, notices)
        else:
            # SQLite: polls are written by a process of its own (ingest.process)
            daemon = Daemon(
                cfg,
                store,
                config_path=cfg.path,
                database_override=database,
                writer_process=True,
            )
            asyncio.run(daemon.run())


async def _run_once(
    cfg: Config, store: Store, interactive: bool, notices: list[tuple[str, str]]
) -> RunSummary:
    """Poll everything once; ``notices`` gets the feeds that were read but had problems
    ("feed parsed with problems: …"), for the summary."""

    def note(outcome: PollOutcome) -> None:
        if outcome.ok and outcome.error:
            notices.append((outcome.feed_url, outcome.error))

    if not interactive:
        return await run_once(cfg, store, None, note, writer_process=True)
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
            note(outcome)

        return await run_once(cfg, store, started, done, writer_process=True)


def _print_summary(summary: RunSummary, notices: list[tuple[str, str]]) -> None:
    """The summary on standard output (the log lines go to standard error)."""
    counts = (
        ("feeds polled", str(summary.polled)),
        ("not modified", str(summary.not_modified)),
        ("failed", str(summary.failed)),
        ("skipped (held/retired)", str(summary.skipped)),
        ("read with problems", str(len(notices))),
        ("new items", str(summary.new_items)),
        ("updated items", str(summary.updated_items)),
        ("new stories", str(summary.new_stories)),
        ("time", f"{summary.duration:.1f} s"),
    )
    print_table(
        console,
        [name for name, _ in counts],
        [[value for _, value in counts]],
        keep=(),
        right=[name for name, _ in counts],
        title="aggregator run --once",
    )
    if summary.failures:
        print_table(
            console,
            ("feed", "error"),
            sorted(summary.failures),
            keep=("feed",),
            title="failed feeds",
        )
    if notices:
        print_table(
            console,
            ("feed", "problem"),
            sorted(notices),
            keep=("feed",),
            title="feeds read with problems (their entries were stored)",
        )


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
        soft_wrap=True,
    )
    rows = [
        (
            str(index),
            feed.url,
            feed.name or "",
            feed.type,
            "adaptive" if feed.interval is None else f"{feed.interval:g} s",
            "yes" if feed.full_text else "no",
            "yes" if feed.enabled else "no",
            ", ".join(feed.tags),
        )
        for index, feed in enumerate(cfg.feeds, 1)
    ]
    columns = ("#", "url", "name", "type", "interval", "full text", "enabled", "tags")
    print_table(console, columns, rows, right=("#",))


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
    with store_or_exit(store):
        store.upgrade()
    console.print(
        f"database {store.engine.url.render_as_string(hide_password=True)} is up to date",
        highlight=False,
    )
