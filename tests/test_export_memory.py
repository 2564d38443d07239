"""Exports stream: the memory an export needs does not grow with the number of rows."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from aggregator.export import ExportRequest, stream
from aggregator.store import open_store
from aggregator.store.queries import ExportFilter, Queries
from aggregator.store.tables import feeds, items, stories

ROWS = 5_000


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('big') / 'big.db'}"
    store = open_store(url)
    store.upgrade()
    start = datetime(2026, 6, 1, tzinfo=UTC)
    body = "Paragraph of text about the council and the harbour. " * 20
    with store.engine.begin() as conn:
        conn.execute(
            insert(feeds).values(id=1, url="http://example.org/feed", name="Big", created_at=start)
        )
        conn.execute(
            insert(stories),
            [
                {
                    "id": n,
                    "title": f"Story {n}",
                    "url": f"http://example.org/{n}",
                    "canonical_url": f"http://example.org/{n}",
                    "item_count": 1,
                    "first_seen_at": start + timedelta(seconds=n),
                    "last_seen_at": start + timedelta(seconds=n),
                }
                for n in range(1, ROWS + 1)
            ],
        )
        conn.execute(
            insert(items),
            [
                {
                    "id": n,
                    "feed_id": 1,
                    "entry_key": f"k{n}",
                    "url": f"http://example.org/{n}",
                    "canonical_url": f"http://example.org/{n}",
                    "title": f"Story {n}",
                    "content": f"<p>{body}</p>",
                    "text": body,
                    "content_hash": "x",
                    "story_id": n,
                    "first_seen_at": start + timedelta(seconds=n),
                    "updated_at": start + timedelta(seconds=n),
                }
                for n in range(1, ROWS + 1)
            ],
        )
    store.close()
    return url


def peak(url: str, fmt: str, limit: int) -> tuple[int, int]:
    """(peak traced bytes, bytes produced) while exporting ``limit`` rows."""
    store = open_store(url)
    try:
        now = datetime(2026, 7, 1, tzinfo=UTC)
        request = ExportRequest(
            format=fmt, filter=ExportFilter(since=datetime(2026, 1, 1, tzinfo=UTC), limit=limit)
        )
        tracemalloc.start()
        try:
            size = 0
            for chunk in stream(Queries(store), request, now=now):
                size += len(chunk)
            _current, top = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return top, size
    finally:
        store.close()


@pytest.mark.parametrize("fmt", ["jsonl", "html"])
def test_memory_stays_flat(big_db: str, fmt: str) -> None:
    # past the first two fetch batches (2 x 500 rows) the peak must not move
    small, small_size = peak(big_db, fmt, ROWS // 5)
    large, large_size = peak(big_db, fmt, ROWS)
    assert large_size > 4 * small_size  # five times the rows really were written
    # holding the rows (or the output) would take five times the memory
    assert large < 1.5 * small, (small, large)


def test_a_file_export_is_streamed_to_disk(big_db: str, tmp_path: Path) -> None:
    from aggregator.export import write_atomic

    store = open_store(big_db)
    try:
        request = ExportRequest(format="csv")
        now = datetime(2026, 7, 1, tzinfo=UTC)
        written = write_atomic(tmp_path / "all.csv", stream(Queries(store), request, now=now))
    finally:
        store.close()
    assert written == (tmp_path / "all.csv").stat().st_size
    with (tmp_path / "all.csv").open(encoding="utf-8") as handle:
        assert sum(1 for _ in handle) == ROWS + 1
