"""PostgreSQL full-text search from stored vectors, indexed in batches (migration 0017):
the save path queues new items and indexes them a few seconds later, changes are
indexed at once, several indexers never take the same items, and the migration keeps
every stored item searchable both ways."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from aggregator.ingest.direct import DirectSaver
from aggregator.records import CleanEntry, FeedSpec, FeedUpdate, PollToSave
from aggregator.store import Store, open_store
from aggregator.store.search import PG_VECTOR, index_queued
from searchdata import entry, found

pytestmark = pytest.mark.postgres
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
UPDATE = FeedUpdate(polled_at=NOW, status=200, ok=True, next_check_at=NOW)


def count(store: Store, sql: str) -> int:
    with store.read() as conn:
        return int(conn.execute(text(sql)).scalar_one())


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    store = open_store(pg_url)
    store.upgrade()
    store.sync_feeds([FeedSpec(url="https://q.example/feed")], NOW)
    yield store
    store.close()


def poll(store: Store, *entries: CleanEntry) -> PollToSave:
    (state,) = store.feed_states(NOW)
    return PollToSave(state.id, UPDATE, entries)


def test_the_save_path_indexes_new_items_in_passes_and_the_lag_says_so(store: Store) -> None:
    saver = DirectSaver(store)
    assert saver.save_now(poll(store, entry(0, "walrus"))).new_items == 1
    # the first save of a saver runs a pass at once: nothing is left queued
    assert found(store, "walrus") == {"walrus 0"} and store.search_lag().items == 0
    # the next pass is due INDEX_EVERY seconds later: these two wait in the queue
    saver.save_now(poll(store, entry(1, "walrus"), entry(2, "walrus")))
    lag = store.search_lag()
    assert lag.items == 2 and lag.oldest == NOW
    assert found(store, "walrus") == {"walrus 0"}
    saver.close()  # indexes what is left
    assert store.search_lag().items == 0
    assert found(store, "walrus") == {"walrus 0", "walrus 1", "walrus 2"}
    assert count(store, "SELECT count(*) FROM item_search") == 3


def test_changes_are_indexed_at_once_and_deletes_take_their_vectors(store: Store) -> None:
    saver = DirectSaver(store)
    saver.save_now(poll(store, entry(0, "otter"), entry(1, "otter")))  # indexed
    saver.save_now(poll(store, entry(2, "otter"), entry(3, "otter")))  # queued
    assert store.search_lag().items == 2
    with store.tx() as conn:
        conn.execute(text("UPDATE items SET title = 'beaver 0' WHERE guid = '0'"))
        conn.execute(text("UPDATE items SET title = 'beaver 2' WHERE guid = '2'"))
        conn.execute(text("UPDATE items SET author = 'x' WHERE guid = '1'"))  # not indexed
        conn.execute(text("DELETE FROM items WHERE guid IN ('1', '3')"))
    # both renamed items are found by their new title now, the queued one included
    assert found(store, "beaver") == {"beaver 0", "beaver 2"}
    assert store.search_lag().items == 1  # 2 (still queued); 3 left with its row
    saver.close()
    assert found(store, "otter") == {"beaver 0", "beaver 2"}  # by their texts
    assert count(store, "SELECT count(*) FROM search_queue") == 0  # 3's id dropped too
    assert count(store, "SELECT count(*) FROM item_search") == 2


def test_two_indexers_take_different_items_without_waiting(store: Store) -> None:
    with store.tx() as conn:
        conn.execute(text("DROP TRIGGER items_search_ai ON items"))  # queue by hand below
    DirectSaver(store).save_now(poll(store, *(entry(n, "heron") for n in range(7))))
    with store.tx() as conn:
        conn.execute(text("INSERT INTO search_queue SELECT id FROM items"))
    with store.engine.connect() as first, store.engine.connect() as second:
        for conn in (first, second):
            conn.execute(text("SET lock_timeout = '2s'"))  # a wait would fail the test
        assert index_queued(first, limit=4) == 4  # holds its four until it commits
        assert index_queued(second, limit=10) == 3  # the other three, at once
        assert index_queued(second, limit=10) == 0
        second.commit()
        first.commit()
    assert found(store, "heron") == {f"heron {n}" for n in range(7)}
    assert count(store, "SELECT count(*) FROM search_queue") == 0


def test_the_migration_indexes_stored_items_and_its_downgrade_restores_the_old_index(
    store: Store,
) -> None:
    saver = DirectSaver(store)
    saver.save_now(poll(store, entry(0, "ibis")))  # indexed
    saver.save_now(poll(store, entry(1, "ibis")))  # still queued
    old = (
        "SELECT count(*) FROM items WHERE to_tsvector('simple'::regconfig,"
        " left(coalesce(title, '') || ' ' || coalesce(text, ''), 100000))"
        " @@ websearch_to_tsquery('simple', 'ibis')"
    )
    indexes = "SELECT count(*) FROM pg_indexes WHERE indexname = '{}'"
    store.downgrade("0016")  # the store as every release before 0017 left it
    assert count(store, indexes.format("ix_items_search")) == 1
    assert count(store, "SELECT count(*) FROM pg_tables WHERE tablename = 'item_search'") == 0
    assert count(store, old) == 2
    with store.tx() as conn:  # an item stored by an older release
        conn.execute(text("UPDATE items SET title = 'ibis 2' WHERE guid = '1'"))
    store.upgrade()  # every stored item gets its vector, none is left queued
    assert count(store, "SELECT count(*) FROM search_queue") == 0
    assert found(store, "ibis") == {"ibis 0", "ibis 2"}
    assert count(store, indexes.format("ix_items_search")) == 0
    assert count(store, indexes.format("ix_item_search")) == 1


def test_the_save_path_and_the_update_trigger_compute_the_same_vector() -> None:
    """The batch (``store.search.PG_VECTOR``) and migration 0017's update trigger must
    write the same vector for the same item, or a changed item would be found by other
    words than a new one."""
    path = Path(__file__).parents[1] / "migrations" / "versions" / "0017_pg_search_table.py"
    spec = importlib.util.spec_from_file_location("migration_0017", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert PG_VECTOR.replace("(i.", "(") == migration.VECTOR
    trigger = next(s for s in migration.UPGRADE if "items_search_changed()" in s)
    assert migration.VECTOR.replace("(title", "(NEW.title").replace("(text", "(NEW.text") in trigger
