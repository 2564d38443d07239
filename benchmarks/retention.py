"""How big a store gets over 30 simulated days, with and without retention (issue 19).

A loopback farm of feeds that hand out new entries every simulated day (the farm's text
generator, ``benchmarks/farm``: 400–1,500 words per article, 1–5 KB of it in the feed):
each feed publishes 1–8 entries a day (drawn per feed, as the farm's sites post every
1–24 hours) and its document holds its newest 20. Every simulated day the daemon's
one-shot run polls every feed once; then the clock moves one day: every stored time
(items, stories, dedup index, tombstones, documents) is shifted one day into the past,
so "first seen 7 days ago" means 7 polls ago. With retention (``max_age: 7d``) a
retention pass (``ingest.prune``, as ``aggregator prune`` and the daemon run it) follows
each day. The store's size is read at day 7 and day 30: SQLite, the file (after its
write-ahead log is checkpointed); PostgreSQL, ``pg_database_size``.

    python benchmarks/retention.py --feeds 100 --days 30
    python benchmarks/retention.py --feeds 100 --days 30 --database postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from random import Random

import yaml
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.farm.generate import _text  # noqa: E402
from benchmarks.farm.text import load_corpus  # noqa: E402

from aggregator.config import load_config  # noqa: E402
from aggregator.ingest.prune import prune_config  # noqa: E402
from aggregator.scheduler import run_once  # noqa: E402
from aggregator.store import open_store  # noqa: E402

DOC_SIZE = 20  # entries in a feed's document
SHIFTS = (
    ("items", ("first_seen_at", "updated_at")),
    ("stories", ("first_seen_at", "last_seen_at")),
    ("dedup_bands", ("first_seen_at",)),
    ("dedup_shingles", ("last_seen_at",)),
    ("item_tombstones", ("deleted_at",)),
    ("feed_documents", ("updated_at",)),
    ("feeds", ("last_polled_at", "last_success_at", "created_at")),
)


class Farm:
    """Feeds whose documents grow by a few entries per simulated day."""

    def __init__(self, feeds: int, corpora: Path, seed: int = 1) -> None:
        self.corpus = load_corpus(corpora)
        self.per_day = [Random(f"{seed}:{f}").randint(1, 8) for f in range(feeds)]
        self.seed = seed
        self.day = 0
        self.cache: dict[tuple[int, int], tuple[str, str]] = {}
        self.clock = datetime(2026, 1, 1, tzinfo=UTC)

    def entry(self, feed: int, n: int) -> tuple[str, str]:
        if (feed, n) not in self.cache:
            rng = Random(f"{self.seed}:{feed}:{n}")
            title, paragraphs = _text(self.corpus, rng, rng.randint(400, 1500))
            size, parts = rng.randint(1000, 5000), []
            for para in paragraphs:
                parts.append(para)
                if sum(map(len, parts)) >= size:
                    break
            self.cache[(feed, n)] = (title, "\n".join(parts))
        return self.cache[(feed, n)]

    def document(self, feed: int) -> bytes:
        published = self.per_day[feed] * (self.day + 1)  # entries so far
        items = []
        for n in range(published - 1, max(-1, published - 1 - DOC_SIZE), -1):
            title, content = self.entry(feed, n)
            date = self.clock + timedelta(days=self.day, minutes=n)
            items.append(
                f"<item><title>{escape(title)}</title>"
                f"<link>https://site{feed}.example/a/{n}</link>"
                f"<guid isPermaLink='false'>site{feed}-{n}</guid>"
                f"<pubDate>{format_datetime(date)}</pubDate>"
                f"<description>{escape(content)}</description></item>"
            )
        return (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>site {feed}</title><link>https://site{feed}.example/</link>"
            f"<description>farm</description>{''.join(items)}</channel></rss>"
        ).encode()

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        farm = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                feed = int(self.path.strip("/").split(".")[0].removeprefix("f"))
                body = farm.document(feed)
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def shift_one_day(url: str) -> None:
    """Every stored time one day further in the past."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for table, columns in SHIFTS:
                if engine.dialect.name == "sqlite":
                    sets = ", ".join(f"{c} = datetime({c}, '-1 day')" for c in columns)
                else:
                    sets = ", ".join(f"{c} = {c} - interval '1 day'" for c in columns)
                conn.execute(text(f"UPDATE {table} SET {sets}"))
    finally:
        engine.dispose()


def size_of(url: str, path: Path | None) -> tuple[int, int]:
    """``(the store's size, its live data)``. SQLite: the file, and its pages in use (the
    file less its free pages). PostgreSQL: ``pg_database_size`` after a plain
    ``VACUUM`` (what autovacuum reaches), and after ``VACUUM FULL`` (compacted: the
    benchmark's daily time shift rewrites every row, whose old versions a real store
    does not have)."""
    if path is not None:
        with sqlite3.connect(path) as conn:
            page, count, free = (
                conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("page_size", "page_count", "freelist_count")
            )
        conn.close()
        return path.stat().st_size, (count - free) * page
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    query = text("SELECT pg_database_size(current_database())")
    try:
        with engine.connect() as conn:
            conn.execute(text("VACUUM"))
            size = int(conn.execute(query).scalar_one())
            conn.execute(text("VACUUM FULL"))
            return size, int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


def table_sizes(path: Path) -> dict[str, int]:
    """SQLite: bytes per table and index (``dbstat``), largest first."""
    with sqlite3.connect(path) as conn:
        found = dict(
            conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")
        )
    conn.close()
    return found


def vacuum(url: str) -> None:
    """PostgreSQL: a plain VACUUM after the time shift (autovacuum would get there)."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("VACUUM"))
    finally:
        engine.dispose()


def run(
    feeds: int, days: int, url: str, path: Path | None, keep: bool, work: Path, corpora: Path
) -> dict[str, object]:
    farm = Farm(feeds, corpora)
    httpd, base = farm.serve()
    settings: dict[str, object] = {
        "allow_private_networks": ["127.0.0.0/8"],
        "per_host_delay": "0s",
        "per_host_concurrency": 16,
        "full_text": False,
        "workers": 1,
    }
    if not keep:
        settings["retention"] = {"max_age": "7d"}
    cfg = work / f"feeds-{uuid.uuid4().hex[:6]}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"settings": settings, "feeds": [{"url": f"{base}/f{f}.xml"} for f in range(feeds)]}
        )
    )
    config = load_config(cfg, url)
    sizes: dict[int, tuple[int, int]] = {}
    tables: dict[int, dict[str, int]] = {}
    rows: dict[int, int] = {}
    started = time.monotonic()
    store = open_store(url)
    try:
        store.upgrade()
    finally:
        store.close()
    empty = size_of(url, path)  # the schema alone: not counted per feed
    try:
        for day in range(1, days + 1):
            farm.day = day - 1
            store = open_store(url)
            try:
                store.upgrade()
                summary = asyncio.run(run_once(config, store))
                assert summary.failed == 0, summary
                now = datetime.now(UTC)
                # the daemon's upkeep jobs: the dedup index kept to its window (every
                # 6 h), retention (every hour)
                store.prune_dedup(now - timedelta(seconds=config.settings.dedup_window))
                if not keep:
                    prune_config(store, config.feeds, config.retention, now)
            finally:
                store.close()
            if day in (7, days):
                sizes[day] = size_of(url, path)
                engine = create_engine(url)
                with engine.connect() as conn:
                    rows[day] = int(conn.execute(text("SELECT COUNT(*) FROM items")).scalar_one())
                engine.dispose()
                if path is not None:
                    tables[day] = table_sizes(path)
                size, live = sizes[day]
                print(
                    f"  day {day}: {size / 1e6:.1f} MB ({live / 1e6:.1f} MB live), {rows[day]} items",
                    flush=True,
                )
            shift_one_day(url)
            if path is None:
                vacuum(url)
    finally:
        httpd.shutdown()
    return {
        "retention": None if keep else "max_age: 7d",
        "feeds": feeds,
        "entries_per_day": sum(farm.per_day),
        "day7_bytes": sizes[7][0],
        f"day{days}_bytes": sizes[days][0],
        "ratio": round(sizes[days][0] / sizes[7][0], 2),
        "day7_live_bytes": sizes[7][1],
        f"day{days}_live_bytes": sizes[days][1],
        "live_ratio": round(sizes[days][1] / sizes[7][1], 2),
        "day7_items": rows[7],
        f"day{days}_items": rows[days],
        "empty_bytes": empty[0],
        # per 1,000 feeds: the growth over the empty schema, scaled
        f"mb_per_1000_feeds_day{days}": round((sizes[days][0] - empty[0]) / feeds * 1000 / 1e6),
        f"live_mb_per_1000_feeds_day{days}": round(
            (sizes[days][1] - empty[1]) / feeds * 1000 / 1e6
        ),
        "largest_tables_mb": {
            day: {name: round(size / 1e6, 1) for name, size in list(t.items())[:8]}
            for day, t in tables.items()
        },
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--feeds", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    shared = next(
        (p / "shared" / "corpora" for p in ROOT.parents if (p / "shared" / "corpora").exists()),
        ROOT.parent / "shared" / "corpora",
    )
    parser.add_argument("--corpora", type=Path, default=shared)
    parser.add_argument("--database", default=None, help="a PostgreSQL URL (default: SQLite files)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for keep in (False, True):
            label = "without retention" if keep else "with retention (max_age: 7d)"
            print(f"{label}:", flush=True)
            if args.database is None:
                path = work / f"store-{keep}.db"
                results.append(
                    run(args.feeds, args.days, f"sqlite:///{path}", path, keep, work, args.corpora)
                )
                continue
            admin = create_engine(args.database, isolation_level="AUTOCOMMIT")
            name = f"retention_bench_{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = args.database.rsplit("/", 1)[0] + "/" + name
            try:
                results.append(run(args.feeds, args.days, url, None, keep, work, args.corpora))
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
