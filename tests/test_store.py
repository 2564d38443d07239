"""Migrations and store behaviour on SQLite and PostgreSQL (the db_url fixture runs both)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from aggregator.config import parse_config
from aggregator.records import FeedUpdate
from aggregator.store import open_store

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

REQUIRED = {
    "feeds": {
        "id",
        "url",
        "name",
        "etag",
        "last_modified",
        "last_polled_at",
        "last_status",
        "last_error",
        "error_count",
        "next_check_at",
        "disabled_reason",
    },
    "items": {
        "id",
        "feed_id",
        "guid",
        "url",
        "canonical_url",
        "title",
        "author",
        "published_at",
        "summary",
        "content",
        "text",
        "story_id",
        "first_seen_at",
        "updated_at",
    },
    "stories": {"id", "title", "url", "first_seen_at", "item_count"},
}


def test_migrations_from_empty(db_url: str) -> None:
    store = open_store(db_url)
    try:
        store.upgrade()
        store.upgrade()  # idempotent
    finally:
        store.close()
    engine = create_engine(db_url)
    try:
        inspector = inspect(engine)
        tables = set(inspector.get_table_names())
        assert {"feeds", "items", "stories", "alembic_version"} <= tables
        for table, columns in REQUIRED.items():
            present = {c["name"] for c in inspector.get_columns(table)}
            assert columns <= present, (table, columns - present)
        uniques = inspector.get_unique_constraints("items")
        assert any(set(u["column_names"]) == {"feed_id", "entry_key"} for u in uniques)
    finally:
        engine.dispose()


def test_sync_feeds_adds_updates_and_removes(db_url: str) -> None:
    store = open_store(db_url)
    store.upgrade()
    try:
        config = parse_config(
            {"feeds": [{"url": "https://a.example/f"}, {"url": "https://b.example/f"}]}
        )
        store.sync_feeds(config.feeds, NOW)
        assert len(store.feed_states(NOW)) == 2
        smaller = parse_config({"feeds": [{"url": "https://a.example/f", "name": "A"}]})
        store.sync_feeds(smaller.feeds, NOW)
        states = store.feed_states(NOW, due_only=False)
        assert [s.url for s in states] == ["https://a.example/f"]
        listed = {row.url: row for row in store.list_feeds()}
        assert listed["https://b.example/f"].removed and listed["https://a.example/f"].name == "A"
    finally:
        store.close()


def test_retired_feed_stays_retired_until_enabled_and_hold_applies_to_host(db_url: str) -> None:
    store = open_store(db_url)
    store.upgrade()
    try:
        config = parse_config(
            {
                "feeds": [
                    {"url": "https://gone.example/feed"},
                    {"url": "https://busy.example/a"},
                    {"url": "https://busy.example/b"},
                ]
            }
        )
        store.sync_feeds(config.feeds, NOW)
        ids = {s.url: s.id for s in store.feed_states(NOW)}
        store.record_poll(
            ids["https://gone.example/feed"],
            FeedUpdate(
                polled_at=NOW,
                status=410,
                ok=False,
                next_check_at=NOW + timedelta(days=3650),
                error="HTTP 410",
                error_count=1,
                disabled_reason="retired: HTTP 410 Gone",
            ),
        )
        hold = NOW + timedelta(hours=2)
        store.record_poll(
            ids["https://busy.example/a"],
            FeedUpdate(
                polled_at=NOW,
                status=429,
                ok=False,
                next_check_at=NOW + timedelta(minutes=10),
                error="HTTP 429",
                error_count=1,
                hold_until=hold,
                hold_host="busy.example",
            ),
        )
        later = NOW + timedelta(hours=1)
        assert store.feed_states(later) == []
        every = {s.url: s for s in store.feed_states(later, due_only=False)}
        assert every["https://busy.example/b"].hold_until == hold
        assert every["https://busy.example/b"].next_check_at == hold
        assert every["https://gone.example/feed"].disabled_reason
        assert store.enable_feed("https://gone.example/feed", later)
        assert [s.url for s in store.feed_states(later)] == ["https://gone.example/feed"]
    finally:
        store.close()


def test_confirmed_permanent_redirect_rewrites_the_feed_url(db_url: str) -> None:
    store = open_store(db_url)
    store.upgrade()
    try:
        config = parse_config({"feeds": [{"url": "https://old.example/feed"}]})
        store.sync_feeds(config.feeds, NOW)
        (state,) = store.feed_states(NOW)
        store.record_poll(
            state.id,
            FeedUpdate(
                polled_at=NOW,
                status=200,
                ok=True,
                next_check_at=NOW,
                new_url="https://new.example/feed",
            ),
        )
        (moved,) = store.feed_states(NOW, due_only=False)
        assert moved.url == "https://new.example/feed"
        assert moved.configured_url == "https://old.example/feed"
        # the operator then lists the new URL: same feed, no duplicate row
        store.sync_feeds(parse_config({"feeds": [{"url": "https://new.example/feed"}]}).feeds, NOW)
        rows = store.list_feeds()
        assert [(r.url, r.removed) for r in rows] == [("https://new.example/feed", False)]
    finally:
        store.close()


def test_claims_never_hand_one_feed_to_two_workers(db_url: str) -> None:
    store = open_store(db_url)
    store.upgrade()
    try:
        urls = [f"https://h{n}.example/feed" for n in range(10)]
        store.sync_feeds(parse_config({"feeds": [{"url": u} for u in urls]}).feeds, NOW)
        first = store.claim_feeds("w1", NOW, limit=6, lease_seconds=60)
        second = store.claim_feeds("w2", NOW, limit=6, lease_seconds=60)
        assert len(first) == 6 and len(second) == 4
        assert not {s.id for s in first} & {s.id for s in second}
        assert store.claim_feeds("w3", NOW, limit=6, lease_seconds=60) == []
        # an expired lease (a dead worker) is claimable again; a renewed one is not
        store.renew_leases("w1", [first[0].id], NOW + timedelta(seconds=50), 60)
        later = NOW + timedelta(seconds=61)
        again = store.claim_feeds("w3", later, limit=20, lease_seconds=60)
        assert first[0].id not in {s.id for s in again} and len(again) == 9
        store.release_leases("w3")
        assert len(store.claim_feeds("w4", later, limit=20, lease_seconds=60)) == 9
    finally:
        store.close()


def test_head_revision_is_read_from_the_migration_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start-up check that skips Alembic reads revisions in either quote style (the
    template writes repr()), and gives up (None: Alembic decides) on anything unclear."""
    import aggregator.store.store as store_module

    versions = tmp_path / "versions"
    versions.mkdir()
    monkeypatch.setattr(store_module, "_migrations_dir", lambda: tmp_path)
    (versions / "a.py").write_text('revision = "0001"\ndown_revision = None\n')
    (versions / "b.py").write_text("revision = '0002'\ndown_revision = '0001'\n")
    assert store_module._head_revisions() == {"0002"}
    (versions / "c.py").write_text("revision: str = '0003'\ndown_revision = '0002'\n")
    assert store_module._head_revisions() == {"0003"}
    (versions / "d.py").write_text("revision = '0004'\ndown_revision = '0002'\n")
    assert store_module._head_revisions() is None  # two heads
    (versions / "d.py").write_text("revision = '0004'\ndown_revision = ('0003', '0002')\n")
    assert store_module._head_revisions() == {"0004"}
    (versions / "e.py").write_text("revision = make_id()\n")
    assert store_module._head_revisions() is None
