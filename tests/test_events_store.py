"""Which events the save path writes (``store/events.py``), and who gets them: feed state
changes, ``story.sources_reached`` once per threshold, the ``tags``/``feeds`` filters,
``item.new`` on request; PostgreSQL's NOTIFY; three workers delivering each event once."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from aggregator.config import load_config
from aggregator.ingest.direct import save_now
from aggregator.records import FeedSpec, FeedUpdate, PollToSave, WebhookSpec
from aggregator.scheduler import utcnow
from aggregator.store import open_store
from aggregator.store.events import iso
from aggregator.webhooks import Sender
from builders import rss
from hookreceiver import Receiver, check_schema
from httpserver import FixtureServer
from ingest import rows, run_once
from test_webhooks import entry, receiver, write_config

__all__ = ["receiver"]  # the fixture


def by_path(hooks: Receiver, path: str) -> list[dict[str, object]]:
    return [d.document for d in hooks.accepted() if d.path == path]


def test_feed_state_changes_are_events(
    server: FixtureServer, receiver: Receiver, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    feed = server.add("/desk.xml", b"oops", status=500, content_type="text/plain")
    cfg = write_config(
        tmp_path / "feeds.yaml",
        [{"url": feed, "name": "Desk"}],
        [{"url": receiver.url, "events": ["feed.failing", "feed.recovered", "feed.retired"]}],
    )
    run_once(cfg, db)  # failing
    run_once(cfg, db)  # still failing: no news
    server.add("/desk.xml", rss("Desk", [entry("desk", 0)]))
    run_once(cfg, db)  # recovered (its new story is not subscribed to)
    server.add("/desk.xml", b"gone", status=410, content_type="text/plain")
    run_once(cfg, db)  # retired
    documents = [d.document for d in receiver.accepted()]
    assert [d["type"] for d in documents] == ["feed.failing", "feed.recovered", "feed.retired"]
    failing, recovered, retired = (d["data"] for d in documents)
    assert failing == {
        "feed_url": feed,
        "feed_name": "Desk",
        "state": "failing",
        "error": f"HTTP 500 (server error) from {feed}",
    }
    assert recovered == {"feed_url": feed, "feed_name": "Desk", "state": "ok", "error": None}
    assert (retired["state"], retired["feed_name"]) == ("retired", "Desk")
    assert "410" in str(retired["error"])
    # every event is recorded, wanted or not: the story too (for LISTEN and `events list`)
    assert Counter(r[0] for r in rows(db, "SELECT type FROM events")) == {
        "feed.failing": 1,
        "feed.recovered": 1,
        "feed.retired": 1,
        "story.new": 1,
    }


def test_a_confirmed_redirect_is_a_feed_redirected_event(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = open_store(db)
    try:
        store.upgrade()
        now = utcnow()
        store.sync_feeds([FeedSpec("https://old.example/feed", name="Moved")], now)
        store.outbox().sync_webhooks(
            [WebhookSpec("https://hooks.example/h", events=("feed.redirected",))], now
        )
        (state,) = store.feed_states(now)
        moved = FeedUpdate(
            polled_at=now,
            status=200,
            ok=True,
            next_check_at=now + timedelta(hours=1),
            new_url="https://new.example/feed",
        )
        save_now(store, PollToSave(state.id, moved))
        (row,) = store.outbox().list()
    finally:
        store.close()
    assert (row.type, row.webhook_url, row.state) == (
        "feed.redirected",
        "https://hooks.example/h",
        "pending",
    )
    assert row.data == (
        '{"feed_url":"https://new.example/feed","feed_name":"Moved","state":"ok",'
        '"error":null,"previous_url":"https://old.example/feed"}'
    )
    check_schema(
        {
            "type": row.type,
            "timestamp": iso(row.created_at),
            "version": 1,
            "data": json.loads(row.data),
        }
    )


def shared(i: int) -> dict[str, str]:
    """The one story every feed carries (same link, title and text)."""
    return {
        "title": "Harbour council approves the new budget",
        "link": "http://127.0.0.1:1/shared/budget",
        "guid": f"shared-{i}",
        "description": "The harbour council approved the new budget after a long debate "
        "about schools, roads and the harbour itself, officials said on Monday. " * 3,
    }


def test_sources_reached_fires_once_per_threshold_and_filters_choose_subscriptions(
    server: FixtureServer, receiver: Receiver, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    feeds = [
        {"url": server.add("/a.xml", rss("A", [shared(0), entry("a", 0)])), "name": "A"},
        {"url": server.add("/b.xml", rss("B", [shared(1), entry("b", 0)])), "name": "B"},
        {"url": server.add("/c.xml", rss("C", [shared(2), entry("c", 0)])), "name": "C"},
    ]
    feeds[0]["tags"] = ["peru"]
    hooks = [
        {"url": receiver.base + "/two", "events": ["story.sources_reached"]},
        {
            "url": receiver.base + "/three",
            "events": ["story.sources_reached"],
            "sources_reached": 3,
        },
        {"url": receiver.base + "/peru", "events": ["story.new"], "tags": ["peru"]},
        {"url": receiver.base + "/items-b", "events": ["item.new"], "feeds": ["B"]},
    ]
    # one feed more enabled in each run, so the shared story's first feed is A
    for count in (1, 2, 3, 3):
        enabled = [{**f, "enabled": n < count} for n, f in enumerate(feeds)]
        run_once(write_config(tmp_path / "feeds.yaml", enabled, hooks), db)
    (story_id,) = {
        r[0] for r in rows(db, "SELECT story_id FROM items WHERE url LIKE '%/shared/budget'")
    }
    assert rows(db, f"SELECT count(*) FROM items WHERE story_id = {story_id}") == [(3,)]

    (two,) = by_path(receiver, "/two")
    assert two["type"] == "story.sources_reached"
    assert two["data"]["story_id"] == story_id and two["data"]["threshold"] == 2
    assert [s["feed"] for s in two["data"]["sources"]] == ["A", "B"]
    (three,) = by_path(receiver, "/three")
    assert three["data"]["threshold"] == 3
    assert [s["feed"] for s in three["data"]["sources"]] == ["A", "B", "C"]
    assert {s["feed_url"] for s in three["data"]["sources"]} == {f["url"] for f in feeds}
    # story.new only for stories with an item of a feed tagged peru: A's two
    peru = by_path(receiver, "/peru")
    assert sorted(d["data"]["title"] for d in peru) == sorted(
        ["Harbour council approves the new budget", "a story number 0"]
    )
    # item.new (opt-in) for feed B's items only, each once
    items_b = by_path(receiver, "/items-b")
    assert sorted(d["data"]["url"] for d in items_b) == sorted(
        ["http://127.0.0.1:1/shared/budget", "http://127.0.0.1:1/b/0"]
    )
    assert {d["data"]["feed"] for d in items_b} == {"B"}
    assert len(receiver.deliveries) == 2 + 2 + 2


@pytest.mark.postgres
def test_listen_sees_each_event_at_commit(
    server: FixtureServer, tmp_path: Path, pg_url: str
) -> None:
    feed = server.add("/news.xml", rss("News", [entry("news", 0), entry("news", 1)]))
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": feed}], [])
    store = open_store(pg_url)
    store.upgrade()
    store.close()
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN aggregator_events")
        run_once(cfg, pg_url)
        notes = list(listener.notifies(timeout=10, stop_after=2))
    assert {n.channel for n in notes} == {"aggregator_events"}
    payloads = [n.payload for n in notes]
    ids = [str(r[0]) for r in rows(pg_url, "SELECT id FROM events ORDER BY id")]
    assert sorted(payloads) == ids and len(ids) == 2


@pytest.mark.postgres
def test_three_workers_deliver_each_event_once(
    server: FixtureServer, tmp_path: Path, pg_url: str
) -> None:
    """Three senders, each with its own connections (as three worker processes have),
    share one outbox: every event reaches the receiver exactly once."""
    slow = Receiver(delay=0.02).start()
    try:
        items = [entry("farm", i) for i in range(30)]
        feed = server.add("/farm.xml", rss("Farm", items))
        cfg = write_config(
            tmp_path / "feeds.yaml",
            [{"url": feed}],
            [{"url": slow.url}],
            webhook_retry_base="0.1s",
        )
        slow.status = 503  # run --once leaves them pending, due again in 0.1 s
        run_once(cfg, pg_url)
        slow.status = 204
        config = load_config(cfg, pg_url)
        stop = threading.Event()

        def worker(n: int) -> None:
            store = open_store(pg_url)

            async def run() -> None:
                done = asyncio.Event()
                sender = Sender(store.outbox(), lambda: config, f"elsewhere:{n}:w")
                task = asyncio.create_task(sender.run(done))
                while not stop.is_set():
                    await asyncio.sleep(0.05)
                done.set()
                await task

            try:
                asyncio.run(run())
            finally:
                store.close()

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        try:
            slow.wait_for(30, timeout=60)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        accepted = Counter(d.headers["webhook-id"] for d in slow.accepted())
        keys = {r[0] for r in rows(pg_url, "SELECT event_key FROM events")}
        assert set(accepted) == keys and len(keys) == 30
        assert set(accepted.values()) == {1}
        assert rows(pg_url, "SELECT DISTINCT state FROM event_deliveries") == [("delivered",)]
    finally:
        slow.stop()
