"""Full-text indexing apart from the item inserts (SQLite, migration 0014): new items are
queued, indexed in batches by the save path, and a search says how far behind it is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from aggregator.ingest.batching import BatchingSaver
from aggregator.records import FeedSpec, FeedUpdate, PollToSave
from aggregator.store import Store, open_store
from searchdata import entry, found

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def integrity(store: Store) -> None:
    """FTS5's own check of the index against its content table (raises if they differ;
    only meaningful with nothing queued: a queued item is in the table, not the index)."""
    with store.locked_tx() as conn:
        conn.execute(text("INSERT INTO items_fts(items_fts, rank) VALUES ('integrity-check', 1)"))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = open_store(f"sqlite:///{tmp_path / 'q.db'}")
    store.upgrade()
    store.sync_feeds([FeedSpec(url="https://q.example/feed")], NOW)
    return store


def test_new_items_are_queued_then_indexed_and_the_lag_says_so(store: Store) -> None:
    (state,) = store.feed_states(NOW)
    saver = BatchingSaver(store)
    try:
        update = FeedUpdate(polled_at=NOW, status=200, ok=True, next_check_at=NOW)
        poll = PollToSave(state.id, update, tuple(entry(n, "walrus") for n in range(3)))
        assert saver.submit(poll).result(timeout=30).new_items == 3
        # committed but not indexed yet (the first pass comes INDEX_EVERY seconds later)
        lag = store.search_lag()
        assert lag.items == 3 and lag.oldest == NOW
        assert found(store, "walrus") == set()
    finally:
        saver.close()  # indexes what is left before it stops
    assert store.search_lag().items == 0
    assert found(store, "walrus") == {"walrus 0", "walrus 1", "walrus 2"}
    integrity(store)
    store.close()


def test_changes_and_deletes_keep_the_index_right_queued_or_not(store: Store) -> None:
    (state,) = store.feed_states(NOW)
    saver = BatchingSaver(store)
    update = FeedUpdate(polled_at=NOW, status=200, ok=True, next_check_at=NOW)
    saver.submit(PollToSave(state.id, update, (entry(0, "otter"), entry(1, "otter")))).result()
    saver.close()  # 0 and 1 are indexed
    later = FeedUpdate(polled_at=NOW + timedelta(hours=1), status=200, ok=True, next_check_at=NOW)
    saver = BatchingSaver(store)
    saver.submit(PollToSave(state.id, later, (entry(2, "otter"), entry(3, "otter")))).result()
    assert store.search_lag().items == 2  # 2 and 3 are queued
    with store.locked_tx() as conn:
        # an indexed item and a queued one renamed; an indexed item and a queued one gone
        conn.execute(text("UPDATE items SET title = 'beaver 0' WHERE guid = '0'"))
        conn.execute(text("UPDATE items SET title = 'beaver 2' WHERE guid = '2'"))
        conn.execute(text("DELETE FROM items WHERE guid IN ('1', '3')"))
    assert store.search_lag().items == 1  # 3 left the queue with its row
    saver.close()
    integrity(store)
    assert found(store, "beaver") == {"beaver 0", "beaver 2"}
    # the texts still say otter: the renamed items are found by it, the deleted ones not
    assert found(store, "otter") == {"beaver 0", "beaver 2"}
    store.close()


def test_a_search_over_http_says_how_far_behind_the_index_is(store: Store) -> None:
    import httpx

    from aggregator.config import parse_config
    from aggregator.server import create_app
    from appserver import running

    (state,) = store.feed_states(NOW)
    saver = BatchingSaver(store)
    update = FeedUpdate(polled_at=NOW, status=200, ok=True, next_check_at=NOW)
    saver.submit(PollToSave(state.id, update, (entry(0, "heron"), entry(1, "heron")))).result()
    config = parse_config({"feeds": [{"url": "https://q.example/feed"}]})
    app = create_app(store, lambda: config, clock=lambda: NOW + timedelta(seconds=5))
    try:
        with running(app) as base:
            behind = httpx.get(f"{base}/items", params={"search": "heron"})
            assert behind.status_code == 200 and behind.json()["items"] == []
            assert behind.headers["X-Search-Lag"] == "2 items, 5 s"
            saver.close()
            caught_up = httpx.get(f"{base}/export/jsonl", params={"search": "heron"})
            assert caught_up.headers["X-Search-Lag"] == "0"
            assert len(caught_up.text.splitlines()) == 2
            plain = httpx.get(f"{base}/items")  # no search: no header
            assert "X-Search-Lag" not in plain.headers
    finally:
        saver.close()
        store.close()


def test_the_index_merges_its_segments_sixteen_at_a_time(store: Store) -> None:
    """Migration 0019: FTS5's ``automerge`` is 16 (its default, 4, rewrites every term at
    twice as many levels as the index grows), and it stays a working index."""
    with store.locked_tx() as conn:
        value = conn.execute(text("SELECT v FROM items_fts_config WHERE k = 'automerge'"))
        assert value.scalar_one() == 16
    (state,) = store.feed_states(NOW)
    saver = BatchingSaver(store)
    try:
        update = FeedUpdate(polled_at=NOW, status=200, ok=True, next_check_at=NOW)
        for n in range(20):  # twenty batches: more segments than one level holds
            poll = PollToSave(state.id, update, (entry(n, "okapi"),))
            assert saver.submit(poll).result(timeout=30).new_items == 1
            store.index_search(everything=True)
    finally:
        saver.close()
    assert len(found(store, "okapi")) == 20
    integrity(store)
    store.close()
