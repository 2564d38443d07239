"""Cost of the dedup step with 10 k, 100 k, 1 M items in the store (SQLite).

Usage (from the project root)::

    /work/venv/bin/python benchmarks/dedup/scale.py [--sizes 10000,100000,1000000]
        [--corpora ../shared/corpora] [--folder /tmp/dedup-scale]

For each size: a fresh SQLite database (migrated by the real ``Store.upgrade``) is filled
with synthetic items — each with 20 random LSH band keys and 45 anchor counts, as a real
item of ~700 words has, all first seen within the dedup window (the worst case: nothing is
old enough to be outside it) — plus 300 real corpus articles ingested through
``Store.save_poll``. Then, one at a time, it dedups 300 new articles (no copy in the store)
and 300 copies of stored ones (syndicated, truncated, updated, reflowed), timing per item:

- ``dedup``: the store-side work save_poll does for dedup — candidate lookup (bands and
  canonical URLs, window on first_seen_at), the site boilerplate lookup, the decision
  (recomputing candidates' shingles from their text), writing the item's bands and, for
  a new story, its anchor counts;
- ``save_poll``: the whole one-item transaction (item, story, feed state, commit), for
  200 other new articles.

The fingerprint itself is computed in the process pool, off the event loop; its cost is
reported by ``pairs.py``. Writes ``benchmarks/dedup/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

from corpus import load_all, make_copies  # noqa: E402

from aggregator import dedup  # noqa: E402
from aggregator.ingest.direct import save_now  # noqa: E402
from aggregator.records import (  # noqa: E402
    CleanEntry,
    FeedSpec,
    FeedUpdate,
    ParsedEntry,
    PollToSave,
)
from aggregator.store import index as fps  # noqa: E402
from aggregator.store import open_store  # noqa: E402
from aggregator.store.tables import items  # noqa: E402

MASK63 = (1 << 63) - 1
WINDOW = timedelta(days=14)


def clean_entry(key: str, title: str, text: str, link: str) -> CleanEntry:
    return CleanEntry(
        entry=ParsedEntry(key=key, link=link, title=title),
        canonical_url=dedup.canonical_url(link),
        summary=None,
        content=None,
        text=text,
        content_hash=key,
        fingerprint=dedup.fingerprint(text),
    )


def fill(path: Path, n: int, now: datetime, rng: random.Random) -> float:
    """Synthetic items straight into the tables (sqlite3, big transactions)."""
    started = time.perf_counter()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-1000000")
    feeds = 200
    db.executemany(
        "INSERT INTO feeds (id, url, host, created_at, error_count, redirect_count, type, enabled,"
        " full_text) VALUES (?, ?, ?, ?, 0, 0, 'feed', 1, 1)",
        [
            (1000 + f, f"http://fill{f}.example/feed", f"fill{f}.example", now.isoformat(" "))
            for f in range(feeds)
        ],
    )
    chunk = 20_000
    for start in range(0, n, chunk):
        rows_s, rows_i, rows_b, rows_d = [], [], [], []
        for i in range(start, min(n, start + chunk)):
            item_id = 10_000_000 + i
            seen = (now - timedelta(seconds=rng.uniform(0, WINDOW.total_seconds() * 0.95))).replace(
                tzinfo=None
            )
            ts = seen.isoformat(" ")
            feed = 1000 + i % feeds
            rows_s.append((item_id, f"Filler story {i}", ts, ts, item_id))
            rows_i.append(
                (
                    item_id,
                    feed,
                    f"fill:{i}",
                    f"http://fill{feed - 1000}.example/{i}",
                    f"http://fill{feed - 1000}.example/{i}",
                    "x",
                    item_id,
                    ts,
                    ts,
                )
            )
            rows_b.extend((rng.getrandbits(63), ts, item_id) for _ in range(dedup.BANDS))
            site = rng.getrandbits(63) if i % 7 else 0
            rows_d.extend((site, rng.getrandbits(63) & ~15, 1, ts) for _ in range(45))
        db.executemany(
            "INSERT INTO stories (id, title, first_seen_at, last_seen_at, item_count,"
            " representative_item_id) VALUES (?, ?, ?, ?, 1, ?)",
            rows_s,
        )
        db.executemany(
            "INSERT INTO items (id, feed_id, entry_key, url, canonical_url, content_hash, story_id,"
            " first_seen_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows_i,
        )
        db.executemany(
            "INSERT INTO dedup_bands (band, first_seen_at, item_id) VALUES (?, ?, ?)", rows_b
        )
        db.executemany(
            "INSERT OR IGNORE INTO dedup_shingles (site, shingle, df, last_seen_at) VALUES (?, ?, ?, ?)",
            rows_d,
        )
        db.commit()
        if (start // chunk) % 10 == 0:
            print(
                f"    filled {min(n, start + chunk):,} items ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    db.execute("ANALYZE")
    db.commit()
    db.close()
    return time.perf_counter() - started


def q(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values) * 1000, 3),
        "p99_ms": round(values[min(len(values) - 1, int(0.99 * len(values)))] * 1000, 3),
        "max_ms": round(values[-1] * 1000, 3),
    }


def run(size: int, folder: Path, corpora: Path, reuse: bool) -> dict[str, object]:
    rng = random.Random(size)
    path = folder / f"scale-{size}.db"
    url = f"sqlite:///{path}"
    now = datetime.now(UTC)
    run_id = f"{time.time():.0f}"
    fill_seconds = None
    if not (reuse and path.exists()):
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        store = open_store(url)
        store.upgrade()
        store.sync_feeds([FeedSpec(url="http://real.example/feed")], now - WINDOW / 2)
        store.close()
        print(f"  {size:,} items: filling …", flush=True)
        fill_seconds = round(fill(path, size, now, rng), 1)
    else:
        print(f"  {size:,} items: reusing {path} (fill not timed)", flush=True)
    store = open_store(url)
    feed_id = 1
    docs = [d for d in load_all(corpora) if d.words >= 100]
    rng = random.Random(size + 1)
    rng.shuffle(docs)
    stored, fresh = docs[:300], docs[300:600]
    if fill_seconds is None:  # reused: the articles stored by the first run
        with store.engine.connect() as conn:
            keys = conn.execute(
                items.select()
                .with_only_columns(items.c.entry_key)
                .where(items.c.entry_key.like("real:%"))
            ).scalars()
            ids = {k.removeprefix("real:").rsplit(":", 1)[0] for k in keys}
        stored = [d for d in docs if d.id in ids]
        fresh = [d for d in docs if d.id not in ids][:300]
    update_ = FeedUpdate(polled_at=now - WINDOW / 2, status=200, ok=True, next_check_at=now)
    entries = [
        clean_entry(f"real:{d.id}:{run_id}", d.title, d.text, f"http://real.example/{run_id}/{i}")
        for i, d in enumerate(stored)
    ]
    if fill_seconds is not None:  # a reused database has them from its first run
        save_now(store, PollToSave(feed_id, update_, tuple(entries)))
    queries: list[tuple[str, CleanEntry]] = []
    outlets = ["A", "B", "C", "D", "E"]
    for i, d in enumerate(fresh):
        queries.append(("new", clean_entry(f"new:{i}", d.title, d.text, f"http://new.example/{i}")))
    for i, d in enumerate(stored):
        kinds = [c for _, c in make_copies(d, outlets, rng)[1:] if c.kind != "tracking"]
        c = kinds[0] if kinds else None
        if c is not None:
            body = "\n\n".join(c.paragraphs)
            queries.append(
                ("copy", clean_entry(f"copy:{i}", c.title, body, f"http://copy.example/{i}"))
            )
    rng.shuffle(queries)
    timings: dict[str, list[float]] = {"new": [], "copy": []}
    whole: list[float] = []
    merged = 0
    since = now - WINDOW
    engine = store.engine
    with engine.connect() as conn:
        any_story = conn.execute(
            items.select().with_only_columns(items.c.story_id).limit(1)
        ).scalar_one()
    for n, (kind, clean) in enumerate(queries):
        clean = replace(clean, entry=replace(clean.entry, key=f"{clean.entry.key}:{n}"))
        # the dedup steps of save_poll, timed one by one, in one write transaction
        with engine.connect() as conn:
            conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                site = dedup.site_key(clean.entry.link)
                t0 = time.perf_counter()
                found = fps.candidates(
                    conn,
                    clean,
                    since,
                    url_limit=dedup.MAX_URL_CANDIDATES,
                    band_limit=dedup.MAX_BAND_CANDIDATES,
                )
                anchors = clean.fingerprint.anchors if clean.fingerprint else ()
                sites = {site, *(dedup.site_key(c.url) for c in found)} - {None}
                common = (
                    fps.common_anchors(conn, anchors, sorted(sites), dedup.COMMON_DF)  # type: ignore[type-var]
                    if found
                    else frozenset()
                )
                decision = (
                    dedup.decide_story(clean, found, common)
                    if found
                    else dedup.StoryDecision(None, 0.0, "new")
                )
                t1 = time.perf_counter()
                story_id = decision.story_id or any_story
                item_id = conn.execute(
                    items.insert()
                    .values(
                        feed_id=feed_id,
                        entry_key=clean.entry.key,
                        content_hash="x",
                        story_id=story_id,
                        first_seen_at=now,
                        updated_at=now,
                        text=clean.text,
                    )
                    .returning(items.c.id)
                ).scalar_one()
                t2 = time.perf_counter()
                fps.index_items(conn, [(item_id, clean)], now)
                if decision.story_id is None and site is not None and clean.fingerprint:
                    fps.count_anchors(
                        conn, Counter((site, a) for a in set(clean.fingerprint.anchors)), now
                    )
                t3 = time.perf_counter()
                conn.rollback()  # leave the store as it was: every query sees the same store
        timings[kind].append((t1 - t0) + (t3 - t2))
        merged += decision.story_id is not None and kind == "copy"
    # the whole one-item save_poll transaction (committed), for scale
    # (texts unlike the queries — their words reversed — so that the committed items do
    # not change what the queries find in a later run with --reuse)
    for n, d in enumerate(fresh[:200]):
        words = " ".join(reversed(d.text.split()))
        clean = clean_entry(f"whole:{n}:{run_id}", d.title, words, f"http://w.example/{run_id}/{n}")
        t0 = time.perf_counter()
        save_now(store, PollToSave(feed_id, replace(update_, polled_at=now), (clean,)))
        whole.append(time.perf_counter() - t0)
    store.close()
    size_mb = sum(p.stat().st_size for p in folder.glob(f"scale-{size}.db*")) / 1e6
    result = {
        "items_in_store": size + 300,
        "fill_seconds": fill_seconds,
        "database_mb": round(size_mb, 1),
        "dedup_all": q(timings["new"] + timings["copy"]),
        "dedup_new_articles": q(timings["new"]),
        "dedup_copies": q(timings["copy"]),
        "copies_merged": f"{merged}/{len(timings['copy'])}",
        "save_poll_one_item": q(whole),
    }
    print("   ", json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/dedup-scale"))
    parser.add_argument("--reuse", action="store_true", help="reuse a filled database")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    out = HERE / "scale.json"
    report: dict[str, object] = json.loads(out.read_text()) if out.exists() else {}
    for size in (int(s) for s in args.sizes.split(",")):
        report[str(size)] = run(size, args.folder, args.corpora, args.reuse)
        out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
