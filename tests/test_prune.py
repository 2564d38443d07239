"""The dedup index keeps only the window: band rows of items first seen before it and
anchor counts not refreshed since are pruned (by the daemon every few hours), in short
transactions; items and stories stay."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from aggregator.config import load_config
from aggregator.scheduler import Daemon, utcnow
from aggregator.store import open_store
from builders import paragraph, rss
from conftest import write_config
from httpserver import FixtureServer
from ingest import rows, run_once

OLD = "2020-01-01 00:00:00"


def _ingest(server: FixtureServer, tmp_path: Path, db_url: str) -> Path:
    feeds = []
    for f in range(4):
        items = [
            {
                "title": f"Outlet {f} story {n}",
                "link": f"https://outlet{f}.example/{n}",
                "guid": f"o{f}-{n}",
                "description": paragraph(f * 20 + n),
            }
            for n in range(5)
        ]
        feeds.append({"url": server.add(f"/o{f}/feed.xml", rss(f"o{f}", items))})
    cfg = write_config(tmp_path / "feeds.yaml", feeds, full_text=False, database_url=db_url)
    summary = run_once(cfg, db_url)
    assert (summary.polled, summary.failed, summary.new_items) == (4, 0, 20)
    return cfg


def _age(db_url: str, feed_urls: tuple[str, ...]) -> None:
    """Make the items of ``feed_urls`` (and their index rows) look first seen in 2020."""
    engine = create_engine(db_url)
    marks = ", ".join(f":u{i}" for i in range(len(feed_urls)))
    params = {f"u{i}": url for i, url in enumerate(feed_urls)}
    old_items = (
        f"SELECT items.id FROM items JOIN feeds ON feeds.id = items.feed_id "
        f"WHERE feeds.url IN ({marks})"
    )
    try:
        with engine.begin() as conn:
            stamp = (
                text(":old") if engine.dialect.name == "sqlite" else text("CAST(:old AS timestamp)")
            )
            conn.execute(
                text(
                    f"UPDATE dedup_bands SET first_seen_at = {stamp} WHERE item_id IN ({old_items})"
                ),
                {"old": OLD, **params},
            )
            conn.execute(
                text(f"UPDATE items SET first_seen_at = {stamp} WHERE id IN ({old_items})"),
                {"old": OLD, **params},
            )
            conn.execute(text(f"UPDATE dedup_shingles SET last_seen_at = {stamp}"), {"old": OLD})
    finally:
        engine.dispose()


def test_prune_drops_index_rows_older_than_the_window_and_keeps_the_rest(
    server: FixtureServer, tmp_path: Path, db_url: str
) -> None:
    cfg = _ingest(server, tmp_path, db_url)
    bands = rows(db_url, "SELECT COUNT(*) FROM dedup_bands")[0][0]
    anchors = rows(db_url, "SELECT COUNT(*) FROM dedup_shingles")[0][0]
    assert isinstance(bands, int) and bands > 20 and isinstance(anchors, int) and anchors > 0
    if db_url.startswith("postgresql"):  # a row per key the polls locked
        assert rows(db_url, "SELECT COUNT(*) FROM dedup_key_locks")[0][0] >= bands // 2
    store = open_store(load_config(cfg).database_url)
    try:
        # nothing is older than a week yet
        assert store.prune_dedup(utcnow() - timedelta(days=7)) == 0
        assert rows(db_url, "SELECT COUNT(*) FROM dedup_bands") == [(bands,)]
        old_feeds = tuple(server.url(f"/o{f}/feed.xml") for f in (0, 2))
        _age(db_url, old_feeds)
        kept = rows(
            db_url,
            "SELECT COUNT(*) FROM dedup_bands JOIN items ON items.id = dedup_bands.item_id "
            "JOIN feeds ON feeds.id = items.feed_id WHERE feeds.url NOT IN "
            f"('{old_feeds[0]}', '{old_feeds[1]}')",
        )[0][0]
        assert isinstance(kept, int) and 0 < kept < bands
        # in transactions of 3 items' band rows each (the 20 items span 7 of them)
        removed = store.prune_dedup(utcnow() - timedelta(days=7), batch=3)
    finally:
        store.close()
    assert removed == bands - kept + anchors
    assert rows(db_url, "SELECT COUNT(*) FROM dedup_bands") == [(kept,)]
    assert rows(db_url, "SELECT COUNT(*) FROM dedup_shingles") == [(0,)]
    if db_url.startswith("postgresql"):  # the polls' key-lock rows, none held now: gone
        assert rows(db_url, "SELECT COUNT(*) FROM dedup_key_locks") == [(0,)]
    # items and stories are never pruned
    assert rows(db_url, "SELECT COUNT(*) FROM items") == [(20,)]
    assert rows(db_url, "SELECT COUNT(*) FROM stories") == [(20,)]


def test_the_daemon_prunes_and_logs_it(
    server: FixtureServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_url = f"sqlite:///{tmp_path / 'daemon.db'}"
    cfg = _ingest(server, tmp_path, db_url)
    _age(db_url, (server.url("/o1/feed.xml"),))
    config = load_config(cfg)
    store = open_store(config.database_url)
    try:
        daemon = Daemon(config, store, config_path=cfg, database_override=None)
        with caplog.at_level(logging.INFO, logger="aggregator.daemon"):
            removed = asyncio.run(daemon.prune_dedup())
    finally:
        store.close()
    assert removed is not None and removed > 0
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "dedup_pruned"]
    assert record.rows == removed  # type: ignore[attr-defined]
    assert rows(db_url, "SELECT COUNT(*) FROM items") == [(20,)]
    left = rows(
        db_url,
        "SELECT COUNT(*) FROM dedup_bands JOIN items ON items.id = dedup_bands.item_id "
        "JOIN feeds ON feeds.id = items.feed_id "
        f"WHERE feeds.url = '{server.url('/o1/feed.xml')}'",
    )
    assert left == [(0,)]
