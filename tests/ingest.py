"""Ingest into a database in-process, as `aggregator run --once` does, and read it back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
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


def aggregator(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a child process, without the caller's AGGREGATOR_*
    environment, wide enough that tables are not folded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
