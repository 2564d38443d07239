"""The pipeline's side of WebSub, with a real fetcher, a real SQLite store and the pool's
jobs in threads: a pushed document goes through the poll's path without touching the
feed's poll state, and a feed pushed by a live subscription is polled as a safety net."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.errors import ParseError
from aggregator.fetch import Fetcher, FetchLimits
from aggregator.ingest.batching import BatchingSaver
from aggregator.pipeline import Pipeline, PipelineSettings
from aggregator.records import FeedSpec, FeedState
from aggregator.store import Store, open_store
from httpserver import FixtureServer
from ingest import rows
from test_websub import atom

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.upgrade()
    try:
        yield store
    finally:
        store.close()


def poll(store: Store, spec: FeedSpec, state: FeedState, push: bytes | None = None) -> object:
    async def go() -> object:
        limits = FetchLimits(user_agent="t", allow_private_networks=("127.0.0.0/8",))
        saver = BatchingSaver(store)
        with ThreadPoolExecutor(2) as pool:
            async with Fetcher(limits) as fetcher:
                pipeline = Pipeline(
                    fetcher, store, saver, pool, PipelineSettings(push_poll_interval=86400.0)
                )
                try:
                    if push is None:
                        return await pipeline.poll(spec, state, NOW)
                    return await pipeline.push(
                        spec,
                        state,
                        push,
                        {"Content-Type": "application/atom+xml"},
                        NOW,
                        base_url=spec.url,
                    )
                finally:
                    saver.close()

    return asyncio.run(go())


def feed_state(store: Store) -> FeedState:
    (state,) = store.feed_states(NOW, due_only=False)
    return state


@pytest.mark.parametrize("pushed", [False, True])
def test_a_live_subscription_makes_polls_rare(
    server: FixtureServer, store: Store, pushed: bool
) -> None:
    url = server.url("/feed.xml")
    server.add("/feed.xml", atom(url, "http://127.0.0.1:1/hub", [("a1", "One")]))
    spec = FeedSpec(url=url, full_text=False)
    store.sync_feeds([spec], NOW)
    push_until = NOW + timedelta(days=9) if pushed else None
    outcome = poll(store, spec, FeedState(id=feed_state(store).id, url=url, push_until=push_until))
    assert outcome.push_hub == "http://127.0.0.1:1/hub"
    assert outcome.push_topic == url
    wait = feed_state(store).next_check_at - NOW  # type: ignore[operator]
    if pushed:  # the daily safety net
        assert timedelta(hours=23) < wait <= timedelta(days=1, seconds=1)
    else:  # the usual 30 min, ±10 %
        assert timedelta(minutes=26) < wait < timedelta(minutes=34)


def test_a_push_is_stored_like_a_poll_but_is_not_one(server: FixtureServer, store: Store) -> None:
    url = server.url("/feed.xml")
    server.add("/feed.xml", atom(url, None, [("a1", "One")]))
    spec = FeedSpec(url=url, full_text=False)
    store.sync_feeds([spec], NOW)
    state = feed_state(store)
    poll(store, spec, state)
    db = f"sqlite:///{store.engine.url.database}"
    before = rows(db, "SELECT last_polled_at, etag, next_check_at, last_status FROM feeds")
    requests = len(server.requests)
    doc = atom(url, None, [("a1", "One"), ("a2", "Two")]).encode()
    outcome = poll(store, spec, state, push=doc)
    assert outcome.new_items == 1
    assert sorted(str(r[0]) for r in rows(db, "SELECT title FROM items")) == ["One", "Two"]
    assert len(server.requests) == requests  # nothing fetched
    assert rows(db, "SELECT last_polled_at, etag, next_check_at, last_status FROM feeds") == before
    # the same push again: the same dedup as a poll, nothing new
    assert poll(store, spec, state, push=doc).new_items == 0
    # a body that is no feed: refused, and nothing recorded on the feed
    with pytest.raises(ParseError):
        poll(store, spec, state, push=b"<html><body>hello</body></html>")
    assert rows(db, "SELECT error_count, last_error FROM feeds") == [(0, None)]
