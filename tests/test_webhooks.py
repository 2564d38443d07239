"""Webhook deliveries through the real pipeline, store and sender, to a real receiver on
127.0.0.1: the Standard Webhooks envelope and signature (checked here from the spec,
not with the code under test), exactly once, retries while the receiver is down, dead
deliveries and ``aggregator events list|retry|purge``, the address guard."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from aggregator.config import load_config
from aggregator.records import EVENT_SCHEMA_VERSION
from aggregator.store import open_store
from aggregator.webhooks import RetryPolicy, Sender, sign
from builders import paragraph, rss
from hookreceiver import Receiver, verify
from httpserver import FixtureServer
from ingest import aggregator, rows, run_once

SECRET = "whsec_" + base64.b64encode(b"twenty-four byte secret!").decode()
BASE_SETTINGS: dict[str, object] = {
    "allow_private_networks": ["127.0.0.0/8"],
    "per_host_delay": "0s",
    "workers": 1,
    "full_text": False,
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver().start()
    try:
        yield found
    finally:
        found.stop()


def write_config(
    path: Path,
    feeds: list[dict[str, object]],
    webhooks: list[dict[str, object]],
    **settings: object,
) -> Path:
    data = {"settings": {**BASE_SETTINGS, **settings}, "feeds": feeds, "webhooks": webhooks}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def entry(name: str, i: int) -> dict[str, str]:
    return {
        "title": f"{name} story number {i}",
        "link": f"http://127.0.0.1:1/{name}/{i}",
        "guid": f"{name}-{i}",
        "description": paragraph(f"{name}-{i}"),  # texts that differ: stories of their own
    }


def test_a_new_story_reaches_the_receiver_once_signed_with_the_documented_payload(
    server: FixtureServer,
    receiver: Receiver,
    tmp_path: Path,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    items = [entry("news", 0), entry("news", 1)]
    feed = server.add("/news.xml", rss("News", items))
    cfg = write_config(
        tmp_path / "feeds.yaml",
        [{"url": feed, "name": "News desk", "tags": ["peru"]}],
        [
            {
                "url": receiver.url,
                "events": ["story.new", "story.sources_reached", "feed.failing"],
                "secret": {"env": "HOOK_SECRET"},
                "tags": ["peru"],
            }
        ],
    )
    run_once(cfg, db_url)  # run --once delivers before it returns

    got = receiver.accepted()
    assert len(got) == 2 == len(receiver.deliveries)
    stories = {
        int(r[0]): (r[1], r[2], r[3])
        for r in rows(db_url, "SELECT id, title, url, first_seen_at FROM stories")
    }
    keys = {r[0] for r in rows(db_url, "SELECT event_key FROM events WHERE type = 'story.new'")}
    assert {d.headers["webhook-id"] for d in got} == keys and len(keys) == 2
    by_title = {item["title"]: item for item in items}
    for delivery in got:
        assert delivery.path == "/hook"
        assert delivery.headers["content-type"] == "application/json"
        assert delivery.headers["webhook-timestamp"].isdigit()
        assert delivery.headers["webhook-signature"].startswith("v1,")
        assert verify(SECRET, delivery.headers, delivery.body)
        assert not verify(
            "whsec_" + base64.b64encode(b"another secret").decode(), delivery.headers, delivery.body
        )
        document = delivery.document
        assert set(document) == {"type", "timestamp", "version", "data"}
        assert document["type"] == "story.new"
        assert document["version"] == EVENT_SCHEMA_VERSION
        data = document["data"]
        assert set(data) == {"story_id", "title", "url", "first_seen_at", "sources"}
        title, url, first_seen = stories[data["story_id"]]
        item = by_title[data["title"]]
        assert (data["title"], data["url"]) == (title, url) == (item["title"], item["link"])
        assert data["first_seen_at"].endswith("Z") and document["timestamp"].endswith("Z")
        assert datetime.fromisoformat(data["first_seen_at"]) == utc(first_seen)
        assert data["sources"] == [
            {
                "feed": "News desk",
                "feed_url": feed,
                "item_url": item["link"],
                "title": item["title"],
            }
        ]
    assert {d.document["data"]["story_id"] for d in got} == set(stories)
    # polled again: no new story, nothing sent again
    server.clear()
    run_once(cfg, db_url)
    assert len(receiver.deliveries) == 2
    assert rows(db_url, "SELECT state, attempts FROM event_deliveries") == [("delivered", 1)] * 2


def utc(value: object) -> datetime:
    """A time read back from either database (SQLite: naive UTC text)."""
    found = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


def test_unsigned_without_a_secret_and_finished_events_are_pruned(
    server: FixtureServer, receiver: Receiver, tmp_path: Path
) -> None:
    feed = server.add("/news.xml", rss("News", [entry("news", 0)]))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cfg = write_config(
        tmp_path / "feeds.yaml", [{"url": feed}], [{"url": receiver.url}], events_retention="0s"
    )
    run_once(cfg, db)
    (delivery,) = receiver.accepted()
    assert "webhook-signature" not in delivery.headers
    # without a name, a source is named by the feed's own title
    assert delivery.document["data"]["sources"][0]["feed"] == "News"
    # run --once ends by deleting finished events older than events_retention
    assert rows(db, "SELECT count(*) FROM events") == [(0,)]


def test_the_signature_follows_standard_webhooks() -> None:
    body = b'{"type":"story.new"}'
    for secret in (SECRET, "a plain secret"):
        headers = {
            "webhook-id": "evt_1",
            "webhook-timestamp": "1700000000",
            "webhook-signature": sign(secret, "evt_1", 1700000000, body),
        }
        assert verify(secret, headers, body)
        assert not verify(secret, {**headers, "webhook-timestamp": "1700000001"}, body)
    # the spec's own example (standard-webhooks, libraries' test vectors)
    assert (
        sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_retries_back_off_until_the_window_ends_then_the_delivery_is_dead() -> None:
    policy = RetryPolicy(base=30, max_delay=3600, max_age=86400)
    start = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
    waits = []
    now = start
    for attempts in range(12):
        state, at = policy.after_failure(attempts, start, now)
        assert state == "pending"
        waits.append((at - now).total_seconds())
        now = at
    assert waits[:8] == [30, 60, 120, 240, 480, 960, 1920, 3600]
    assert waits[8:] == [3600] * 4
    # the last attempt is made when the window ends; failing then, it is dead
    state, at = policy.after_failure(40, start, start.replace(hour=23, minute=30))
    assert (state, at) == ("pending", start.replace(day=2))
    assert policy.after_failure(41, start, start.replace(day=2))[0] == "dead"


def test_a_receiver_that_is_down_loses_nothing(
    server: FixtureServer, receiver: Receiver, tmp_path: Path
) -> None:
    """Down for several retries (a short backoff: the retry timings are settings), then
    back: every event arrives, once, from the daemon's sender."""
    feed = server.add("/news.xml", rss("News", [entry("news", 0), entry("news", 1)]))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cfg = write_config(
        tmp_path / "feeds.yaml",
        [{"url": feed}],
        [{"url": receiver.url, "secret": SECRET}],
        webhook_retry_base="0.2s",
        webhook_retry_max="0.4s",
    )
    receiver.status = 503
    summary = run_once(cfg, db)  # the failed deliveries do not fail the run
    assert summary.failed == 0 and summary.new_stories == 2
    assert len(receiver.deliveries) == 2 and not receiver.accepted()
    assert (
        rows(db, "SELECT state, attempts, last_status FROM event_deliveries")
        == [("pending", 1, 503)] * 2
    )

    config = load_config(cfg, db)
    store = open_store(db)

    async def daemon_sender() -> None:
        stop = asyncio.Event()
        sender = Sender(store.outbox(), lambda: config, "elsewhere:1:test")
        running = asyncio.create_task(sender.run(stop))
        while len(receiver.deliveries) < 8:  # three more failed rounds, backing off
            await asyncio.sleep(0.05)
        receiver.status = 204
        while len(receiver.accepted()) < 2:
            await asyncio.sleep(0.05)
        stop.set()
        await running

    try:
        asyncio.run(asyncio.wait_for(daemon_sender(), 60))
    finally:
        store.close()
    accepted = receiver.accepted()
    keys = {r[0] for r in rows(db, "SELECT event_key FROM events")}
    assert sorted(d.headers["webhook-id"] for d in accepted) == sorted(keys)
    assert all(verify(SECRET, d.headers, d.body) for d in receiver.deliveries)
    states = rows(db, "SELECT state, attempts >= 4, delivered_at IS NOT NULL FROM event_deliveries")
    assert states == [("delivered", True, True)] * 2


def events_json(cfg: Path, db: str, *args: str) -> list[dict[str, Any]]:
    done = aggregator("events", "list", "--json", "--config", str(cfg), "--database", db, *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_dead_deliveries_are_listed_retried_and_purged(
    server: FixtureServer, receiver: Receiver, tmp_path: Path
) -> None:
    feed = server.add("/news.xml", rss("News", [entry("news", 0), entry("news", 1)]))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cfg = write_config(
        tmp_path / "feeds.yaml",
        [{"url": feed}],
        [{"url": receiver.url, "secret": SECRET}],
        webhook_max_age="0s",  # the first failure is the last
    )
    options = ("--config", str(cfg), "--database", db)
    receiver.status = 500
    done = aggregator("run", "--once", *options)
    assert done.returncode == 0, done.stderr
    assert "webhook delivery dead" in done.stderr
    dead = events_json(cfg, db, "--state", "dead")
    assert [(e["type"], e["state"], e["last_status"]) for e in dead] == [
        ("story.new", "dead", 500)
    ] * 2
    assert {e["data"]["title"] for e in dead} == {"news story number 0", "news story number 1"}

    receiver.status = 204
    run_once(cfg, db)
    assert not receiver.accepted()  # dead deliveries wait for the operator

    done = aggregator("events", "retry", *options)
    assert done.returncode == 0 and "2 deliveries due now" in done.stdout
    run_once(cfg, db)
    assert {d.headers["webhook-id"] for d in receiver.accepted()} == {e["webhook_id"] for e in dead}
    assert rows(db, "SELECT state FROM event_deliveries") == [("delivered",)] * 2

    listing = aggregator("events", "list", *options)
    assert "0 pending, 2 delivered, 0 dead" in listing.stdout
    assert receiver.url in listing.stdout
    done = aggregator("events", "purge", *options)
    assert done.returncode == 0 and "2 events deleted" in done.stdout
    assert rows(db, "SELECT count(*) FROM events") == [(0,)]
    done = aggregator("events", "retry", "999", *options)
    assert done.returncode == 2 and "no dead or waiting delivery of event 999" in done.stderr


def test_the_address_guard_applies_to_webhook_targets(
    server: FixtureServer, tmp_path: Path
) -> None:
    """A receiver on 127.0.0.2 while only 127.0.0.1 is allowed: nothing is sent, and the
    delivery says why."""
    outside = Receiver(host="127.0.0.2").start()
    try:
        feed = server.add("/news.xml", rss("News", [entry("news", 0)]))
        db = f"sqlite:///{tmp_path / 'db.sqlite'}"
        cfg = write_config(
            tmp_path / "feeds.yaml",
            [{"url": feed}],
            [{"url": outside.url}],
            allow_private_networks=["127.0.0.1/32"],
        )
        run_once(cfg, db)
        assert outside.deliveries == []
        ((state, error),) = rows(db, "SELECT state, last_error FROM event_deliveries")
        assert state == "pending"
        assert "refused to connect to 127.0.0.2" in str(error)
    finally:
        outside.stop()
