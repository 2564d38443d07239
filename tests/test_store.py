"""Migrations and store behaviour on SQLite and PostgreSQL (the db_url fixture runs both)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, inspect, text

from aggregator.config import parse_config
from aggregator.errors import StoreError
from aggregator.ingest.direct import save_now
from aggregator.records import FeedUpdate, PollToSave
from aggregator.store import Store, feedrows, open_store

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def record_poll(store: Store, feed_id: int, update: FeedUpdate) -> None:
    """A poll without entries, saved (its feed's row only)."""
    save_now(store, PollToSave(feed_id, update))


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
        assert store.count_enabled_feeds() == 1  # the removed feed is not counted
        listed = {row.url: row for row in store.list_feeds()}
        assert listed["https://b.example/f"].removed and listed["https://a.example/f"].name == "A"
    finally:
        store.close()


def test_sync_feeds_writes_only_what_changed(db_url: str) -> None:
    """A restart with the same config writes no row; a changed setting updates only its
    feed (every feed was rewritten on every start before: 0.25 s for 2 000 feeds)."""
    store = open_store(db_url)
    store.upgrade()
    written: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            written.append(statement)

    engines = {id(store.engine): store.engine, id(store.write_engine): store.write_engine}
    try:
        feeds = [{"url": f"https://{n}.example/f", "tags": ["x"], "interval": 600} for n in "abc"]
        config = parse_config({"feeds": feeds})
        store.sync_feeds(config.feeds, NOW)
        for engine in engines.values():
            event.listen(engine, "before_cursor_execute", count)
        store.sync_feeds(config.feeds, NOW + timedelta(hours=1))
        assert written == []
        feeds[1] = {**feeds[1], "name": "B", "tags": ["x", "y"]}
        store.sync_feeds(parse_config({"feeds": feeds}).feeds, NOW + timedelta(hours=2))
        assert len(written) == 1
        listed = {row.url: row for row in store.list_feeds()}
        assert listed["https://b.example/f"].name == "B"
        with store.engine.connect() as conn:
            rows = conn.execute(text("SELECT url, tags FROM feeds")).all()
        # SQLite hands back the JSON text, PostgreSQL the decoded value
        tags = {url: json.loads(v) if isinstance(v, str) else v for url, v in rows}
        assert tags["https://b.example/f"] == ["x", "y"]
        assert tags["https://c.example/f"] == ["x"]
        assert listed["https://a.example/f"].name is None
    finally:
        store.close()


def test_feed_rows_of_many_polls_are_written_one_statement_per_shape(db_url: str) -> None:
    """``feedrows.write_feeds`` (a batch of feed-only polls from the writer process): polls that
    set the same columns share one executemany; a hold is applied after them, so a feed
    of the held host written in the same batch ends up held."""
    store = open_store(db_url)
    store.upgrade()
    written: list[tuple[str, int]] = []

    def count(
        conn: object, cursor: object, statement: str, params: object, ctx: object, many: bool
    ) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            written.append((statement, len(params) if many else 1))  # type: ignore[arg-type]

    try:
        urls = [f"https://{h}.example/f{n}" for h, n in ("a1", "a2", "a3", "b1", "c1", "c2")]
        store.sync_feeds(parse_config({"feeds": [{"url": u} for u in urls]}).feeds, NOW)
        ids = {s.url: s.id for s in store.feed_states(NOW + timedelta(days=1))}
        later = NOW + timedelta(hours=1)
        hold = NOW + timedelta(hours=6)
        not_modified = FeedUpdate(
            polled_at=NOW, status=304, ok=True, next_check_at=later, keep_validators=True
        )
        updates = [
            *[(ids[u], not_modified) for u in urls[:3]],
            (
                ids[urls[3]],
                FeedUpdate(polled_at=NOW, status=200, ok=True, next_check_at=later, etag='"e"'),
            ),
            (
                ids[urls[4]],
                FeedUpdate(
                    polled_at=NOW,
                    status=429,
                    ok=False,
                    next_check_at=hold,
                    error_count=1,
                    hold_until=hold,
                    hold_host="c.example",
                ),
            ),
            (ids[urls[5]], not_modified),  # another feed of the held host, same batch
        ]
        engine = store.write_engine
        event.listen(engine, "before_cursor_execute", count)
        with store.tx() as conn:
            feedrows.write_feeds(conn, updates)
        event.remove(engine, "before_cursor_execute", count)
        # the four 304s: one statement; the 200: one; the hold: its row and two host-wide
        assert sorted(n for _s, n in written) == [1, 1, 1, 1, 4]
        with store.engine.connect() as conn:
            got = {
                url: (status, etag, next_check)
                for url, status, etag, next_check in conn.execute(
                    text("SELECT url, last_status, etag, next_check_at FROM feeds")
                )
            }
        assert [got[u][0] for u in urls] == [304, 304, 304, 200, 429, 304]
        assert got[urls[3]][1] == '"e"'
        held = {u for u in urls if str(got[u][2]).startswith(hold.strftime("%Y-%m-%d %H"))}
        assert held == {urls[4], urls[5]}
    finally:
        store.close()


def test_lease_statements_have_one_shape_whatever_the_number_of_feeds(db_url: str) -> None:
    """Renewing leases over 10, 300 and 700 feeds prepares one statement, not one per count
    (each distinct IN list stayed prepared in the connection: +14 MB over 20 renewals of
    ~10 000 feeds), and still renews exactly this worker's leases."""
    store = open_store(db_url)
    store.upgrade()
    shapes: set[str] = set()

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "lease_expires_at" in statement and statement.lstrip().upper().startswith("UPDATE"):
            shapes.add(statement)

    try:
        urls = [f"https://h{n}.example/f" for n in range(700)]
        store.sync_feeds(parse_config({"feeds": [{"url": u} for u in urls]}).feeds, NOW)
        mine = [s.id for s in store.claim_feeds("me", NOW, limit=650, lease_seconds=60)]
        others = [s.id for s in store.claim_feeds("other", NOW, limit=50, lease_seconds=60)]
        assert len(mine) == 650 and len(others) == 50
        for engine in {id(e): e for e in (store.engine, store.write_engine)}.values():
            event.listen(engine, "before_cursor_execute", seen)
        later = NOW + timedelta(seconds=30)
        assert store.renew_leases("me", mine[:10], later, 60) == 10
        assert store.renew_leases("me", mine[:300], later, 60) == 300
        assert store.renew_leases("me", mine + others, later, 60) == 650  # not the others'
        store.release_leases("me", mine[:5])
        store.release_leases("me", mine[5:400])
        assert len(shapes) == 2  # one renewal shape, one release shape
        with store.engine.connect() as conn:
            held = dict(
                conn.execute(
                    text("SELECT lease_owner, count(*) FROM feeds GROUP BY lease_owner")
                ).all()
            )
        assert held == {None: 400, "me": 250, "other": 50}
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
        record_poll(
            store,
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
        record_poll(
            store,
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
        record_poll(
            store,
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


def test_a_large_claim_is_made_in_chunks_and_misses_nothing(db_url: str) -> None:
    """More feeds than one statement claims (``chunk``): several statements, the
    same result — every due feed once, in due order, up to the limit."""
    store = open_store(db_url)
    store.upgrade()
    try:
        urls = [f"https://c{n}.example/feed" for n in range(11)]
        store.sync_feeds(parse_config({"feeds": [{"url": u} for u in urls]}).feeds, NOW)
        first = store.claim_feeds("w1", NOW, limit=7, lease_seconds=60, force=True, chunk=3)
        assert len(first) == 7 and len({s.id for s in first}) == 7
        assert [s.id for s in first] == sorted(s.id for s in first)
        rest = store.claim_feeds("w2", NOW, limit=100, lease_seconds=60, force=True, chunk=3)
        assert len(rest) == 4 and not {s.id for s in first} & {s.id for s in rest}
        assert {s.url for s in first + rest} == set(urls)
    finally:
        store.close()


def test_a_claim_can_leave_out_the_feeds_polled_since_a_time(db_url: str) -> None:
    """``polled_before`` (run --once claiming as it goes): a forced claim takes every feed
    not polled since then, never one polled after it, whether or not it is due."""
    store = open_store(db_url)
    store.upgrade()
    try:
        urls = [f"https://p{n}.example/feed" for n in range(5)]
        store.sync_feeds(parse_config({"feeds": [{"url": u} for u in urls]}).feeds, NOW)
        ids = {s.url: s.id for s in store.feed_states(NOW)}
        earlier = NOW - timedelta(hours=1)
        for url, polled in ((urls[0], earlier), (urls[1], NOW + timedelta(seconds=1))):
            record_poll(
                store,
                ids[url],
                FeedUpdate(
                    polled_at=polled, status=304, ok=True, next_check_at=NOW + timedelta(days=1)
                ),
            )
        since = NOW
        claimed = store.claim_feeds(
            "w", NOW, limit=100, lease_seconds=60, force=True, polled_before=since
        )
        # p1 was polled after `since`; p0 before it (and not due: force takes it anyway)
        assert sorted(s.url for s in claimed) == sorted(set(urls) - {urls[1]})
    finally:
        store.close()


def test_head_revision_is_read_from_the_migration_files(tmp_path: Path) -> None:
    """The start-up check that skips Alembic reads revisions in either quote style (the
    template writes repr()), and gives up (None: Alembic decides) on anything unclear."""
    from aggregator.store.migrate import head_revisions

    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "a.py").write_text('revision = "0001"\ndown_revision = None\n')
    (versions / "b.py").write_text("revision = '0002'\ndown_revision = '0001'\n")
    assert head_revisions(tmp_path) == {"0002"}
    (versions / "c.py").write_text("revision: str = '0003'\ndown_revision = '0002'\n")
    assert head_revisions(tmp_path) == {"0003"}
    (versions / "d.py").write_text("revision = '0004'\ndown_revision = '0002'\n")
    assert head_revisions(tmp_path) is None  # two heads
    (versions / "d.py").write_text("revision = '0004'\ndown_revision = ('0003', '0002')\n")
    assert head_revisions(tmp_path) == {"0004"}
    (versions / "e.py").write_text("revision = make_id()\n")
    assert head_revisions(tmp_path) is None


def _run_python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_upgrade_in_child_migrates_without_loading_alembic_here(db_url: str) -> None:
    """The daemon migrates in a child process: the tables exist afterwards, and Alembic
    (with Mako and Pygments) never loaded into the process that keeps running."""
    code = """
        import sys
        from aggregator.store import open_store
        store = open_store(sys.argv[1])
        store.upgrade_in_child()
        store.upgrade_in_child()  # at head: nothing to do
        store.close()
        print(sorted(m for m in ("alembic", "mako", "pygments") if m in sys.modules))
    """
    out, _ = _run_python(code, db_url, "").communicate(timeout=120)
    assert out.strip().splitlines()[-1] == "[]", out
    engine = create_engine(db_url)
    try:
        assert {"feeds", "items", "stories"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_in_child_reports_a_failed_migration_in_one_line(tmp_path: Path) -> None:
    """A database stamped with a revision this version does not know (written by a newer
    release) is refused with the reason, not a traceback."""
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('f00dcafe')"))
    engine.dispose()
    store = open_store(url)
    try:
        with pytest.raises(StoreError) as caught:
            store.upgrade_in_child()
    finally:
        store.close()
    assert str(caught.value) == (
        "cannot migrate the database: Can't locate revision identified by 'f00dcafe'"
    )


def test_sqlite_several_processes_migrate_a_new_database_at_once(tmp_path: Path) -> None:
    """Workers started together on a new SQLite file all come up (no "database is locked"
    from a migration that read the version table before another process wrote it)."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    go = tmp_path / "go"
    code = """
        import sys, time
        from pathlib import Path
        from aggregator.store import open_store
        store = open_store(sys.argv[1])
        while not Path(sys.argv[2]).exists():
            time.sleep(0.005)
        store.upgrade()
        store.close()
        print("migrated")
    """
    procs = [_run_python(code, url, str(go)) for _ in range(6)]
    time.sleep(1.5)  # every process imported and waiting
    go.touch()
    outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    engine = create_engine(url)
    try:
        assert "items" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_sqlite_writer_waiting_in_another_process_gets_its_turn(tmp_path: Path) -> None:
    """A process that writes again as soon as it commits must not starve a writer in
    another process: the waiting claim goes through while the busy one is still writing
    (SQLite's own busy handler alone would let it wait for the whole loop)."""
    url = f"sqlite:///{tmp_path / 'turns.db'}"
    store = open_store(url)
    store.upgrade()
    store.sync_feeds(parse_config({"feeds": [{"url": "https://a.example/feed"}]}).feeds, NOW)
    busy = """
        import sys, time
        from sqlalchemy import text
        from aggregator.store import open_store
        store = open_store(sys.argv[1])
        print("writing", flush=True)
        for n in range(1, 151):
            with store.locked_tx() as conn:  # back-to-back write transactions
                conn.execute(text("UPDATE feeds SET error_count = :n"), {"n": n})
                time.sleep(0.02)
        store.close()
    """
    proc = _run_python(busy, url)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        time.sleep(0.3)
        for _ in range(5):
            store.release_leases("nobody")  # a write transaction each
        with store.engine.connect() as conn:
            written = conn.execute(text("SELECT error_count FROM feeds")).scalar_one()
        assert written < 150, "the waiting writer only got in after the busy loop ended"
    finally:
        proc.wait(timeout=60)
        store.close()


def test_sqlite_writes_use_one_connection_with_the_larger_page_cache(tmp_path: Path) -> None:
    """Each pooled SQLite connection keeps its own page cache: readers get a small one, the
    one writing connection the larger one (peak memory, docs/performance.md)."""
    from aggregator.store.engine import READ_CACHE_KIB, WRITE_CACHE_KIB

    store = open_store(f"sqlite:///{tmp_path / 'cache.db'}")
    store.upgrade()
    try:
        with store.read() as conn:
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == -READ_CACHE_KIB
        seen = set()
        for _ in range(3):
            with store.locked_tx() as conn:
                assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == -WRITE_CACHE_KIB
                seen.add(id(conn.connection.dbapi_connection))
        assert len(seen) == 1
    finally:
        store.close()


def test_the_due_rule_is_the_same_for_claims_and_feed_states(db_url: str) -> None:
    """One rule of "may this feed be polled now" (``store.feeds.due``): ``feed_states``
    and a claim give the same feeds; ``force`` (run --once) adds the feeds whose next
    check has not come, but never a retired feed nor one held by Retry-After."""
    store = open_store(db_url)
    store.upgrade()
    try:
        names = ("due", "later", "retired", "held", "hold-over")
        urls = {n: f"https://{n}.example/feed" for n in names}
        store.sync_feeds(parse_config({"feeds": [{"url": u} for u in urls.values()]}).feeds, NOW)
        ids = {s.url: s.id for s in store.feed_states(NOW)}
        past, future = NOW - timedelta(minutes=1), NOW + timedelta(hours=1)
        base = FeedUpdate(polled_at=past, status=200, ok=True, next_check_at=past)
        record_poll(store, ids[urls["due"]], base)
        record_poll(store, ids[urls["later"]], replace(base, next_check_at=future))
        record_poll(
            store, ids[urls["retired"]], replace(base, status=410, disabled_reason="retired")
        )
        record_poll(store, ids[urls["held"]], replace(base, status=429, hold_until=future))
        record_poll(store, ids[urls["hold-over"]], replace(base, status=429, hold_until=past))
        by_id = {v: k for k, v in ids.items()}
        due = {by_id[s.id] for s in store.feed_states(NOW)}
        assert due == {urls["due"], urls["hold-over"]}
        claimed = store.claim_feeds("w1", NOW, limit=10, lease_seconds=60)
        assert {s.url for s in claimed} == due
        store.release_leases("w1")
        forced = store.claim_feeds("w2", NOW, limit=10, lease_seconds=60, force=True)
        assert {s.url for s in forced} == due | {urls["later"]}
    finally:
        store.close()
