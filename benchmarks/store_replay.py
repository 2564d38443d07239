"""The store's write path alone: replay a farm's parsed polls into a fresh database.

    python benchmarks/store_replay.py prepare benchmarks/work/peer/farm-2000 --feeds 2000 \\
        --out benchmarks/work/replay-2000.pickle
    python benchmarks/store_replay.py run benchmarks/work/replay-2000.pickle \\
        --db /tmp/replay.db --in-flight 16

``prepare`` parses and fingerprints every feed document of a farm from disk (the same pool
jobs as ``aggregator run``) and pickles what each poll hands to the store. ``run`` saves
those polls into a new SQLite (or PostgreSQL: ``--db postgresql://…``) database with
``in-flight`` saves queued at once, as the daemon does at ``concurrency: N``, and prints the
wall time, the writer thread's CPU seconds and the counts. No network, no parsing: what is
left is the store's own cost (dedup decisions, inserts, FTS indexing, commits).

On SQLite the polls are saved through ``BatchingSaver`` (the daemon's save path there); the
writer's CPU per item is also given for each tenth of the polls (the queue drained at each
boundary), so its growth with the store's size reads as ``growth_last_vs_first_tenth``.
``--limit N`` replays only the first N polls (e.g. 600 of a 2,000-feed farm's).

``--plan N`` plans the story decisions of each poll in N worker processes against read
snapshots (``ingest.plan``, what ``aggregator run`` does on SQLite), ``in-flight`` polls
ahead of the writer; the writer takes a plan its journal accepts. It adds the plans taken
and refused and the workers' CPU (``planner_cpu_s``: the work moved off the writer).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import pickle
import resource
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from aggregator import pooljobs  # noqa: E402
from aggregator.records import CleanEntry, FeedSpec, FeedUpdate  # noqa: E402


def _prepare_one(args: tuple[str, Path]) -> tuple[str, list[CleanEntry]]:
    url, path = args
    body = path.read_bytes()
    kind = path.suffix
    ctype = {
        ".rss": "application/rss+xml",
        ".atom": "application/atom+xml",
        ".rdf": "application/rdf+xml",
        ".json": "application/feed+json",
    }.get(kind, "application/xml")
    prepared = pooljobs.prepare_document(body, {"content-type": ctype}, url, 500)
    entries = list(prepared.entries)
    fps = pooljobs.fingerprints([c.text for c in entries])
    return url, [replace(c, fingerprint=fp) for c, fp in zip(entries, fps, strict=True)]


def _nothing(conn: object) -> None:
    return None


def prepare(farm_dir: Path, feeds: int, out: Path) -> None:
    from benchmarks.farm import Farm

    farm = Farm.load(farm_dir)
    jobs = []
    for url, info in zip(farm.urls(limit=feeds), farm.feeds[:feeds], strict=True):
        jobs.append((url, farm.root / "site" / info.path.strip("/")))
    started = time.monotonic()
    with ProcessPoolExecutor(os.cpu_count() or 2) as pool:
        polls = list(pool.map(_prepare_one, jobs, chunksize=8))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh:
        pickle.dump(polls, fh, protocol=pickle.HIGHEST_PROTOCOL)
    entries = sum(len(e) for _, e in polls)
    print(f"{len(polls)} polls, {entries} entries in {time.monotonic() - started:.1f} s -> {out}")


def run(
    source: Path, db: str, in_flight: int, limit: int | None = None, plan: int = 0
) -> dict[str, Any]:
    from aggregator.ingest.batching import BatchingSaver
    from aggregator.ingest.direct import DirectSaver
    from aggregator.ingest.plan import plan_job
    from aggregator.records import PollToSave
    from aggregator.store import open_store

    with source.open("rb") as fh:
        polls: list[tuple[str, list[CleanEntry]]] = pickle.load(fh)[:limit]
    url = db if "://" in db else f"sqlite:///{db}"
    store = open_store(url)
    store.upgrade()
    now = datetime.now(UTC)
    store.sync_feeds([FeedSpec(url=u) for u, _ in polls], now)
    ids = {s.url: s.id for s in store.feed_states(now + timedelta(days=1))}
    batching = BatchingSaver(store, journal=bool(plan)) if store.one_writer else None
    direct = DirectSaver(store)
    # --plan N: story decisions planned in N worker processes against read snapshots,
    # as ``aggregator run`` does on SQLite; a poll goes to the writer once planned, in
    # order, with ``in_flight`` polls planned ahead of the writer
    planner = ProcessPoolExecutor(plan) if plan and batching is not None else None
    planned: collections.deque[tuple[Any, Future[Any]]] = collections.deque()
    started = time.monotonic()
    cpu0 = time.process_time()
    pending: list[Future[Any]] = []

    def to_writer(poll: Any, ahead: Future[Any] | None) -> None:
        assert batching is not None
        pending.append(batching.submit(poll, ahead.result() if ahead is not None else None))

    new_items = 0
    tenth = max(1, len(polls) // 10)
    marks: list[tuple[int, float]] = [(0, 0.0)]  # (items, writer CPU s) at each tenth
    for number, (feed_url, entries) in enumerate(polls, 1):
        update = FeedUpdate(polled_at=datetime.now(UTC), status=200, ok=True, next_check_at=now)
        poll = PollToSave(ids[feed_url], update, tuple(entries))
        if batching is None:  # PostgreSQL: one transaction per poll
            new_items += direct.save_now(poll).new_items
            continue
        if planner is None:
            to_writer(poll, None)
        else:
            planned.append((poll, planner.submit(plan_job, url, poll, batching.window)))
            if len(planned) >= in_flight:
                to_writer(*planned.popleft())
        if len(pending) >= in_flight:
            new_items += pending.pop(0).result().new_items
        if number % tenth == 0 or number == len(polls):
            while planned:
                to_writer(*planned.popleft())
            for fut in pending:
                new_items += fut.result().new_items
            pending.clear()
            # a barrier: the writer adds a group's CPU (and its upkeep's) after settling its
            # futures, so the groups before this empty job are counted once it is done
            batching.writer.run(_nothing)
            marks.append((new_items, batching.cpu_seconds))
    for fut in pending:
        new_items += fut.result().new_items
    wall = time.monotonic() - started
    planner_cpu = 0.0
    if planner is not None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        planner.shutdown()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        planner_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    result = {
        "polls": len(polls),
        "new_items": new_items,
        "wall_s": round(wall, 2),
        "process_cpu_s": round(time.process_time() - cpu0, 2),
        **store.counts(),
    }
    if batching is not None:
        cpu0 = time.thread_time()
        batching.close()  # the search index's last batch, in this thread
        last_index = time.thread_time() - cpu0
        result["writer_cpu_s"] = round(batching.cpu_seconds, 2)
        result["final_index_cpu_s"] = round(last_index, 2)
        result["groups"] = batching.writer.groups
        if planner is not None:
            result["plans_accepted"], result["plans_refused"] = batching.plans
            result["planner_cpu_s"] = round(planner_cpu, 2)
            result["planner_ms_per_item"] = round(1000 * planner_cpu / max(1, new_items), 3)
        result["writer_ms_per_item"] = round(1000 * batching.cpu_seconds / max(1, new_items), 3)
        result["writer_ms_per_item_with_final_index"] = round(
            1000 * (batching.cpu_seconds + last_index) / max(1, new_items), 3
        )
        per_tenth = [
            round(1000 * (c1 - c0) / max(1, n1 - n0), 3)
            for (n0, c0), (n1, c1) in itertools.pairwise(marks)
        ]
        result["writer_ms_per_item_by_tenth"] = per_tenth
        if len(per_tenth) >= 2 and per_tenth[0] > 0:
            result["growth_last_vs_first_tenth"] = round(per_tenth[-1] / per_tenth[0], 2)
    store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("farm", type=Path)
    p.add_argument("--feeds", type=int, default=2000)
    p.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("source", type=Path)
    r.add_argument("--db", required=True)
    r.add_argument("--in-flight", type=int, default=16)
    r.add_argument("--limit", type=int, default=None, help="only the first N polls")
    r.add_argument(
        "--plan", type=int, default=0, help="plan decisions in N worker processes (ingest.plan)"
    )
    args = parser.parse_args()
    if args.cmd == "prepare":
        prepare(args.farm, args.feeds, args.out)
    else:
        print(json.dumps(run(args.source, args.db, args.in_flight, args.limit, args.plan)))


if __name__ == "__main__":
    main()
