"""PostgreSQL's dedup locks, one row per key (migration 0018): two polls wait for each
other only when they share a key, whether the first one made its row or found it, and the
prune drops only the rows nobody holds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from aggregator.store import Store, open_store
from aggregator.store.index import lock, prune_key_locks

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    store = open_store(pg_url)
    store.upgrade()
    yield store
    store.close()


def waits(conn: Connection, bands: list[int], urls: list[str] = []) -> bool:  # noqa: B006
    """Whether ``lock`` on these keys has to wait (for longer than half a second)."""
    conn.execute(text("SET LOCAL lock_timeout = '500ms'"))
    try:
        with conn.begin_nested():
            lock(conn, bands=bands, sites=[], urls=urls)
    except OperationalError as exc:
        assert "lock timeout" in str(exc)
        return True
    return False


def keys(store: Store) -> set[int]:
    with store.read() as conn:
        return {int(k) for (k,) in conn.execute(text("SELECT key FROM dedup_key_locks"))}


def test_polls_wait_for_each_other_only_on_a_shared_key(store: Store) -> None:
    with store.tx() as conn:
        lock(conn, bands=[10, 20], sites=[7], urls=["https://a.example/1"])  # made, then free
    assert len(keys(store)) == 4
    with (
        store.engine.connect() as first,
        store.engine.connect() as second,
        first.begin(),
        second.begin(),
    ):
        # the first poll holds 10, 7 and a/1 (rows that exist) and 30, 40 (rows it makes)
        lock(first, bands=[10, 30, 40], sites=[7], urls=["https://a.example/1"])
        assert not waits(second, [20, 50, 60])  # nothing shared: no wait
        assert not waits(second, [], urls=["https://a.example/2"])
        assert waits(second, [10])  # an existing key it holds
        assert waits(second, [7])  # its site
        assert waits(second, [40])  # a key it inserted, not committed yet
        assert waits(second, [], urls=["https://a.example/1"])
    assert {7, 10, 20, 30, 40, 50, 60} <= keys(store) and len(keys(store)) == 9


def test_the_prune_drops_only_the_rows_nobody_holds(store: Store) -> None:
    with store.tx() as conn:
        lock(conn, bands=list(range(1, 8)), sites=[], urls=[])
    with store.engine.connect() as holder, holder.begin():
        lock(holder, bands=[2, 3], sites=[], urls=[])
        with store.tx() as conn:
            assert prune_key_locks(conn, limit=3) == 3
        with store.tx() as conn:
            assert prune_key_locks(conn) == 2  # the rest, except the two held
        assert keys(store) == {2, 3}
    with store.tx() as conn:
        assert prune_key_locks(conn) == 2
    assert keys(store) == set()
