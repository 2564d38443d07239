"""The lease statements alone, on a feeds table of realistic size (default 1 M rows).

    python benchmarks/scaling/claims.py [--rows 1000000] [--threads 1,4] [--batch 32]

Creates a fresh PostgreSQL database, migrates it, inserts ``--rows`` feeds whose
``next_check_at`` is spread evenly over one hour (1 M feeds polled hourly: ~280 become due
per second), ANALYZEs, then for ``--seconds`` per setting runs ``--threads`` loops, each one
standing for a worker: ``Store.claim_feeds(limit=batch)`` then, per claimed feed, the end of
a poll as the pipeline writes it (a poll without entries, ``ingest.direct.save_now``: last_polled_at, status, next check an
hour later, lease cleared) — nothing else. It prints the claim latency (median, p95), the
claims and feeds per second the database sustains, and the claim's plan (EXPLAIN ANALYZE).
The loops run the real ``Store`` methods, so the figures include SQLAlchemy and psycopg.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from aggregator.ingest.direct import save_now  # noqa: E402
from aggregator.records import FeedUpdate, PollToSave  # noqa: E402
from aggregator.store import open_store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--threads", default="1,4")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "scaling" / "claims.json")
    args = parser.parse_args()
    name = f"scaling_claims_{args.rows}"
    admin = create_engine(f"{args.pg}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{args.pg}/{name}"
    results: dict[str, object] = {"rows": args.rows, "batch": args.batch, "runs": []}
    store = open_store(url, pool_size=16)
    try:
        store.upgrade()
        started = time.monotonic()
        with store.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO feeds (url, configured_url, host, type, enabled, full_text, "
                    "error_count, redirect_count, created_at, next_check_at) "
                    "SELECT 'https://site' || (g % 50000) || '.example/feed/' || g, "
                    "'https://site' || (g % 50000) || '.example/feed/' || g, "
                    "'site' || (g % 50000) || '.example', 'feed', true, false, 0, 0, now(), "
                    "now() - interval '60 seconds' + g * (interval '3600 seconds' / :n) "
                    "FROM generate_series(1, :n) g"
                ),
                {"n": args.rows},
            )
        with store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE feeds"))
        results["load_seconds"] = round(time.monotonic() - started, 1)
        print(f"{args.rows} feeds loaded in {results['load_seconds']} s", flush=True)
        for threads in (int(t) for t in args.threads.split(",")):
            results["runs"].append(_run(store, threads, args.batch, args.seconds))  # type: ignore[attr-defined]
        with store.engine.connect() as conn:
            plan = conn.execute(
                text(
                    "EXPLAIN (ANALYZE, BUFFERS) UPDATE feeds SET lease_owner = 'x', "
                    "lease_expires_at = now() + interval '300 seconds' WHERE id IN ("
                    "SELECT id FROM feeds WHERE removed_at IS NULL AND enabled IS true "
                    "AND disabled_reason IS NULL AND (hold_until IS NULL OR hold_until <= now()) "
                    "AND (lease_expires_at IS NULL OR lease_expires_at <= now()) "
                    "AND (next_check_at IS NULL OR next_check_at <= now()) "
                    "ORDER BY next_check_at ASC NULLS FIRST, id LIMIT :b FOR UPDATE SKIP LOCKED)"
                ),
                {"b": args.batch},
            ).scalars()
            results["plan"] = list(plan)
            conn.rollback()
    finally:
        store.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    print("\nclaim plan (EXPLAIN ANALYZE, one claim of the batch size):")
    print("\n".join(f"  {line}" for line in results["plan"]))  # type: ignore[union-attr]
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\n{args.out}")


def _run(store, threads: int, batch: int, seconds: float) -> dict[str, float]:  # type: ignore[no-untyped-def]
    claims: list[float] = []
    finishes: list[float] = []
    feeds_done = [0]
    guard = threading.Lock()
    stop = time.monotonic() + seconds

    def loop(n: int) -> None:
        owner = f"bench:{n}"
        while time.monotonic() < stop:
            now = datetime.now(UTC)
            t0 = time.perf_counter()
            states = store.claim_feeds(owner, now, limit=batch, lease_seconds=300)
            t1 = time.perf_counter()
            for state in states:
                save_now(
                    store,
                    PollToSave(
                        state.id,
                        FeedUpdate(
                            polled_at=now,
                            status=200,
                            ok=True,
                            next_check_at=now + timedelta(hours=1),
                        ),
                    ),
                )
            t2 = time.perf_counter()
            with guard:
                claims.append(t1 - t0)
                if states:
                    finishes.append((t2 - t1) / len(states))
                feeds_done[0] += len(states)
            if not states:
                time.sleep(0.05)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    started = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    claims.sort()
    run = {
        "threads": threads,
        "claims": len(claims),
        "claims_per_s": round(len(claims) / elapsed, 1),
        "feeds_per_s": round(feeds_done[0] / elapsed, 1),
        "claim_ms_median": round(1000 * statistics.median(claims), 2),
        "claim_ms_p95": round(1000 * claims[int(0.95 * (len(claims) - 1))], 2),
        "finish_ms_median_per_feed": round(1000 * statistics.median(finishes), 2)
        if finishes
        else 0.0,
    }
    print(
        f"threads {threads}: {run['claims']} claims of {batch}, {run['claims_per_s']} claims/s, "
        f"{run['feeds_per_s']} feeds/s claimed and finished; claim median "
        f"{run['claim_ms_median']} ms, p95 {run['claim_ms_p95']} ms; finishing a feed "
        f"(record_poll) {run['finish_ms_median_per_feed']} ms",
        flush=True,
    )
    return run


if __name__ == "__main__":
    main()
