"""What the outbox hooks (store/events.py) cost inside the save path, on SQLite.

Two measurements, each with the hooks as shipped and with them replaced by no-ops (the
benchmark swaps the module's functions; the tests never do):

- ``feed rows``: a group of 2000 polls' feed rows written by ``Store._write_feeds`` in one
  transaction (what the writer process does for a burst of 304s): the hook reads the old
  rows (one SELECT per 500 feeds) and finds no state change;
- ``new items``: ``Store._save_poll`` of 20 new entries (each a new story) on a fresh
  feed, one webhook subscribed to ``story.new``: the hook writes 20 events and 20
  deliveries.

    python benchmarks/events_hooks.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregator.records import CleanEntry, FeedSpec, FeedUpdate, ParsedEntry, WebhookSpec
from aggregator.store import events as hooks
from aggregator.store import open_store

FEEDS = 2000
ENTRIES = 20


def entries(feed: int, n: int) -> list[CleanEntry]:
    out = []
    for i in range(n):
        text = f"feed {feed} entry {i} " + " ".join(f"w{feed}x{i}x{k}" for k in range(80))
        entry = ParsedEntry(
            key=f"guid:{feed}-{i}",
            guid=f"{feed}-{i}",
            link=f"https://site{feed}.example/{i}",
            title=f"Entry {i} of feed {feed}",
        )
        out.append(
            CleanEntry(
                entry=entry,
                canonical_url=entry.link,
                summary=None,
                content=None,
                text=text,
                content_hash=f"h{feed}-{i}",
            )
        )
    return out


def measure(rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"feed rows": [], "new items": []}
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(f"sqlite:///{Path(folder) / 'b.db'}")
        store.upgrade()
        now = datetime.now(UTC)
        store.sync_feeds([FeedSpec(f"https://site{n}.example/feed") for n in range(FEEDS)], now)
        store.outbox().sync_webhooks(
            [WebhookSpec("https://hooks.example/h", events=("story.new",))], now
        )
        ids = [s.id for s in store.feed_states(now, due_only=False)]
        for r in range(rounds):
            at = now + timedelta(minutes=r + 1)
            update = FeedUpdate(
                polled_at=at, status=304, ok=True, next_check_at=at + timedelta(hours=1)
            )
            with store._locked_tx() as conn:
                started = time.perf_counter()
                store._write_feeds(conn, [(i, update) for i in ids])
                times["feed rows"].append(time.perf_counter() - started)
            feed = ids[r]
            with store._locked_tx() as conn:
                started = time.perf_counter()
                store._save_poll(
                    conn,
                    feed,
                    FeedUpdate(polled_at=at, status=200, ok=True, next_check_at=at),
                    new=entries(feed, ENTRIES),
                )
                times["new items"].append(time.perf_counter() - started)
        store.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    shipped = measure(rounds)
    real = (hooks.record_poll, hooks.record_feed_changes)
    hooks.record_poll = lambda *a, **k: None  # type: ignore[assignment]
    hooks.record_feed_changes = lambda *a, **k: None  # type: ignore[assignment]
    try:
        without = measure(rounds)
    finally:
        hooks.record_poll, hooks.record_feed_changes = real
    for name in shipped:
        a, b = statistics.median(shipped[name]), statistics.median(without[name])
        print(
            f"{name:10s} median {1000 * a:7.2f} ms with the hooks, {1000 * b:7.2f} ms "
            f"without ({1000 * (a - b):+.2f} ms, {a / b:.2f}x)"
        )


if __name__ == "__main__":
    main()
