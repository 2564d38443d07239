"""Retention's operator surface: ``aggregator prune [--dry-run]``,
the daemon's retention job and its ``/metrics`` counters, SQLite space given back
(``auto_vacuum=INCREMENTAL``, an older file converted once)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from click.testing import Result
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from aggregator.cli import app
from aggregator.config import load_config
from aggregator.metrics import Metrics
from aggregator.scheduler import Daemon
from aggregator.store import open_store
from builders import paragraph, rss
from conftest import write_config
from httpserver import FixtureServer
from ingest import rows, run_once


def _ingest(server: FixtureServer, tmp_path: Path, db_url: str) -> Path:
    """One feed of 6 entries, stored; then its document is taken to hold only g-5 and
    every item to be a year old: 5 items are due."""
    items = [
        {
            "title": f"g story {n}",
            "link": f"https://g.example/{n}",
            "guid": f"urn:test:g-{n}",
            "description": paragraph(500 + n, 400),
        }
        for n in range(6)
    ]
    cfg = write_config(
        tmp_path / "feeds.yaml",
        [{"url": server.add("/g.xml", rss("g", items))}],
        full_text=False,
        database_url=db_url,
        retention={"max_age": "30d"},
    )
    assert run_once(cfg, db_url).new_items == 6
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE feed_documents SET entry_keys = :k"),
                {"k": json.dumps(["guid:urn:test:g-5"])},
            )
            conn.execute(text("UPDATE items SET first_seen_at = '2020-01-01 00:00:00'"))
    finally:
        engine.dispose()
    return cfg


def aggregator(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_prune_dry_run_removes_nothing_and_prune_does(
    server: FixtureServer, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    cfg = _ingest(server, tmp_path, db_url)
    dry = aggregator("prune", "--dry-run", "--config", str(cfg))
    assert dry.exit_code == 0, dry.output
    assert "would delete 5 items (5 stories left empty)" in dry.stdout
    assert "1 items due but kept" in dry.stdout
    assert "dry run" in dry.stdout
    assert rows(db_url, "SELECT COUNT(*) FROM items") == [(6,)]
    done = aggregator("prune", "--config", str(cfg))
    assert done.exit_code == 0, done.output
    assert "deleted 5 items (5 stories left empty)" in done.stdout
    assert server.url("/g.xml") in done.stdout  # the feed's line
    assert rows(db_url, "SELECT COUNT(*) FROM items") == [(1,)]
    assert rows(db_url, "SELECT COUNT(*) FROM stories") == [(1,)]
    assert rows(db_url, "SELECT COUNT(*) FROM item_tombstones") == [(5,)]
    assert rows(db_url, "PRAGMA freelist_count") == [(0,)]  # the space went back
    # a config error exits 2; a database that cannot be used exits 3
    bad = write_config(tmp_path / "bad.yaml", [], retention={"max_age": "forever"})
    assert aggregator("prune", "--config", str(bad)).exit_code == 2
    (tmp_path / "not-a-db").mkdir()
    unusable = aggregator(
        "prune", "--config", str(cfg), "--database", f"sqlite:///{tmp_path / 'not-a-db'}"
    )
    assert unusable.exit_code == 3


def test_the_daemon_applies_retention_and_counts_it_in_metrics(
    server: FixtureServer, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'daemon.db'}"
    cfg = _ingest(server, tmp_path, db_url)
    config = load_config(cfg)
    store = open_store(config.database_url)
    metrics = Metrics()
    try:
        daemon = Daemon(config, store, config_path=cfg, database_override=None, metrics=metrics)
        report = asyncio.run(daemon.apply_retention())
    finally:
        store.close()
    assert report is not None and report.total.items == 5
    from prometheus_client import generate_latest

    scraped = {
        (s.name, s.labels.get("kind", "")): s.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in family.samples
    }
    assert scraped[("aggregator_retention_rows_deleted_total", "items")] == 5
    assert scraped[("aggregator_retention_rows_deleted_total", "stories")] == 5
    assert scraped[("aggregator_retention_rows_deleted_total", "texts")] == 0
    assert scraped[("aggregator_retention_bytes_deleted_total", "")] > 5 * 2000


def test_an_older_sqlite_file_is_converted_to_incremental_auto_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # as files were made before migration 0016
        conn.execute("CREATE TABLE filler (x BLOB)")
        conn.execute("INSERT INTO filler VALUES (zeroblob(2000000))")
        conn.execute("DROP TABLE filler")
    store = open_store(f"sqlite:///{path}")
    try:
        store.upgrade()
        assert store.auto_vacuum() == "none"
        assert store.reclaim_space() > 1_000_000  # VACUUM, once
        assert store.auto_vacuum() == "incremental"
        assert store.reclaim_space() == 0
    finally:
        store.close()
    # new files are made with it
    fresh = open_store(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        assert fresh.auto_vacuum() == "incremental"
    finally:
        fresh.close()
