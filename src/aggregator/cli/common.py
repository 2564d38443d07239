"""Shared pieces of the command line: the Typer apps, common options, helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from ..config import VERSION, Config, load_config
from ..errors import ConfigError, StoreError
from ..store import Store, open_store
from .root import PipeConsole, RootGroup

app = typer.Typer(
    cls=RootGroup,
    help="Feed ingester and aggregator daemon.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
feeds_app = typer.Typer(help="Inspect and manage feeds.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(feeds_app, name="feeds")

console = PipeConsole()
err = PipeConsole(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        print(f"aggregator {VERSION}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Feed ingester and aggregator daemon."""


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="PATH",
        help="feeds.yaml (default: $AGGREGATOR_CONFIG or config/feeds.yaml)",
    ),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database",
        "-d",
        metavar="URL",
        help="database URL (default: $AGGREGATOR_DATABASE_URL, the config, or sqlite:///data/aggregator.db)",
    ),
]
LogLevelOpt = Annotated[
    str, typer.Option("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING, ERROR")
]


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)


def load_or_exit(config: Path | None, database: str | None) -> Config:
    try:
        return load_config(config, database)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def open_or_exit(cfg: Config, *, migrate: bool) -> Store:
    """The database for a command that writes it (exit 3 if it cannot be written);
    ``migrate``: brought to the current schema first."""
    try:
        store = open_store(cfg.database_url, pool_size=max(5, cfg.settings.concurrency // 2))
    except StoreError as exc:
        raise fail(str(exc), 3) from None
    try:
        if migrate:
            store.upgrade_in_child()
        store.check_writable()  # a read-only file or mount: say so now, not at each poll
    except StoreError as exc:
        store.close()
        raise fail(str(exc), 3) from None
    return store


@contextmanager
def store_or_exit(store: Store) -> Iterator[Store]:
    """``store`` for a command's work, closed at the end; a database failure meanwhile
    ends the command with its message (exit 3)."""
    try:
        yield store
    except StoreError as exc:
        raise fail(str(exc), 3) from None
    finally:
        store.close()


def open_url_or_exit(url: str) -> Store:
    try:
        return open_store(url)
    except StoreError as exc:
        raise fail(str(exc), 3) from None


def as_utc(value: datetime) -> datetime:
    """A stored time in UTC (naive times are UTC already)."""
    return value.astimezone(UTC) if value.tzinfo is not None else value


def open_read_only_or_exit(url: str) -> Store:
    """The database for a command that only reads it (serve, export, stories, feeds
    list): it must exist (no empty database is created at a mistyped path) and is opened
    read-only, so a read-only file or mount works (exit 3 if it cannot be read)."""
    try:
        return open_store(url, read_only=True)
    except StoreError as exc:
        raise fail(str(exc), 3) from None


def fmt_ts(value: datetime | None) -> str:
    """A stored time as operators read it: UTC, and marked so."""
    return as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else ""
