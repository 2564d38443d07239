"""Ingest into a database in-process, as `aggregator run --once` does, and read it back."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import create_engine, text

from aggregator.config import load_config
from aggregator.scheduler import RunSummary
from aggregator.scheduler import run_once as run_once_async
from aggregator.store import open_store


def run_once(config_path: Path, db_url: str) -> RunSummary:
    config = load_config(config_path, db_url)
    store = open_store(config.database_url)
    try:
        store.upgrade()
        return asyncio.run(run_once_async(config, store))
    finally:
        store.close()


def rows(db_url: str, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()
