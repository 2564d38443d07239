"""Issue 7's measurement: 1, 2 and 4 ``aggregator run`` daemons sharing one database.

    python benchmarks/scaling/run.py                      # everything (about 15 minutes)
    python benchmarks/scaling/run.py --backends postgres --modes feeds --workers 1,4

For every (database, mode, number of daemons) it

1. creates a fresh database (SQLite file, or ``CREATE DATABASE`` on the PostgreSQL server at
   ``--pg``), migrates it and loads the farm's feeds into it (``Store.sync_feeds``), so the
   daemons start on a ready table;
2. starts N daemons (``benchmarks/scaling/worker.py run``: the real ``aggregator run`` with
   the store's lease calls timed, see worker.py), each with ``workers: 1`` (a process pool of
   one), so 4 daemons (8 processes) share the 2 cores;
3. watches the database every 0.2 s until every feed has ``last_polled_at``: the cycle runs
   from the first poll's start (min ``last_polled_at``) to that moment; start-up (imports,
   migrations check, config sync, process pool) is reported apart;
4. reads: items and stories stored, failed feeds, requests per feed at nginx (each feed must
   be requested exactly once), the CPU seconds of every daemon process tree and of the
   PostgreSQL backends serving the case's database, and each daemon's lease figures;
5. stops the daemons with SIGTERM and drops the database.

Coordination overhead = time inside claim_feeds + renew_leases + release_leases +
lease_owners, per daemon, divided by the cycle (mean over daemons): the share of a daemon's
cycle spent getting and giving back work. These calls run in a thread beside the polls, so
this is an upper bound on what they delay; their CPU share is far smaller. The part of it
spent waiting for the process's own write lock (behind its own save_poll) is shown apart.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.farm import Farm, generate, serve, write_config  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

WORKER = Path(__file__).resolve().parent / "worker.py"
LEASE_CALLS = ("claim_feeds", "renew_leases", "release_leases", "lease_owners")
CLK = os.sysconf("SC_CLK_TCK")


@dataclass
class Case:
    backend: str
    mode: str  # "feeds" (full_text: false) or "full" (full_text: true)
    daemons: int
    feeds: int
    startup_s: float = 0.0
    cycle_s: float = 0.0
    feeds_per_s: float = 0.0
    items: int = 0
    items_per_s: float = 0.0
    stories: int = 0
    article_items: int = 0  # items whose text came from the article page (full mode)
    failed_feeds: int = 0
    requests_max_per_feed: int = 0
    feeds_requested: int = 0
    cpu_daemons_s: float = 0.0
    cpu_db_s: float = 0.0
    claims: int = 0
    claim_rows: int = 0
    renewals: int = 0
    lease_s_per_daemon: float = 0.0
    lease_lock_wait_s_per_daemon: float = 0.0
    lease_share: float = 0.0
    lease_share_without_lock_wait: float = 0.0
    claim_ms_mean: float = 0.0
    save_poll_s_per_daemon: float = 0.0
    advisory_lock_s_per_daemon: float = 0.0  # PostgreSQL: inside the saves, waiting for locks
    save_lock_share: float = 0.0  # advisory_lock seconds / save seconds
    pinned: list[str] = field(default_factory=list)  # taskset CPU list of each daemon
    claimed_per_daemon: list[int] = field(default_factory=list)
    warm_cycle_s: float = 0.0
    warm_feeds_per_s: float = 0.0
    warm_not_modified: int = 0
    warm_cpu_daemons_s: float = 0.0
    warm_claims: int = 0
    warm_claim_ms_mean: float = 0.0
    warm_lease_share: float = 0.0
    db: dict[str, Any] = field(default_factory=dict)
    timed_out: bool = False
    saves: int = 0  # save_poll calls: more than the feeds means some feed was polled twice
    deadlocks: int = 0  # polls lost to "deadlock detected" (PostgreSQL), from the daemon logs


# ---- processes -------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK)
    return table


def _tree_cpu(roots: list[int]) -> float:
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, list(roots)
    while todo:
        pid = todo.pop()
        if pid in table:
            total += table[pid][1]
        todo.extend(children.get(pid, []))
    return total


def _pids_cpu(pids: list[int]) -> float:
    table = _proc_table()
    return sum(table[p][1] for p in pids if p in table)


# ---- databases -------------------------------------------------------------------------------


class Database:
    def __init__(self, backend: str, name: str, work: Path, pg: str) -> None:
        self.backend = backend
        self.name = name
        self.pg = pg.rstrip("/")
        if backend == "sqlite":
            self.path = work / f"{name}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self.url = f"sqlite:///{self.path}"
        else:
            admin = create_engine(f"{self.pg}/postgres", isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            self.url = f"{self.pg}/{name}"
        self.engine = create_engine(self.url.replace("postgresql://", "postgresql+psycopg://"))

    def scalar(self, sql: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql)).scalar()

    def progress(self) -> tuple[int, datetime | None]:
        with self.engine.connect() as conn:
            row = conn.execute(
                text("SELECT count(last_polled_at), min(last_polled_at) FROM feeds")
            ).one()
        first = row[1]
        if isinstance(first, str):
            first = datetime.fromisoformat(first)
        if first is not None and first.tzinfo is None:
            first = first.replace(tzinfo=UTC)
        return int(row[0]), first

    def pg_counters(self) -> dict[str, float]:
        if self.backend != "postgres":
            return {}
        with self.engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, "
                    "tup_fetched, blks_read, blks_hit, pg_current_wal_lsn() - '0/0'::pg_lsn AS wal "
                    "FROM pg_stat_database WHERE datname = current_database()"
                )
            ).one()
        return {k: float(v) for k, v in row._mapping.items()}

    def backend_pids(self) -> list[int]:
        if self.backend != "postgres":
            return []
        with self.engine.connect() as conn:
            return [
                int(p)
                for p in conn.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid()"
                    )
                ).scalars()
            ]

    def drop(self) -> None:
        self.engine.dispose()
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            return
        admin = create_engine(f"{self.pg}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        admin.dispose()


def _prepare(db: Database, config: Path) -> None:
    from aggregator.config import load_config
    from aggregator.store import open_store

    cfg = load_config(config, db.url)
    store = open_store(db.url)
    try:
        store.upgrade()
        store.sync_feeds(cfg.feeds, datetime.now(UTC))
    finally:
        store.close()


# ---- one case --------------------------------------------------------------------------------


def run_case(
    served: Any, backend: str, mode: str, daemons: int, n_feeds: int, args: argparse.Namespace
) -> Case:
    case = Case(backend, mode, daemons, n_feeds)
    work = args.workdir / f"{backend}-{mode}-{daemons}"
    work.mkdir(parents=True, exist_ok=True)
    db = Database(backend, f"scaling_{backend}_{mode}_{daemons}_{os.getpid()}", work, args.pg)
    config = write_config(
        served.farm,
        work / "feeds.yaml",
        limit=n_feeds,
        full_text=mode == "full",
        workers=1,
        concurrency=args.concurrency,
        tick=args.tick,
        lease_seconds=args.lease_seconds,
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        _prepare(db, config)
        before = db.pg_counters()
        log_offset = len(served.requests())
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
        # the caller's PYTHONPATH kept after ROOT: an older checkout's src/ runs its code
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
        launched = time.time()
        cpus = os.cpu_count() or 1
        for i in range(daemons):
            env_i = dict(env, SCALING_STATS=str(work / f"stats-{i}.json"))
            (work / f"stats-{i}.json").unlink(missing_ok=True)
            pin: list[str] = []
            if args.pin:  # daemon i (and its pool) on core i mod cores
                case.pinned.append(str(i % cpus))
                pin = ["taskset", "-c", str(i % cpus)]
            procs.append(
                subprocess.Popen(
                    [
                        *pin,
                        sys.executable,
                        str(WORKER),
                        "run",
                        "--config",
                        str(config),
                        "--database",
                        db.url,
                        "--log-level",
                        "WARNING",
                    ],
                    env=env_i,
                    stdout=(work / f"daemon-{i}.log").open("w"),
                    stderr=subprocess.STDOUT,
                    cwd=str(work),
                )
            )
        deadline = launched + args.timeout
        first: datetime | None = None
        done_at = None
        while time.time() < deadline:
            polled, first = db.progress()
            if polled >= n_feeds:
                done_at = time.time()
                break
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"a daemon exited early: see {work}/daemon-*.log")
            time.sleep(0.2)
        case.timed_out = done_at is None
        done_at = done_at or time.time()
        case.cpu_daemons_s = round(_tree_cpu([p.pid for p in procs]), 1)
        case.cpu_db_s = round(_pids_cpu(db.backend_pids()), 1)
        after = db.pg_counters()
        warm: tuple[float, float] | None = None
        if args.warm and not case.timed_out:
            warm = _warm_cycle(case, db, procs, n_feeds, args.timeout)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        start = first.timestamp() if first else launched
        case.startup_s = round(start - launched, 2)
        case.cycle_s = round(done_at - start, 2)
        case.feeds_per_s = round(n_feeds / case.cycle_s, 1)
        case.items = int(db.scalar("SELECT count(*) FROM items"))
        case.items_per_s = round(case.items / case.cycle_s, 1)
        case.stories = int(db.scalar("SELECT count(*) FROM stories"))
        case.article_items = int(
            db.scalar("SELECT count(*) FROM items WHERE text_source = 'article'")
        )
        case.failed_feeds = int(db.scalar("SELECT count(*) FROM feeds WHERE error_count > 0"))
        if before:
            case.db = {k: after[k] - before[k] for k in after}
        time.sleep(1.5)  # nginx flushes its access log buffer every second
        feed_paths = {f.path for f in served.farm.feeds[:n_feeds]}
        # the cold cycle's requests are the 200s (the warm cycle gets 304s)
        counts = Counter(
            u for u, st in served.requests()[log_offset:] if u in feed_paths and st == 200
        )
        case.feeds_requested = len(counts)
        case.requests_max_per_feed = max(counts.values(), default=0)
        _lease_figures(case, work, daemons, (launched, done_at), warm)
        case.deadlocks = sum(
            (work / f"daemon-{i}.log").read_text().count("deadlock detected")
            for i in range(daemons)
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        db.drop()
    return case


def _warm_cycle(
    case: Case, db: Database, procs: list[subprocess.Popen[bytes]], n: int, timeout: float
) -> tuple[float, float]:
    """Make every feed due again and time the second cycle (conditional GETs: 304s)."""
    cpu_before = _tree_cpu([p.pid for p in procs])
    reset = datetime.now(UTC)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE feeds SET next_check_at = :t"), {"t": reset})
    started = time.time()
    done = None
    while time.time() < started + timeout:
        with db.engine.connect() as conn:
            polled = conn.execute(
                text("SELECT count(*) FROM feeds WHERE last_polled_at >= :t"), {"t": reset}
            ).scalar()
        if int(polled or 0) >= n:
            done = time.time()
            break
        time.sleep(0.1)
    done = done or time.time()
    case.warm_cycle_s = round(done - started, 2)
    case.warm_feeds_per_s = round(n / case.warm_cycle_s, 1)
    case.warm_cpu_daemons_s = round(_tree_cpu([p.pid for p in procs]) - cpu_before, 1)
    case.warm_not_modified = int(db.scalar("SELECT count(*) FROM feeds WHERE last_status = 304"))
    return started, done


def _lease_figures(
    case: Case,
    work: Path,
    daemons: int,
    cold: tuple[float, float],
    warm: tuple[float, float] | None,
) -> None:
    lease_s = lock_wait = save_s = advisory_s = 0.0
    claim_s = warm_claim_s = 0.0
    for i in range(daemons):
        path = work / f"stats-{i}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        stats = data["stats"]
        # renewals, releases and the lease_owners check are counted whole (the stop's
        # release included: it is tiny); claims are split by when they happened
        for name in ("renew_leases", "release_leases", "lease_owners"):
            lease_s += stats[name]["seconds"]
            lock_wait += stats[name]["lock_wait"]
        for at, rows, seconds, wait in data["claims"]:
            if cold[0] <= at <= cold[1]:
                case.claims += 1
                case.claim_rows += rows
                claim_s += seconds
                lock_wait += wait
            elif warm and warm[0] <= at <= warm[1]:
                case.warm_claims += 1
                warm_claim_s += seconds
        case.renewals += int(stats["renew_leases"]["calls"])
        save_s += stats["save_poll"]["seconds"] + stats["record_poll"]["seconds"]
        advisory_s += stats.get("advisory_lock", {}).get("seconds", 0.0)
        case.saves += int(stats["save_poll"]["calls"])
        case.claimed_per_daemon.append(int(stats["claim_feeds"]["rows"]))
    lease_s += claim_s
    case.lease_s_per_daemon = round(lease_s / daemons, 3)
    case.lease_lock_wait_s_per_daemon = round(lock_wait / daemons, 3)
    case.lease_share = round(lease_s / daemons / case.cycle_s, 4)
    case.lease_share_without_lock_wait = round((lease_s - lock_wait) / daemons / case.cycle_s, 4)
    case.claim_ms_mean = round(1000 * claim_s / max(1, case.claims), 2)
    if warm:
        case.warm_claim_ms_mean = round(1000 * warm_claim_s / max(1, case.warm_claims), 2)
        case.warm_lease_share = round(warm_claim_s / daemons / case.warm_cycle_s, 4)
    case.save_poll_s_per_daemon = round(save_s / daemons, 1)
    case.advisory_lock_s_per_daemon = round(advisory_s / daemons, 2)
    case.save_lock_share = round(advisory_s / save_s, 4) if save_s else 0.0


# ---- main ------------------------------------------------------------------------------------


def table(cases: list[Case]) -> str:
    head = (
        f"{'db':8} {'mode':5} {'daemons':>7} {'feeds':>5} {'start s':>7} {'cycle s':>7} "
        f"{'feeds/s':>7} {'items':>6} {'items/s':>7} {'failed':>6} {'max 200':>7} "
        f"{'CPU s':>6} {'DB CPU':>6} {'claims':>6} {'claim ms':>8} {'lease %':>7} {'(no lock wait)':>14} "
        f"{'warm s':>6} {'304s':>5} {'warm f/s':>8} {'warm claim %':>12} claimed per daemon"
    )
    lines = [head, "-" * len(head)]
    for c in cases:
        lines.append(
            f"{c.backend:8} {c.mode:5} {c.daemons:7d} {c.feeds:5d} {c.startup_s:7.1f} "
            f"{c.cycle_s:7.1f} {c.feeds_per_s:7.1f} {c.items:6d} {c.items_per_s:7.1f} "
            f"{c.failed_feeds:6d} {c.requests_max_per_feed:7d} {c.cpu_daemons_s:6.0f} "
            f"{c.cpu_db_s:6.1f} {c.claims:6d} {c.claim_ms_mean:8.1f} {100 * c.lease_share:6.2f}% "
            f"{100 * c.lease_share_without_lock_wait:13.2f}% "
            f"{c.warm_cycle_s:6.1f} {c.warm_not_modified:5d} {c.warm_feeds_per_s:8.1f} "
            f"{100 * c.warm_lease_share:11.2f}% "
            + "/".join(str(n) for n in c.claimed_per_daemon)
            + (f" deadlocks {c.deadlocks}" if c.deadlocks else "")
            + (f" save lock wait {100 * c.save_lock_share:.1f}%" if c.save_lock_share else "")
            + (" pinned " + ",".join(c.pinned) if c.pinned else "")
            + (" TIMED OUT" if c.timed_out else "")
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--farm", type=Path, default=ROOT / "benchmarks" / "work" / "farm")
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--feeds", type=int, default=2000, help="feeds for the feeds-only cycle")
    parser.add_argument(
        "--hosts",
        type=int,
        default=1,
        help="generate the farm over N loopback addresses (127.0.1.1 …); issue 18 asks for 50",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin daemon i to core i mod cores (taskset -c): issue 18's one vs two daemons",
    )
    parser.add_argument("--full-feeds", type=int, default=100, help="feeds for the full pipeline")
    parser.add_argument("--workers", default="1,2,4", help="numbers of daemons")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--modes", default="feeds,full")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--concurrency", type=int, default=32, help="per daemon")
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=30.0,
        help="short, so a poll lost to a database error is retried within the run",
    )
    parser.add_argument("--tick", type=float, default=1.0, help="daemon tick, seconds")
    parser.add_argument(
        "--no-warm", dest="warm", action="store_false", help="skip the second (304) cycle"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per case, seconds")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "work" / "scaling")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "scaling" / "results.json"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up daemons and nginx
    farm_json = args.farm / "farm.json"
    if (
        not farm_json.exists()
        or Farm.load(args.farm).stats["feeds"] < args.feeds
        or len(Farm.load(args.farm).hosts) != args.hosts
    ):
        print(f"generating a farm of {args.feeds} feeds on {args.hosts} host(s) ...", flush=True)
        generate(args.farm, feeds=args.feeds, corpora=args.corpora, hosts=args.hosts)
    started = time.time()
    cases: list[Case] = []
    with serve(args.farm, latency=None, access_log=True, workdir=None) as served:
        for backend in args.backends.split(","):
            for mode in args.modes.split(","):
                n = args.feeds if mode == "feeds" else args.full_feeds
                for daemons in (int(w) for w in args.workers.split(",")):
                    case = run_case(served, backend, mode, daemons, n, args)
                    cases.append(case)
                    print(table([case]).splitlines()[-1], flush=True)
    print()
    print(table(cases))
    command = "python benchmarks/scaling/run.py " + " ".join(sys.argv[1:])
    result = {
        "command": command.strip(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": {
            "concurrency_per_daemon": args.concurrency,
            "tick_s": args.tick,
            "pool_workers_per_daemon": 1,
            "lease_seconds": args.lease_seconds,
            "pinned": args.pin,
            "load_at_end": os.getloadavg()[0],
        },
        "farm": Farm.load(args.farm).stats,
        "seconds": round(time.time() - started),
        "cases": [asdict(c) for c in cases],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{args.out}; command: {result['command']}")


if __name__ == "__main__":
    main()
