"""The peer side: the ``reader`` library (3.26), run in its own virtual environment.

Run as a whole process by ``python -m benchmarks.peer`` (stdlib and reader only; it never
imports the project)::

    venv-reader/bin/python peer_reader.py cold  DB URLS_FILE --workers 16
    venv-reader/bin/python peer_reader.py warm  DB --workers 16
    venv-reader/bin/python peer_reader.py count DB

* ``cold``: create the database, add every feed, ``update_feeds(workers=N)``;
* ``warm``: open the same database, ``update_feeds(workers=N, scheduled=False)`` — a forced
  second pass, so every feed is requested again (conditional GET, 304 from nginx);
* ``count``: entries per feed (read apart, so that counting is not in the timed runs).

``update_feeds`` is ``for _ in update_feeds_iter(...)`` plus grouping of hook errors; the
benchmark calls ``update_feeds_iter`` with the same arguments to count the outcomes
(updated, not modified, error). The last stdout line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time

STARTED = time.perf_counter()

from reader import make_reader  # noqa: E402


def update(reader: object, workers: int, scheduled: bool) -> dict[str, object]:
    counts = {"updated": 0, "not_modified": 0, "errors": 0, "new_entries": 0}
    errors: list[str] = []
    for result in reader.update_feeds_iter(workers=workers, scheduled=scheduled):  # type: ignore[attr-defined]
        value = result.value
        if value is None:
            counts["not_modified"] += 1
        elif isinstance(value, Exception):
            counts["errors"] += 1
            if len(errors) < 5:
                errors.append(f"{result.url}: {value!r}")
        else:
            counts["updated"] += 1
            counts["new_entries"] += value.new
    return {**counts, "error_examples": errors}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("cold", "warm", "count"))
    parser.add_argument("db")
    parser.add_argument("urls", nargs="?")
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    imported = time.perf_counter()
    out: dict[str, object] = {"import_s": round(imported - STARTED, 3)}
    reader = make_reader(args.db)
    if args.mode == "cold":
        with open(args.urls) as f:
            urls = [line.strip() for line in f if line.strip()]
        for url in urls:
            reader.add_feed(url)
        added = time.perf_counter()
        out["add_s"] = round(added - imported, 3)
        out.update(update(reader, args.workers, scheduled=True))
        out["update_s"] = round(time.perf_counter() - added, 3)
    elif args.mode == "warm":
        out.update(update(reader, args.workers, scheduled=False))
        out["update_s"] = round(time.perf_counter() - imported, 3)
    else:
        # per feed straight from reader's SQLite file (get_entry_counts(feed=…) per feed
        # takes minutes for 2000 feeds); the API's total is the cross-check
        with sqlite3.connect(args.db) as conn:
            per_feed = dict(conn.execute("SELECT feed, COUNT(*) FROM entries GROUP BY feed"))
        out["entries"] = sum(per_feed.values())
        out["entries_api"] = reader.get_entry_counts().total
        out["feeds"] = len(per_feed)
        out["broken_feeds"] = sum(1 for f in reader.get_feeds() if f.last_exception)
        out["per_feed"] = per_feed
    reader.close()
    out["total_s"] = round(time.perf_counter() - STARTED, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
