"""SQLite's automatic WAL checkpoint: bytes written to disk and wall time of the store's
write path at a given ``wal_autocheckpoint`` (pages), no readers.

    python benchmarks/wal_autocheckpoint.py 1000 4096 1000 4096

Each run saves the same 40 rounds of 40 polls of 10 new entries (16 000 items, about
2 KB of text each) into a fresh database under ``--dir`` through the group writer, as
the daemon does, and prints the wall time, the process's CPU time, the bytes it wrote to
disk (``/proc/self/io``, Linux) and the database's size. Each setting runs in a process
of its own. The figures of docs/operations.md ("The write-ahead log") came from it.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

WORDS = (
    "council members voted on the new budget after a long debate about schools roads and "
    "the harbour while residents gathered outside the hall to hear the decision that will "
    "shape the city for the coming decade according to officials who spoke"
).split()


def text(seed: str, words: int = 300) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words))


def run_one(pages: int, folder: Path) -> None:
    from aggregator.records import CleanEntry, FeedSpec, FeedUpdate, ParsedEntry
    from aggregator.store import engine

    engine.WAL_AUTOCHECKPOINT = pages  # before any connection is made
    from aggregator.store import open_store

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    db = folder / "bench.db"
    store = open_store(f"sqlite:///{db}")
    store.upgrade()
    now = datetime(2026, 6, 1, tzinfo=UTC)
    store.sync_feeds([FeedSpec(url=f"https://f{i}.example/feed") for i in range(40)], now)
    ids = [s.id for s in store.feed_states(now, due_only=False)]

    def entries(feed: int, round_: int) -> list[CleanEntry]:
        out = []
        for j in range(10):
            key = f"{feed}-{round_}-{j}"
            body = text(key)
            entry = ParsedEntry(key=f"guid:{key}", guid=key, link=f"https://x{feed}.example/{key}")
            digest = hashlib.sha1(body.encode()).hexdigest()
            out.append(CleanEntry(entry, entry.link, None, None, body, digest))
        return out

    rounds = [[(f, entries(f, r)) for f in ids] for r in range(40)]

    def written() -> int:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes"):
                return int(line.split()[1])
        return 0

    before, started, cpu = written(), time.monotonic(), time.process_time()
    for polls in rounds:
        update = FeedUpdate(polled_at=now, status=200, ok=True, next_check_at=now)
        queued = [store.queue_save_poll(f, update, new, ()) for f, new in polls]
        for future in queued:
            assert future is not None
            future.result()
    wall, cpu = time.monotonic() - started, time.process_time() - cpu
    print(
        f"wal_autocheckpoint={pages}: wall {wall:.2f} s, CPU {cpu:.2f} s, "
        f"written {(written() - before) / 2**20:.1f} MiB, "
        f"database {db.stat().st_size / 2**20:.1f} MiB",
        flush=True,
    )
    store.close()
    shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", type=int, nargs="+", help="wal_autocheckpoint values")
    parser.add_argument("--dir", type=Path, default=ROOT / "benchmarks" / "work" / "walbench")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.pages[0], args.dir)
        return
    for pages in args.pages:
        subprocess.run(
            [sys.executable, __file__, "--one", str(pages), "--dir", str(args.dir)], check=True
        )


if __name__ == "__main__":
    main()
