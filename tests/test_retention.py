"""Retention (issue 19): items deleted by age and count, texts dropped, never what is
still in its feed's current document; tombstones keep deleted entries from coming back
as new; stories, the full-text index and the dedup index follow. Real feeds over HTTP on
127.0.0.1, real SQLite files and the real PostgreSQL server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from aggregator import retention
from aggregator.config import Config, load_config
from aggregator.ingest.prune import PruneReport, prune_config
from aggregator.records import ItemAge, Retention
from aggregator.scheduler import Runner, utcnow
from aggregator.store import Store, open_store
from aggregator.store.queries import ExportFilter, Queries
from builders import paragraph, rss
from conftest import write_config
from httpserver import FixtureServer
from ingest import rows


def entry(feed: str, n: int, *, link: str | None = None, seed: int | None = None) -> dict[str, str]:
    return {
        "title": f"{feed} story {n} title{feed}{n}",
        "link": link or f"https://{feed}.example/{n}",
        "guid": f"urn:test:{feed}-{n}",
        "description": f"{paragraph(seed if seed is not None else hash(feed) % 1000 + n)} "
        f"marker{feed}{n}",
    }


SHARED = {"link": "https://shared.example/story", "seed": 999}


def serve(server: FixtureServer, feed: str, numbers: Sequence[int]) -> str:
    items = [entry(feed, n, **(SHARED if n == 0 and feed in "ab" else {})) for n in numbers]  # type: ignore[arg-type]
    return server.add(f"/{feed}.xml", rss(feed, items))


def set_first_seen(db_url: str, stamps: dict[str, datetime]) -> None:
    """Items by entry key look first seen at the given times."""
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            for key, when in stamps.items():
                value = when.replace(tzinfo=None) if engine.dialect.name == "sqlite" else when
                conn.execute(
                    text("UPDATE items SET first_seen_at = :t WHERE guid = :k"),
                    {"t": value, "k": f"urn:test:{key}"},
                )
    finally:
        engine.dispose()


def keys(db_url: str, sql: str) -> set[str]:
    """Entry keys or guids (``guid:urn:test:x``) read by ``sql``, as ``x``."""
    return {str(r[0]).rsplit(":", 1)[-1] for r in rows(db_url, sql)}


def fts_integrity_check(db_url: str) -> None:
    """SQLite: the full-text index agrees with the items (raises otherwise)."""
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO items_fts(items_fts) VALUES('integrity-check')"))
    finally:
        engine.dispose()


def search(store: Store, words: str) -> set[str]:
    store.index_search(everything=True)
    return {i.title or "" for i in Queries(store).iter_items(ExportFilter(search=words))}


def prune(
    store: Store, config: Config, now: datetime | None = None, **options: object
) -> PruneReport:
    return prune_config(store, config.feeds, config.retention, now or utcnow(), **options)


class Polls:
    """One runner (one process pool) for every poll of a test."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config, self.store = config, store

    async def __aenter__(self) -> Polls:
        await asyncio.to_thread(self.store.sync_feeds, self.config.feeds, utcnow())
        self.runner = Runner(self.config, self.store)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.close()

    async def poll(self) -> int:
        summary = await self.runner.run_once()
        assert summary.failed == 0
        return summary.new_items


def test_retention_deletes_what_left_the_feed_keeps_stories_and_search_consistent(
    server: FixtureServer, tmp_path: Path, db_url: str
) -> None:
    feeds = [{"url": serve(server, "a", range(6))}, {"url": serve(server, "b", range(3))}]
    cfg = write_config(
        tmp_path / "feeds.yaml", feeds, full_text=False, retention={"max_age": "90d"}
    )
    config = load_config(cfg, db_url)
    store = open_store(db_url)
    store.upgrade()
    old = utcnow() - timedelta(days=400)

    async def scenario() -> None:
        async with Polls(config, store) as polls:
            assert await polls.poll() == 9
            # a-0 and b-0 are one story (same link, same text)
            assert rows(db_url, "SELECT COUNT(*) FROM stories") == [(8,)]
            serve(server, "a", [3, 4, 5])  # a-0, a-1, a-2 leave feed a
            assert await polls.poll() == 0
            set_first_seen(db_url, {f"{f}-{n}": old for f in "ab" for n in range(6)})
            shared = rows(
                db_url,
                "SELECT s.id, i.id FROM stories s JOIN items i ON i.story_id = s.id "
                "WHERE i.guid = 'urn:test:b-0'",
            )[0]

            # dry run: says what would go, removes nothing
            dry = prune(store, config, dry_run=True)
            assert (dry.total.items, dry.total.stories, dry.total.kept_in_feed) == (3, 2, 6)
            assert dry.total.bytes > 0
            assert rows(db_url, "SELECT COUNT(*) FROM items") == [(9,)]
            assert rows(db_url, "SELECT COUNT(*) FROM item_tombstones") == [(0,)]

            report = prune(store, config)
            assert (report.total.items, report.total.stories) == (3, 2)
            assert report.total.kept_in_feed == 6  # old, but still in their feeds
            assert keys(db_url, "SELECT guid FROM items") == {
                "a-3", "a-4", "a-5", "b-0", "b-1", "b-2"
            }  # fmt: skip
            assert keys(db_url, "SELECT entry_key FROM item_tombstones") == {"a-0", "a-1", "a-2"}
            # the shared story lost a-0 and stays consistent; the others went with theirs
            assert rows(db_url, "SELECT COUNT(*) FROM stories") == [(6,)]
            story = rows(
                db_url,
                "SELECT item_count, representative_item_id, first_seen_at, last_seen_at "
                f"FROM stories WHERE id = {shared[0]}",
            )[0]
            assert story[:2] == (1, shared[1])
            assert story[2] == story[3]
            assert rows(
                db_url,
                "SELECT COUNT(*) FROM stories s WHERE item_count <> "
                "(SELECT COUNT(*) FROM items i WHERE i.story_id = s.id) OR NOT EXISTS "
                "(SELECT 1 FROM items i WHERE i.id = s.representative_item_id "
                "AND i.story_id = s.id)",
            ) == [(0,)]
            # the dedup index and the full-text index followed
            assert rows(
                db_url,
                "SELECT COUNT(*) FROM dedup_bands WHERE item_id NOT IN (SELECT id FROM items)",
            ) == [(0,)]
            assert search(store, "markera1") == set()
            assert search(store, "markerb1") == {"b story 1 titleb1"}
            if store.dialect == "sqlite":
                fts_integrity_check(db_url)

            # a-1 comes back into its feed: known by its tombstone, not stored again
            serve(server, "a", [1, 3, 4, 5])
            assert await polls.poll() == 0
            assert rows(db_url, "SELECT COUNT(*) FROM items WHERE guid = 'urn:test:a-1'") == [(0,)]
            # tombstones outlive their deletion by a grace period, then go once their
            # entry is not in the feed's document
            assert prune(store, config).total.tombstones_pruned == 0
            later = utcnow() + retention.TOMBSTONE_GRACE + timedelta(hours=1)
            assert prune(store, config, later).total.tombstones_pruned == 2
            assert keys(db_url, "SELECT entry_key FROM item_tombstones") == {"a-1"}
            serve(server, "a", [3, 4, 5])
            assert await polls.poll() == 0
            assert prune(store, config, later).total.tombstones_pruned == 1
            assert rows(db_url, "SELECT COUNT(*) FROM item_tombstones") == [(0,)]
            assert rows(db_url, "SELECT COUNT(*) FROM items") == [(6,)]

    try:
        asyncio.run(scenario())
    finally:
        store.close()


def test_count_rule_text_rule_and_per_feed_overrides(
    server: FixtureServer, tmp_path: Path, db_url: str
) -> None:
    feeds = [
        # the newest 3 kept by count
        {"url": serve(server, "c", range(5)), "retention": {"max_items_per_feed": 3}},
        # texts dropped after 30 days
        {"url": serve(server, "d", range(2)), "retention": {"drop_text_after": "30d"}},
        # no age limit for this one
        {"url": serve(server, "e", range(2)), "retention": {"max_age": None}},
    ]
    cfg = write_config(
        tmp_path / "feeds.yaml", feeds, full_text=False, retention={"max_age": "90d"}
    )
    config = load_config(cfg, db_url)
    assert [f.retention for f in config.feeds] == [
        Retention(max_age=90 * 86400, max_items_per_feed=3),
        Retention(max_age=90 * 86400, drop_text_after=30 * 86400),
        None,
    ]
    store = open_store(db_url)
    store.upgrade()
    now = utcnow()

    async def scenario() -> None:
        async with Polls(config, store) as polls:
            assert await polls.poll() == 9
            serve(server, "c", [0, 4])  # c-0, the oldest, is still served
            serve(server, "e", [1])
            assert await polls.poll() == 0
            set_first_seen(db_url, {f"c-{n}": now - timedelta(hours=10 - n) for n in range(5)})
            set_first_seen(db_url, {"d-0": now - timedelta(days=40), "e-0": now - timedelta(days=400)})  # fmt: skip
            report = prune(store, config, now)
            assert (report.total.items, report.total.texts) == (1, 1)
            assert report.total.kept_in_feed == 1  # c-0
            assert keys(db_url, "SELECT guid FROM items WHERE guid LIKE 'urn:test:c-%'") == {
                "c-0", "c-2", "c-3", "c-4"
            }  # fmt: skip
            # e-0 left its feed long ago; its feed keeps items of any age
            assert rows(db_url, "SELECT COUNT(*) FROM items WHERE guid = 'urn:test:e-0'") == [(1,)]
            # d-0 keeps its row and metadata, without content, text or shingles
            dropped = rows(
                db_url,
                "SELECT title, url, story_id IS NOT NULL, content, text, shingles, summary "
                "FROM items WHERE guid = 'urn:test:d-0'",
            )[0]
            assert dropped[:3] == ("d story 0 titled0", "https://d.example/0", True)
            assert dropped[3:6] == (None, None, None)
            assert rows(
                db_url,
                "SELECT text IS NOT NULL FROM items WHERE guid = 'urn:test:d-1'",
            ) == [(True,)]
            assert rows(
                db_url,
                "SELECT COUNT(*) FROM dedup_bands b JOIN items i ON i.id = b.item_id "
                "WHERE i.guid = 'urn:test:d-0'",
            ) == [(0,)]
            assert search(store, "markerd1") == {"d story 1 titled1"}
            assert search(store, "titled0") == {"d story 0 titled0"}
            if store.dialect == "sqlite":
                assert search(store, "markerd0") == set()
                fts_integrity_check(db_url)
            # a second pass finds nothing more to do
            again = prune(store, config, now)
            assert (again.total.items, again.total.texts) == (0, 0)

    try:
        asyncio.run(scenario())
    finally:
        store.close()


def test_the_rule_is_pure() -> None:
    now = datetime(2026, 6, 1, tzinfo=utcnow().tzinfo)
    cut = retention.cutoffs(Retention(max_age=86400, drop_text_after=3600), now)
    old, mid, new = now - timedelta(days=2), now - timedelta(hours=2), now
    items = [
        ItemAge(1, "old-gone", old, heavy=True),
        ItemAge(2, "old-served", old, heavy=True),
        ItemAge(3, "mid", mid, heavy=True),
        ItemAge(4, "mid-slim", mid, heavy=False),
        ItemAge(5, "new", new, heavy=True, beyond_newest=True),
    ]
    due = retention.due(cut, items, {"old-served", "mid", "new"})
    assert [a.item_id for a in due.delete] == [1]
    assert due.drop_text == (2, 3)
    assert due.kept_in_feed == 2
    # no document recorded: nothing deleted, texts still dropped
    assert retention.due(cut, items, None).delete == ()
    stale = retention.stale_tombstones(
        [("gone", now - timedelta(days=8)), ("fresh", now), ("served", old)], {"served"}, now
    )
    assert stale == ["gone"]


def test_the_document_is_recorded_once_per_change(
    server: FixtureServer, tmp_path: Path, db_url: str
) -> None:
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": serve(server, "f", range(2))}])
    config = load_config(cfg, db_url)
    store = open_store(db_url)
    store.upgrade()

    async def scenario() -> None:
        async with Polls(config, store) as polls:
            await polls.poll()
            first = rows(db_url, "SELECT entry_keys, updated_at FROM feed_documents")
            assert json.loads(str(first[0][0])) == ["guid:urn:test:f-0", "guid:urn:test:f-1"]
            await polls.poll()  # the same document: the row is not written again
            assert rows(db_url, "SELECT entry_keys, updated_at FROM feed_documents") == first
            server.add("/f.xml", b"", status=500)  # a failure keeps the record
            await polls.runner.run_once()
            assert rows(db_url, "SELECT entry_keys, updated_at FROM feed_documents") == first
            serve(server, "f", [1, 2])
            await polls.poll()
            keys_now = rows(db_url, "SELECT entry_keys FROM feed_documents")[0][0]
            assert json.loads(str(keys_now)) == ["guid:urn:test:f-1", "guid:urn:test:f-2"]

    try:
        asyncio.run(scenario())
    finally:
        store.close()


@pytest.mark.parametrize("value", ["soon", "30s"])
def test_bad_retention_is_a_config_error(tmp_path: Path, value: str) -> None:
    from aggregator.errors import ConfigError

    cfg = write_config(tmp_path / "feeds.yaml", [], retention={"max_age": value})
    with pytest.raises(ConfigError, match="max_age"):
        load_config(cfg)
