"""SQLite's write-ahead log stays bounded while many readers read: the writer saves polls
while `aggregator serve` streams exports to a crowd of clients, and the log never grows
far past its limit. Without the checkpoints it grew with everything written (78 MiB for
an 18 MiB database here): some reader always held an older snapshot, so SQLite could
never start the log again."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.ingest.batching import BatchingSaver
from aggregator.records import CleanEntry, FeedSpec, FeedUpdate, PollToSave
from aggregator.store import open_store
from builders import clean_entries

pytestmark = pytest.mark.slow

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LIMIT = 1024 * 1024  # the store's WAL limit in this test (the default is 64 MiB)
ROUNDS = 90  # of one poll per feed, 10 feeds, 4 new entries each


def entries(feed: int, round_: int, n: int) -> list[CleanEntry]:
    return clean_entries(feed, round_, n, 300)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_wal_stays_bounded_under_a_crowd_of_readers(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"
    wal = tmp_path / "busy.db-wal"
    url = f"sqlite:///{db}"
    store = open_store(url, wal_limit=LIMIT)
    store.upgrade()
    store.sync_feeds([FeedSpec(url=f"https://f{i}.example/feed") for i in range(10)], NOW)
    feed_ids = [s.id for s in store.feed_states(NOW, due_only=False)]
    saver = BatchingSaver(store)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    serve = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "serve", "-d", url, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    stop = threading.Event()
    answered = [0]

    def client() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/export/jsonl?limit=300", timeout=60
                ) as response:
                    response.read()
                answered[0] += 1
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)  # starting up

    clients = [threading.Thread(target=client) for _ in range(16)]
    largest = 0
    try:
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 60
        while answered[0] < 16:
            assert serve.poll() is None and time.monotonic() < deadline, "serve did not answer"
            time.sleep(0.1)
        for round_ in range(ROUNDS):
            update = FeedUpdate(polled_at=NOW, status=200, ok=True, next_check_at=NOW)
            queued = [
                saver.submit(
                    PollToSave(
                        f,
                        replace(update, polled_at=NOW + timedelta(seconds=round_)),
                        tuple(entries(f, round_, 4)),
                    )
                )
                for f in feed_ids
            ]
            for future in queued:
                future.result(timeout=120)
            largest = max(largest, wal.stat().st_size if wal.exists() else 0)
    finally:
        stop.set()
        for thread in clients:
            thread.join(60)
        serve.terminate()
        serve.wait(30)
        saver.close()
        store.close()
    assert answered[0] > 100  # the readers really read all along
    assert db.stat().st_size > 8 * LIMIT, "too little written to tell"  # ~10 MiB
    # a few groups may come on top of the limit before a checkpoint that readers held up
    # is tried again (once the log has grown by another limit) and empties the log
    assert largest <= 4 * LIMIT, f"the WAL reached {largest / 2**20:.1f} MiB"
