"""SQLite: polls written by a store writer in a process of its own (store/writerproc.py):
the same rows and story decisions as in-process, and a writer that dies costs only the
writes it had not answered."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.app import make_saver
from aggregator.config import load_config
from aggregator.ingest.batching import BatchingSaver
from aggregator.ingest.direct import DirectSaver
from aggregator.ingest.process import ProcessSaver
from aggregator.records import FeedUpdate, PollToSave
from aggregator.scheduler import run_once
from aggregator.store import Store, open_store
from aggregator.store.engine import READ_CACHE_KIB
from builders import paragraph, rss
from conftest import write_config
from httpserver import FixtureServer
from ingest import aggregator, rows


def _feeds(server: FixtureServer, prefix: str, count: int) -> list[dict[str, object]]:
    """``count`` feeds of 3 items each; every feed also carries the same shared story
    (one link with a different tracking parameter per feed)."""
    feeds: list[dict[str, object]] = []
    for i in range(count):
        items = [
            {
                "title": f"{prefix} {i} item {j}",
                "link": f"https://{prefix}{i}.example/{j}",
                "guid": f"{prefix}{i}-{j}",
                "description": paragraph(i * 10 + j),
            }
            for j in range(3)
        ]
        items.append(
            {
                "title": "The shared story",
                "link": f"https://news.example/shared?utm_source={prefix}{i}",
                "guid": f"{prefix}{i}-shared",
                "description": paragraph(999),
            }
        )
        feeds.append({"url": server.add(f"/{prefix}{i}/feed.xml", rss(f"{prefix}{i}", items))})
    return feeds


def _open(config_path: Path) -> Store:
    store = open_store(load_config(config_path).database_url)
    store.upgrade()
    return store


def test_polls_are_written_by_the_writer_process(server: FixtureServer, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'w.db'}"
    cfg = write_config(
        tmp_path / "feeds.yaml", _feeds(server, "w", 6), database_url=db, full_text=False
    )
    store = _open(cfg)
    try:
        saver = ProcessSaver(store)
        child = saver.pid
        assert child is not None and child != os.getpid()
        # what this process still writes is small: a reader's page cache, not the writer's
        with store.write_engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -READ_CACHE_KIB
        summary = asyncio.run(run_once(load_config(cfg), store, saver=saver))
        assert not saver.local_writes  # nothing written here
        saver.close()
    finally:
        store.close()
    assert (summary.polled, summary.failed, summary.new_items) == (6, 0, 24)
    # the six copies of the shared story are one story: decided in the writer process
    (shared,) = rows(
        db, "SELECT COUNT(DISTINCT story_id) FROM items WHERE title = 'The shared story'"
    )
    assert shared == (1,)
    assert rows(db, "SELECT COUNT(*) FROM stories") == [(6 * 3 + 1,)]
    assert rows(db, "SELECT COUNT(*) FROM feeds WHERE last_polled_at IS NOT NULL") == [(6,)]
    with pytest.raises(ProcessLookupError):  # closed with the saver
        for _ in range(50):
            os.kill(child, 0)
            time.sleep(0.1)


def test_a_writer_process_that_dies_costs_only_its_unanswered_writes(
    server: FixtureServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = f"sqlite:///{tmp_path / 'd.db'}"
    cfg = write_config(
        tmp_path / "feeds.yaml", _feeds(server, "d", 4), database_url=db, full_text=False
    )
    store = _open(cfg)
    try:
        saver = ProcessSaver(store)
        os.kill(saver.pid or 0, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while saver.process.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not saver.process.alive
        with caplog.at_level(logging.ERROR, logger="aggregator.ingest.process"):
            summary = asyncio.run(run_once(load_config(cfg), store, saver=saver))
        assert saver.local_writes
        saver.close()
    finally:
        store.close()
    assert any("store writer process exited" in r.getMessage() for r in caplog.records)
    # this process wrote them itself
    assert (summary.polled, summary.failed, summary.new_items) == (4, 0, 16)
    assert rows(db, "SELECT COUNT(*) FROM items") == [(16,)]


def test_a_burst_of_writes_goes_to_the_writer_process_in_one_message(
    server: FixtureServer, tmp_path: Path
) -> None:
    """Writes queued while the last message was being sent go together (one pipe write,
    one wake-up of the child for many polls), and every one of them is answered."""
    db = f"sqlite:///{tmp_path / 'b.db'}"
    cfg = write_config(
        tmp_path / "feeds.yaml", _feeds(server, "b", 40), database_url=db, full_text=False
    )
    store = _open(cfg)
    try:
        store.sync_feeds(load_config(cfg).feeds, datetime.now(UTC))
        ids = [s.id for s in store.feed_states(datetime.now(UTC) + timedelta(days=1))]
        saver = ProcessSaver(store)
        outbox = saver.process._outbox
        now = datetime.now(UTC)
        with outbox._ready:  # the sender waits until all forty are queued
            futures = [
                saver.submit(
                    PollToSave(
                        feed_id,
                        FeedUpdate(polled_at=now, status=304, ok=True, next_check_at=now),
                    )
                )
                for feed_id in ids
            ]
        for future in futures:
            future.result(timeout=30)
        assert outbox.sent == 1
        saver.close()
    finally:
        store.close()
    assert rows(db, "SELECT last_status, COUNT(*) FROM feeds GROUP BY 1") == [(304, 40)]


def test_a_writer_process_stopped_by_close_exits_cleanly_and_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """close() and the reply reader both used to wait for the child; the two read its exit
    status at once and one got a false 255 ("the store writer process exited (code 255)"
    at every other daemon stop)."""
    db = f"sqlite:///{tmp_path / 'c.db'}"
    for _ in range(5):
        store = open_store(db)
        store.upgrade()
        saver = ProcessSaver(store)
        remote = saver.process
        with caplog.at_level(logging.ERROR, logger="aggregator.ingest.process"):
            saver.close(timeout=60)  # a loaded machine: the child exits, never killed
            store.close()
        assert remote._process.exitcode == 0
        assert not remote._reader.is_alive()
    assert [r.getMessage() for r in caplog.records] == []


def test_no_writer_process_for_postgresql_or_memory(pg_url: str, tmp_path: Path) -> None:
    """The save path is chosen once (``app.make_saver``): PostgreSQL saves directly, an
    in-memory SQLite database in groups in this process (a child would see another
    database), an SQLite file through the writer process when asked for."""
    config = load_config(write_config(tmp_path / "feeds.yaml", []))
    expected = {pg_url: DirectSaver, "sqlite://": BatchingSaver}
    expected[f"sqlite:///{tmp_path / 'f.db'}"] = ProcessSaver
    for url, kind in expected.items():
        store = open_store(url)
        threads = ThreadPoolExecutor(1)
        try:
            saver = make_saver(store, config, threads=threads, writer_process=True)
            assert type(saver) is kind
            saver.close()
        finally:
            threads.shutdown()
            store.close()


def test_run_once_from_the_command_line_writes_through_the_writer_process(
    server: FixtureServer, tmp_path: Path
) -> None:
    """The command line starts the writer process (a new database, migrated first):
    every item is stored and the copies of the shared story are merged."""
    db = f"sqlite:///{tmp_path / 'c.db'}"
    cfg = write_config(
        tmp_path / "feeds.yaml", _feeds(server, "c", 3), database_url=db, full_text=False
    )
    done = aggregator("run", "--once", "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert rows(db, "SELECT COUNT(*) FROM items") == [(12,)]
    assert rows(db, "SELECT COUNT(DISTINCT story_id) FROM items") == [(10,)]
