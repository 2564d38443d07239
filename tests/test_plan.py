"""Story decisions planned off the writer (``ingest.plan``, issue 18 item 4): the same
polls saved with decisions planned ahead against stale snapshots, in worker processes,
give exactly the stories that deciding serially gives.

The polls are real feed documents (tests/data/feeds, parsed and fingerprinted by the
pool's own jobs), each saved once under its own feed and again under a mirror feed (the
same entries: URL identity and text matches across feeds), plus Daring Fireball's Atom
and JSON copies of the same posts. Planned in chunks, every plan of a chunk is taken
before any poll of the chunk is written, so the writer's journal must refuse the plans
that an earlier poll of the chunk invalidates, and accept the others.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator import pooljobs
from aggregator.app import make_saver
from aggregator.config import load_config
from aggregator.ingest.batching import BatchingSaver
from aggregator.ingest.plan import plan_job
from aggregator.records import CleanEntry, FeedSpec, FeedUpdate, PollToSave, SavePlan
from aggregator.store import Store, open_store
from conftest import DATA, write_config

FEEDS = DATA / "feeds"
DOCUMENTS = [
    "rsparser-netnewswire/DaringFireball.atom",
    "rss-parser/content-encoded.rss",
    "rsparser-netnewswire/scriptingNews.rss",
    "codehollow-feedreader/Rss10OrfAt.xml",
    "rss-parser/craigslist.rss",
    "rsparser-netnewswire/DaringFireball.json",
    "codehollow-feedreader/Rss091Stadtfeuerwehr.xml",
    "atoma/jsonfeed.org.json",
    "rss-parser/itunes-missing-image.rss",
    "miniflux/small_atom.xml",
    "feedsmith/atom-03.xml",
]
CHUNK = 6  # polls planned against one snapshot before any of them is written
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def parsed(path: str) -> list[CleanEntry]:
    body = (FEEDS / path).read_bytes()
    kind = "application/feed+json" if path.endswith(".json") else "application/xml"
    url = f"https://example.org/{path}"
    entries = list(pooljobs.prepare_document(body, {"content-type": kind}, url, 500).entries)
    fps = pooljobs.fingerprints([c.text for c in entries])
    return [replace(c, fingerprint=fp) for c, fp in zip(entries, fps, strict=True)]


@pytest.fixture(scope="module")
def documents() -> dict[str, list[CleanEntry]]:
    return {path: parsed(path) for path in DOCUMENTS}


def feed_names() -> list[tuple[str, str]]:
    """(feed name, document), in the order they are saved: each document, and its mirror
    a few polls later (often in the same chunk as the original)."""
    order: list[tuple[str, str]] = []
    for number, path in enumerate(DOCUMENTS):
        order.append((path, path))
        if number >= 2:
            order.append((f"mirror/{DOCUMENTS[number - 2]}", DOCUMENTS[number - 2]))
    order += [(f"mirror/{p}", p) for p in DOCUMENTS[-2:]]
    return order


def open_db(path: Path) -> tuple[Store, dict[str, int]]:
    store = open_store(f"sqlite:///{path}")
    store.upgrade()
    names = [name for name, _ in feed_names()]
    store.sync_feeds([FeedSpec(url=f"https://feeds.example/{n}") for n in names], T0)
    ids = {s.url: s.id for s in store.feed_states(T0 + timedelta(days=1))}
    return store, {n: ids[f"https://feeds.example/{n}"] for n in names}


def polls(ids: dict[str, int], documents: dict[str, list[CleanEntry]]) -> list[PollToSave]:
    found: list[PollToSave] = []
    for number, (name, path) in enumerate(feed_names()):
        at = T0 + timedelta(minutes=number)
        update = FeedUpdate(polled_at=at, status=200, ok=True, next_check_at=at)
        found.append(PollToSave(ids[name], update, tuple(documents[path])))
    return found


def stories(path: Path) -> dict[tuple[str, str], tuple[frozenset[tuple[str, str]], str]]:
    """(feed, entry key) -> (the (feed, entry key)s of its story, its dedup reason)."""
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT feeds.url, items.entry_key, items.story_id, items.dedup_reason"
            " FROM items JOIN feeds ON feeds.id = items.feed_id"
        ).fetchall()
    members: dict[int, set[tuple[str, str]]] = {}
    for url, key, story, _reason in rows:
        members.setdefault(story, set()).add((url, key))
    return {(url, key): (frozenset(members[story]), reason) for url, key, story, reason in rows}


def test_planned_decisions_give_the_serial_stories(
    tmp_path: Path, documents: dict[str, list[CleanEntry]]
) -> None:
    serial_store, ids = open_db(tmp_path / "serial.db")
    serial = BatchingSaver(serial_store)
    for poll in polls(ids, documents):
        serial.submit(poll).result()
    serial.close()
    serial_store.close()

    planned_store, ids = open_db(tmp_path / "planned.db")
    saver = BatchingSaver(planned_store, journal=True)
    url = f"sqlite:///{tmp_path / 'planned.db'}"
    todo = polls(ids, documents)
    plans: list[SavePlan | None] = []
    with ProcessPoolExecutor(2) as pool:
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            # every plan of the chunk against the snapshot before the chunk's first write
            ahead: list[Future[SavePlan | None]] = [
                pool.submit(plan_job, url, poll, saver.window) for poll in chunk
            ]
            chunk_plans = [f.result() for f in ahead]
            plans += chunk_plans
            for poll, plan in zip(chunk, chunk_plans, strict=True):
                saver.submit(poll, plan).result()
    accepted, refused = saver.plans
    saver.close()
    planned_store.close()

    assert all(p is not None for p in plans[CHUNK:])  # no merge in these polls
    # the first chunk was planned before the writer had looked (its floor), some later
    # plans saw a poll of their own chunk invalidate them: the writer decided those
    assert accepted >= len(todo) // 3, (accepted, refused)
    assert refused >= CHUNK, (accepted, refused)
    expected = stories(tmp_path / "serial.db")
    got = stories(tmp_path / "planned.db")
    assert len(expected) > 200
    # copies were joined (the mirrors, Daring Fireball's two formats)...
    assert sum(len(m) > 1 for m, _ in expected.values()) > 100
    # ...and the planned save gave every item the same story and the same reason
    assert got == expected


def test_a_commit_by_another_connection_voids_the_plans_taken_before(
    tmp_path: Path, documents: dict[str, list[CleanEntry]]
) -> None:
    """Retention, ``stories rebuild`` or another process may change stored items under a
    plan: the writer sees another connection's commit and decides the poll itself."""
    store, ids = open_db(tmp_path / "a.db")
    saver = BatchingSaver(store, journal=True)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    first, second, third = polls(ids, documents)[:3]
    saver.submit(first).result()  # the writer has looked: its floor is set
    plan = plan_job(url, second, saver.window)
    assert plan is not None
    other = open_store(url)
    with other.locked_tx() as conn:  # any commit: here the feed's title
        conn.exec_driver_sql(
            "UPDATE feeds SET title = 'renamed' WHERE id = ?", (ids[second_name()],)
        )
    other.close()
    saver.submit(second, plan).result()
    assert saver.plans == (0, 1)
    # with nothing committed by anyone else since its snapshot, a plan is taken
    plan = plan_job(url, third, saver.window)
    saver.submit(third, plan).result()
    assert saver.plans == (1, 1)
    saver.close()
    store.close()


def second_name() -> str:
    return feed_names()[1][0]


@pytest.mark.parametrize("planned", [False, True])
def test_the_daemon_plans_with_the_plan_decisions_setting(tmp_path: Path, planned: bool) -> None:
    """Off by default (on two cores the pool has no room for the plans, see
    docs/performance.md): the writer decides; with ``plan_decisions: true`` the pool
    plans and the writer keeps its journal."""
    cfg = load_config(write_config(tmp_path / "feeds.yaml", [], workers=2, plan_decisions=planned))
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    store.upgrade()
    with ThreadPoolExecutor(1) as threads, ThreadPoolExecutor(1) as pool:
        saver = make_saver(store, cfg, threads=threads, writer_process=False, planner=pool)
        assert isinstance(saver, BatchingSaver)
        assert (saver.planner is not None) is planned
        assert saver.keeps_journal is planned
        saver.close()
    store.close()
