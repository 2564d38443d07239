"""Webhooks from the daemon: delivered beside the polls and counted in ``/metrics``; a
``kill -9`` between the commit of the events and their delivery loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.metrics import Metrics
from aggregator.scheduler import Daemon
from aggregator.store import open_store
from builders import rss
from hookreceiver import Receiver, verify
from httpserver import FixtureServer
from ingest import aggregator, rows
from test_webhooks import SECRET, entry, receiver, write_config

__all__ = ["receiver"]  # the fixture

pytestmark = pytest.mark.slow


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def test_the_daemon_delivers_beside_its_polls_and_counts_deliveries(
    server: FixtureServer, receiver: Receiver, tmp_path: Path
) -> None:
    feed = server.add("/news.xml", rss("News", [entry("news", 0), entry("news", 1)]))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cfg = write_config(
        tmp_path / "feeds.yaml",
        [{"url": feed}],
        [{"url": receiver.url, "secret": SECRET}],
        tick="0.2s",
        webhook_retry_base="0.2s",
    )
    receiver.status = 500  # the first attempts fail: counted as failed, then delivered
    config = load_config(cfg, db)
    store = open_store(db)
    store.upgrade()
    metrics = Metrics()
    daemon = Daemon(config, store, config_path=cfg, database_override=None, metrics=metrics)

    async def main() -> None:
        running = asyncio.create_task(daemon.run())
        try:
            while len(receiver.deliveries) < 2:
                await asyncio.sleep(0.05)
            receiver.status = 204
            while len(receiver.accepted()) < 2:
                await asyncio.sleep(0.05)
            # a reload applies webhooks: changes (the subscription removed here)
            write_config(cfg, [{"url": feed}], [], tick="0.2s")
            await daemon.reload(force=True)
        finally:
            daemon.stop_event.set()
            await running

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        store.close()

    def count(result: str) -> float | None:
        return metrics.registry.get_sample_value(
            "aggregator_webhook_deliveries_total", {"result": result}
        )

    assert count("delivered") == 2
    assert count("failed") == len(receiver.deliveries) - 2 >= 2
    assert count("dead") == 0
    assert all(verify(SECRET, d.headers, d.body) for d in receiver.accepted())
    assert rows(db, "SELECT removed_at IS NOT NULL FROM webhooks") == [(1,)]
    # the daemon gave its leases back when it stopped
    assert rows(db, "SELECT count(*) FROM event_deliveries WHERE lease_owner IS NOT NULL") == [(0,)]


def test_kill_9_between_commit_and_delivery_loses_nothing(
    server: FixtureServer, receiver: Receiver, tmp_path: Path
) -> None:
    """The receiver takes the daemon's POSTs and never answers: the events are committed,
    their deliveries in flight, when the daemon is killed. The next run delivers them all."""
    receiver.status = 0  # hang
    feed = server.add("/news.xml", rss("News", [entry("news", i) for i in range(3)]))
    db = tmp_path / "db.sqlite"
    cfg = write_config(
        tmp_path / "feeds.yaml",
        [{"url": feed}],
        [{"url": receiver.url, "secret": SECRET}],
        tick="0.5s",
    )
    options = ("--config", str(cfg), "--database", f"sqlite:///{db}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "run", *options],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: len(receiver.deliveries) >= 3, 60, "the daemon's first deliveries")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    url = f"sqlite:///{db}"
    assert rows(url, "SELECT count(*) FROM events WHERE type = 'story.new'") == [(3,)]
    leased = rows(url, "SELECT state, lease_owner IS NOT NULL FROM event_deliveries")
    assert leased == [("pending", True)] * 3  # in flight when the daemon died

    receiver.status = 204
    receiver.release.set()  # the hung requests end (their connections are gone anyway)
    done = aggregator("run", "--once", *options)
    assert done.returncode == 0, done.stderr
    accepted = Counter(d.headers["webhook-id"] for d in receiver.accepted())
    keys = {r[0] for r in rows(url, "SELECT event_key FROM events")}
    assert set(accepted) == keys and set(accepted.values()) == {1}
    assert rows(url, "SELECT DISTINCT state FROM event_deliveries") == [("delivered",)]
