"""Issue 8's benchmark: the aggregator beside the ``reader`` library on one loopback farm.

    python -m benchmarks.peer                      # everything (see docs/performance.md)
    python -m benchmarks.peer --quick              # 300 feeds, no 10k farm, no idle: ~3 min
    python -m benchmarks.peer --idle-seconds 300   # the issue's full 5-minute idle window

Everything is timed as whole processes (start-up and imports included) and measured by
``procs.measure`` (wall time; peak RSS of the largest process and of the whole tree; CPU
seconds). One run, in this order, on the same farm (``benchmarks.farm``, nginx on 127.0.0.1
and a +200 ms proxy beside it):

1. reader cold / ours cold / reader warm / ours warm, zero latency, ``full_text: false``
   (reader: ``update_feeds(workers=16)``; warm ``scheduled=False``);
2. the same four through the latency proxy (reader ``workers=64``; ours ``concurrency: 512``:
   requests in flight; the parsed polls behind them are bounded apart);
3. entries stored: reader's database vs our ``items`` table, feed by feed (zero-latency pair);
4. the full pipeline (``full_text: true``) on the first ``--pipeline-feeds`` feeds, and
   ``trafilatura.extract(html)`` on a sample of the same article pages in one process;
5. the idle daemon: ``aggregator run`` on the database of step 1 (no feed due), CPU of its
   process tree over ``--idle-seconds``;
6. our cold run on a ``--big-feeds`` farm (default 10 000), for memory flat in N.

Prints one table and writes ``benchmarks/peer/results.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.farm import Farm, generate, serve, write_config

from .procs import Watcher, kill_tree, measure, tree_cpu

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PEER_SCRIPT = HERE / "peer_reader.py"
RATE_SCRIPT = HERE / "trafilatura_rate.py"
READER_REQUIREMENTS = ("reader==3.26", "sgmllib3k")
PORTS = {"main": 18280, "big": 18380}  # farms of this benchmark; benchmarks.farm's own is 18080

# issue 18's "done when" (its team goal: cold <= 0.35, pipeline >= 1.3; issue 8 asked warm <= 0.25)
TARGETS = {
    "cold": ("ours/reader wall, cold, zero latency", "<=", 0.8),
    "warm": ("ours/reader wall, warm (304s), zero latency", "<=", 0.35),
    "latency_warm": ("ours/reader wall, warm, +200 ms (reader 64 workers)", "<=", 0.30),
    "latency_cold": ("ours/reader wall, cold, +200 ms (reader 64 workers)", "<=", 0.30),
    "pipeline": ("pipeline articles/s ÷ trafilatura single-core pages/s", ">=", 1.0),
    "pipeline_pages": (
        "as pipeline, counting only items whose text came from the fetched page",
        ">=",
        1.0,
    ),
    "entries": ("entries stored, ours − reader", "==", 0),
    "memory": ("largest process, ours/reader (cold)", "<=", 2.0),
    "flat": ("largest process, big farm / main farm (ours cold)", "<=", 1.2),
    "idle": ("idle daemon CPU, % of one core", "<", 1.0),
}


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# ---- environment ---------------------------------------------------------------------------


def peer_python(work: Path) -> Path:
    """The reader venv's python, created on first use (reader==3.26 and sgmllib3k)."""
    venv = work / "venv-reader"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import reader, sgmllib; print(reader.__version__)"]
    if python.exists():
        done = subprocess.run(probe, capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip() == "3.26":
            return python
        shutil.rmtree(venv)
    log(f"creating the peer's virtual environment in {venv}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *READER_REQUIREMENTS], check=True)
    subprocess.run(probe, check=True, capture_output=True)
    return python


def generator_digest() -> str:
    """Hash of the farm generator's source (the files that decide the farm's content): a
    changed generator means a new farm."""
    digest = hashlib.sha256()
    for name in ("generate.py", "text.py"):
        path = ROOT / "benchmarks" / "farm" / name
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def ensure_farm(path: Path, feeds: int, port: int, corpora: Path, hosts: int = 1) -> Farm:
    """The farm in ``path``, (re)generated unless it has ``feeds`` feeds on ``port`` over
    ``hosts`` addresses and was written by the current generator."""
    meta = path / "farm.json"
    stamp = path / "generator.sha256"
    if meta.exists() and stamp.exists() and stamp.read_text() == generator_digest():
        farm = Farm.load(path)
        if len(farm.feeds) == feeds and farm.port == port and len(farm.hosts) == hosts:
            return farm
    need_gb = feeds * 0.6 / 1000  # about 0.55 GB per 1000 feeds
    free_gb = shutil.disk_usage(path.parent if path.parent.exists() else ROOT).free / 1e9
    if free_gb < need_gb * 1.2:
        raise SystemExit(f"{feeds} feeds need ~{need_gb:.1f} GB; {free_gb:.1f} GB free")
    log(f"generating a farm of {feeds} feeds on {hosts} host(s) in {path} (~{need_gb:.1f} GB)")
    path.parent.mkdir(parents=True, exist_ok=True)
    farm = generate(path, feeds=feeds, corpora=corpora, port=port, hosts=hosts)
    stamp.write_text(generator_digest())
    return farm


def aggregator_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "aggregator"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "aggregator"]


def versions(peer: Path) -> dict[str, str]:
    import trafilatura

    from aggregator.config import VERSION

    out = subprocess.run(
        [
            str(peer),
            "-c",
            "import reader, feedparser; print(reader.__version__, feedparser.__version__)",
        ],
        capture_output=True,
        text=True,
    ).stdout.split()
    return {
        "python": platform.python_version(),
        "aggregator": VERSION,
        "trafilatura": trafilatura.__version__,
        "reader": out[0] if out else "?",
        "reader_feedparser": out[1] if len(out) > 1 else "?",
    }


# ---- one side, one pass --------------------------------------------------------------------


def run_reader(
    peer: Path, mode: str, db: Path, urls: Path | None, workers: int, logdir: Path, tag: str
) -> dict[str, Any]:
    cmd = [str(peer), str(PEER_SCRIPT), mode, str(db)]
    if urls is not None:
        cmd.append(str(urls))
    cmd += ["--workers", str(workers)]
    load0 = loadavg()
    m = measure(cmd, cwd=db.parent, log=logdir / f"{tag}.log")
    out = m.summary() | {"load_before": load0, "load_after": loadavg()}
    out["peer"] = last_json(logdir / f"{tag}.log")
    log(f"{tag}: {m.wall:.1f} s, peak {m.peak_rss_max / 2**20:.0f} MB, cpu {m.cpu:.1f} s")
    return out


def run_ours(config: Path, logdir: Path, tag: str, timeout: float) -> dict[str, Any]:
    cmd = [*aggregator_cmd(), "run", "--once", "--config", str(config)]
    load0 = loadavg()
    m = measure(cmd, cwd=config.parent, log=logdir / f"{tag}.log", timeout=timeout)
    out = m.summary() | {"load_before": load0, "load_after": loadavg()}
    if m.returncode != 0:
        out["error"] = tail(logdir / f"{tag}.log")
    log(
        f"{tag}: {m.wall:.1f} s (rc {m.returncode}), peak {m.peak_rss_max / 2**20:.0f} MB "
        f"({m.peak_rss_max_name}), tree {m.peak_rss_sum / 2**20:.0f} MB, cpu {m.cpu:.1f} s"
    )
    return out


def last_json(path: Path) -> dict[str, Any]:
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                return dict(json.loads(line))
            except ValueError:
                continue
    return {"error": tail(path)}


def tail(path: Path, lines: int = 8) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def our_counts(db: Path) -> dict[str, Any]:
    with sqlite3.connect(db) as conn:
        per_feed = dict(
            conn.execute(
                "SELECT f.configured_url, COUNT(i.id) FROM feeds f"
                " LEFT JOIN items i ON i.feed_id = f.id GROUP BY f.id"
            ).fetchall()
        )
        failed = conn.execute("SELECT COUNT(*) FROM feeds WHERE last_error IS NOT NULL").fetchone()
        stories = conn.execute("SELECT COUNT(*) FROM stories").fetchone()
        sources = dict(
            conn.execute("SELECT COALESCE(text_source, '-'), COUNT(*) FROM items GROUP BY 1")
        )
        reasons = dict(
            conn.execute("SELECT COALESCE(dedup_reason, '-'), COUNT(*) FROM items GROUP BY 1")
        )
    return {
        "entries": sum(per_feed.values()),
        "feeds": len(per_feed),
        "failed_feeds": failed[0],
        "stories": stories[0],
        "text_source": sources,
        "dedup_reason": reasons,
        "per_feed": per_feed,
    }


def compare_entries(ours: dict[str, int], theirs: dict[str, int], farm: Farm) -> dict[str, Any]:
    expected = {url: f.entries for url, f in zip(farm.urls(), farm.feeds, strict=False)}
    diff = {
        url: {"ours": ours.get(url, 0), "reader": theirs.get(url, 0), "farm": expected.get(url)}
        for url in sorted(set(ours) | set(theirs))
        if ours.get(url, 0) != theirs.get(url, 0)
    }
    return {
        "ours": sum(ours.values()),
        "reader": sum(theirs.values()),
        "farm": sum(expected[u] for u in set(ours) | set(theirs) if u in expected),
        "feeds_differing": len(diff),
        "examples": dict(list(diff.items())[:10]),
    }


# ---- the idle daemon -----------------------------------------------------------------------


def idle_daemon(config: Path, logdir: Path, warmup: float, window: float) -> dict[str, Any]:
    """Start ``aggregator run`` (nothing due), wait ``warmup``, then measure CPU over ``window``."""
    logfile = logdir / "ours-idle.log"
    cmd = [*aggregator_cmd(), "run", "--config", str(config), "--log-level", "INFO"]
    with logfile.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=config.parent, stdout=out, stderr=subprocess.STDOUT)
    watcher = Watcher(proc.pid)
    try:
        end = time.monotonic() + warmup
        while time.monotonic() < end and proc.poll() is None:
            watcher.tick()
            time.sleep(0.5)
        lines0 = len(logfile.read_bytes().splitlines())
        cpu0, s0 = tree_cpu(proc.pid)
        t0 = time.monotonic()
        end = t0 + window
        while time.monotonic() < end and proc.poll() is None:
            watcher.tick()
            time.sleep(1.0)
        cpu1, s1 = tree_cpu(proc.pid)
        elapsed = time.monotonic() - t0
        alive = proc.poll() is None
        # per process: what it used inside the window (a process born inside counts whole)
        used = sum(
            s.cpu - (s0[p].cpu if p in s0 and s0[p].start == s.start else 0) for p, s in s1.items()
        )
        new_lines = logfile.read_bytes().splitlines()[lines0:]
        polls = sum(1 for line in new_lines if b'"event": "poll"' in line)
        stop0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stopped = time.monotonic() - stop0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_tree(proc.pid, watcher.pids)
    m = watcher.finish(0.0, proc.returncode)
    result = {
        "warmup_s": warmup,
        "window_s": round(elapsed, 1),
        "alive_through_window": alive,
        "cpu_s": round(used, 3),
        "cpu_percent_one_core": round(100 * used / elapsed, 3) if elapsed else None,
        "processes": len(s1),
        "polls_in_window": polls,
        "log_lines_in_window": len(new_lines),
        "stop_s": round(stopped, 2),
        "returncode": proc.returncode,
        "peak_rss_max_mb": round(m.peak_rss_max / 2**20, 1),
        "cpu_total_at_end_s": round(cpu1, 2),
        "cpu_total_at_start_s": round(cpu0, 2),
    }
    log(f"idle: {result['cpu_percent_one_core']} % of one core over {elapsed:.0f} s, {polls} polls")
    return result


# ---- pipeline ------------------------------------------------------------------------------


def page_sample(farm: Farm, feeds: int, size: int, seed: int = 8) -> list[Path]:
    pages: list[Path] = []
    for info in farm.feeds[:feeds]:
        folder = farm.root / "site" / info.path.strip("/").split("/")[0] / "a"
        pages.extend(sorted(folder.glob("*.html")))
    return sorted(random.Random(seed).sample(pages, min(size, len(pages))))


def trafilatura_rate(pages: list[Path], logdir: Path) -> dict[str, Any]:
    listing = logdir / "trafilatura-pages.txt"
    listing.write_text("\n".join(str(p) for p in pages))
    m = measure([sys.executable, str(RATE_SCRIPT), str(listing)], log=logdir / "trafilatura.log")
    out = last_json(logdir / "trafilatura.log") | {"process_wall_s": round(m.wall, 2)}
    out["peak_rss_mb"] = round(m.peak_rss_max / 2**20, 1)
    log(f"trafilatura single core: {out.get('pages_per_s')} pages/s on {len(pages)} pages")
    return out


# ---- the table -----------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def verdict(key: str, value: float | None) -> str:
    if value is None:
        return "not measured"
    _, op, target = TARGETS[key]
    ok = {
        "<=": value <= target,
        ">=": value >= target,
        "<": value < target,
        "==": value == target,
    }[op]
    return "met" if ok else "MISSED"


def build_table(res: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    runs = res["runs"]
    n = res["settings"]["feeds"]

    def wall(tag: str) -> float | None:
        r = runs.get(tag)
        return r["wall_s"] if r and r.get("returncode") == 0 else None

    def peak(tag: str) -> float | None:
        r = runs.get(tag)
        return r["peak_rss_max_mb"] if r and r.get("returncode") == 0 else None

    rows: list[tuple[str, str, str, str, str, str]] = []
    verdicts: dict[str, Any] = {}

    def fmt(v: float | None, unit: str = "", digits: int = 1) -> str:
        return "—" if v is None else f"{v:.{digits}f}{unit}"

    def add(key: str | None, what: str, ours: str, theirs: str, value: float | None) -> None:
        if key is None:
            rows.append((what, ours, theirs, fmt(value, "×", 2), "", ""))
            return
        _, op, target = TARGETS[key]
        v = verdict(key, value)
        verdicts[key] = {"value": value, "target": f"{op} {target}", "verdict": v}
        shown = fmt(value, "×", 2) if key not in ("entries", "idle") else fmt(value, "", 2)
        rows.append((what, ours, theirs, shown, f"{op} {target}", v))

    for key, tag, label in (
        ("cold", "cold", f"cold, {n} feeds, wall"),
        ("warm", "warm", f"warm (304), {n} feeds, wall"),
        ("latency_cold", "latency-cold", f"cold +200 ms, {n} feeds, wall"),
        ("latency_warm", "latency-warm", f"warm +200 ms, {n} feeds, wall"),
    ):
        o, r = wall(f"ours-{tag}"), wall(f"reader-{tag}")
        add(key, label, fmt(o, " s"), fmt(r, " s"), ratio(o, r))
    for tag in ("cold", "warm"):
        o, r = runs.get(f"ours-{tag}"), runs.get(f"reader-{tag}")
        if o and r:
            add(
                None,
                f"{tag}: CPU seconds (whole tree)",
                fmt(o["cpu_s"], " s"),
                fmt(r["cpu_s"], " s"),
                ratio(o["cpu_s"], r["cpu_s"]),
            )
    e = res.get("entries")
    if e:
        add(
            "entries",
            f"entries stored, {n} feeds",
            str(e["ours"]),
            str(e["reader"]),
            e["ours"] - e["reader"],
        )
    o, r = peak("ours-cold"), peak("reader-cold")
    add(
        "memory",
        "peak RSS, largest process (cold)",
        fmt(o, " MB", 0),
        fmt(r, " MB", 0),
        ratio(o, r),
    )
    oc, rc = runs.get("ours-cold"), runs.get("reader-cold")
    if oc and rc:
        add(
            None,
            "peak RSS, all processes (cold)",
            fmt(oc["peak_rss_sum_mb"], " MB", 0),
            fmt(rc["peak_rss_sum_mb"], " MB", 0),
            ratio(oc["peak_rss_sum_mb"], rc["peak_rss_sum_mb"]),
        )
    big = res["settings"].get("big_feeds")
    if big:
        b = peak("ours-big-cold")
        add(
            "flat",
            f"largest process, {big} vs {n} feeds (ours)",
            fmt(b, " MB", 0),
            fmt(o, " MB", 0),
            ratio(b, o),
        )
    p = res.get("pipeline")
    if p:
        add(
            "pipeline",
            f"full pipeline, {p['feeds']} feeds: articles/s",
            fmt(p.get("articles_per_s")),
            f"{fmt(p.get('trafilatura_pages_per_s'))} (trafilatura, 1 core)",
            p.get("efficiency"),
        )
        if p.get("efficiency_from_page") is not None:
            add(
                "pipeline_pages",
                "  … only text extracted from article pages",
                fmt(p.get("articles_from_page_per_s")),
                f"{fmt(p.get('trafilatura_pages_per_s'))} (trafilatura, 1 core)",
                p.get("efficiency_from_page"),
            )
    idle = res.get("idle")
    if idle:
        add(
            "idle",
            f"idle daemon, {n} feeds, {idle['window_s']:.0f} s: CPU %",
            fmt(idle.get("cpu_percent_one_core"), " %", 2),
            "—",
            idle.get("cpu_percent_one_core"),
        )
    head = ("measure", "ours", "reader", "ratio", "target", "verdict")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(6)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
        "| " + " | ".join("-" * w for w in widths) + " |",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join(lines), verdicts


# ---- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--feeds", type=int, default=None, help="default 2000 (--quick: 300)")
    parser.add_argument(
        "--pipeline-feeds", type=int, default=None, help="default 300 (--quick: 100)"
    )
    parser.add_argument(
        "--big-feeds",
        type=int,
        default=None,
        help="farm for memory flat in N: default 10000; 0 skips (--quick: 0)",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=None,
        help="idle-daemon window: default 60 (the issue's: 300); 0 skips (--quick: 0)",
    )
    parser.add_argument("--idle-warmup", type=float, default=20.0)
    parser.add_argument("--no-latency", action="store_true", help="skip the +200 ms runs")
    parser.add_argument("--no-pipeline", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="300 feeds, 100 for the pipeline, no big farm, no idle"
    )
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument(
        "--hosts",
        type=int,
        default=50,
        help="loopback addresses the farm's sites are spread over (127.0.1.1 …; 1: 127.0.0.1)",
    )
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "peer")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--reader-workers", type=int, default=16)
    parser.add_argument("--reader-latency-workers", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16, help="ours, zero latency")
    parser.add_argument("--latency-concurrency", type=int, default=512, help="ours, +200 ms")
    parser.add_argument(
        "--sample-pages", type=int, default=1000, help="pages for trafilatura's rate"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="per run of ours (s)")
    parser.add_argument(
        "--table-from", type=Path, default=None, help="print the table of a results JSON and exit"
    )
    args = parser.parse_args(argv)
    if args.table_from:
        print(build_table(json.loads(args.table_from.read_text()))[0])
        return
    # SIGTERM (and SIGINT, even when a non-interactive shell ignores it) end the run cleanly:
    # the running measurement kills its process tree, serve() stops nginx and the proxy
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupted)
    quick = {"feeds": 300, "pipeline_feeds": 100, "big_feeds": 0, "idle_seconds": 0.0}
    full = {"feeds": 2000, "pipeline_feeds": 300, "big_feeds": 10000, "idle_seconds": 60.0}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:  # an explicit option wins over --quick
            setattr(args, key, value)
    if args.quick and args.out == HERE / "results.json":
        args.out = HERE / "results-quick.json"

    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    runs_dir = work / "runs"
    if runs_dir.exists():
        shutil.rmtree(runs_dir)
    runs_dir.mkdir()
    logdir = runs_dir / "logs"
    logdir.mkdir()
    started = time.monotonic()

    peer = peer_python(work)
    # one farm (at least 2000 feeds, so --quick reuses the default one); runs take its first N
    size = max(2000, args.feeds, args.pipeline_feeds)
    farm_dir = work / (f"farm-{size}-h{args.hosts}" if args.hosts > 1 else f"farm-{size}")
    farm = ensure_farm(farm_dir, size, PORTS["main"], args.corpora, args.hosts)
    n = args.feeds
    res: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.peer " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "memory_gb": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9, 1),
            "load_at_start": loadavg(),
        },
        "versions": versions(peer),
        "settings": {
            "feeds": n,
            "hosts": len(farm.hosts),
            "pipeline_feeds": 0 if args.no_pipeline else args.pipeline_feeds,
            "big_feeds": args.big_feeds,
            "reader_workers": args.reader_workers,
            "reader_latency_workers": args.reader_latency_workers,
            "ours_concurrency": args.concurrency,
            "ours_latency_concurrency": args.latency_concurrency,
            "ours_workers": "default (one per core)",
            "farm": farm.stats,
        },
        "runs": {},
    }
    runs: dict[str, Any] = res["runs"]

    urls = runs_dir / "urls.txt"
    urls_latency = runs_dir / "urls-latency.txt"
    urls.write_text("\n".join(farm.urls(limit=n)) + "\n")
    urls_latency.write_text("\n".join(farm.urls(latency=True, limit=n)) + "\n")

    def ours_config(name: str, **kw: Any) -> Path:
        d = runs_dir / name
        d.mkdir(exist_ok=True)
        return write_config(farm, d / "feeds.yaml", database_url=f"sqlite:///{d / 'ours.db'}", **kw)

    def step(label: str, fn: Callable[[], Any]) -> Any:
        log(f"{label} …")
        return fn()

    with serve(farm_dir, latency=0.2) as served:
        assert served.latency_base
        # 1. zero latency, full_text: false
        cfg = ours_config("ours", limit=n, full_text=False, concurrency=args.concurrency)
        (runs_dir / "reader").mkdir()
        rdb = runs_dir / "reader" / "reader.sqlite"
        runs["reader-cold"] = step(
            "reader cold",
            lambda: run_reader(peer, "cold", rdb, urls, args.reader_workers, logdir, "reader-cold"),
        )
        runs["ours-cold"] = step(
            "ours cold", lambda: run_ours(cfg, logdir, "ours-cold", args.timeout)
        )
        runs["reader-warm"] = step(
            "reader warm",
            lambda: run_reader(peer, "warm", rdb, None, args.reader_workers, logdir, "reader-warm"),
        )
        runs["ours-warm"] = step(
            "ours warm", lambda: run_ours(cfg, logdir, "ours-warm", args.timeout)
        )
        runs["ours-warm"]["summary"] = summary_line(logdir / "ours-warm.log")
        runs["ours-cold"]["summary"] = summary_line(logdir / "ours-cold.log")

        # 5. idle daemon on that database, right away: every feed was just polled, none is due
        if args.idle_seconds > 0:
            res["idle"] = step(
                f"idle daemon, {args.idle_seconds:.0f} s",
                lambda: idle_daemon(cfg, logdir, args.idle_warmup, args.idle_seconds),
            )

        # 3. entries, feed by feed
        counted = run_reader(peer, "count", rdb, None, 1, logdir, "reader-count")
        theirs = counted["peer"].pop("per_feed", {})
        ours = our_counts(runs_dir / "ours" / "ours.db")
        res["entries"] = compare_entries(ours.pop("per_feed"), theirs, farm)
        res["entries"]["ours_detail"] = ours
        res["entries"]["reader_detail"] = counted["peer"]
        log(
            f"entries: ours {res['entries']['ours']}, reader {res['entries']['reader']}, farm {res['entries']['farm']}"
        )

        # 2. +200 ms
        if not args.no_latency:
            lcfg = ours_config(
                "ours-latency",
                limit=n,
                latency=True,
                full_text=False,
                concurrency=args.latency_concurrency,
            )
            (runs_dir / "reader-latency").mkdir()
            ldb = runs_dir / "reader-latency" / "reader.sqlite"
            w = args.reader_latency_workers
            runs["reader-latency-cold"] = step(
                "reader cold +200 ms",
                lambda: run_reader(
                    peer, "cold", ldb, urls_latency, w, logdir, "reader-latency-cold"
                ),
            )
            runs["ours-latency-cold"] = step(
                "ours cold +200 ms",
                lambda: run_ours(lcfg, logdir, "ours-latency-cold", args.timeout),
            )
            runs["reader-latency-warm"] = step(
                "reader warm +200 ms",
                lambda: run_reader(peer, "warm", ldb, None, w, logdir, "reader-latency-warm"),
            )
            runs["ours-latency-warm"] = step(
                "ours warm +200 ms",
                lambda: run_ours(lcfg, logdir, "ours-latency-warm", args.timeout),
            )

        # 4. full pipeline
        if not args.no_pipeline:
            p = args.pipeline_feeds
            pcfg = ours_config(
                "ours-pipeline", limit=p, full_text=True, concurrency=args.concurrency
            )
            sample = page_sample(farm, p, args.sample_pages)
            # trafilatura's rate right before and right after the pipeline, and their
            # mean: this machine's speed drifts within minutes, and one measurement taken
            # in another phase than the pipeline's skewed the ratio (docs/performance.md)
            before = step("trafilatura single core", lambda: trafilatura_rate(sample, logdir))
            runs["ours-pipeline"] = step(
                f"ours full pipeline, {p} feeds",
                lambda: run_ours(pcfg, logdir, "ours-pipeline", args.timeout),
            )
            counts = our_counts(runs_dir / "ours-pipeline" / "ours.db")
            counts.pop("per_feed")
            after = step("trafilatura single core", lambda: trafilatura_rate(sample, logdir))
            rate = dict(after)
            rates = [r.get("pages_per_s") for r in (before, after)]
            rate["pages_per_s_before_after"] = rates
            rate["pages_per_s"] = (
                round(sum(rates) / 2, 2) if all(r is not None for r in rates) else None
            )
            run = runs["ours-pipeline"]
            ok = run.get("returncode") == 0
            articles_per_s = counts["entries"] / run["wall_s"] if ok else None
            from_page = counts["text_source"].get("article", 0)
            from_page_per_s = from_page / run["wall_s"] if ok else None
            res["pipeline"] = {
                "feeds": p,
                "articles": counts["entries"],
                "articles_from_page": from_page,
                "articles_from_page_per_s": from_page_per_s,
                "efficiency_from_page": ratio(from_page_per_s, rate.get("pages_per_s")),
                "wall_s": run["wall_s"],
                "articles_per_s": articles_per_s,
                "trafilatura_pages_per_s": rate.get("pages_per_s"),
                "efficiency": ratio(articles_per_s, rate.get("pages_per_s")),
                "stored": counts,
                "trafilatura": rate,
            }

    # 6. memory flat in N
    if args.big_feeds:
        big_dir = work / (
            f"farm-{args.big_feeds}-h{args.hosts}" if args.hosts > 1 else f"farm-{args.big_feeds}"
        )
        try:
            big = ensure_farm(big_dir, args.big_feeds, PORTS["big"], args.corpora, args.hosts)
        except SystemExit as exc:
            log(f"big farm skipped: {exc}")
            res["settings"]["big_feeds"] = 0
            res["big_skipped"] = str(exc)
        else:
            with serve(big_dir, latency=None):
                d = runs_dir / "ours-big"
                d.mkdir()
                bcfg = write_config(
                    big,
                    d / "feeds.yaml",
                    database_url=f"sqlite:///{d / 'ours.db'}",
                    full_text=False,
                    concurrency=args.concurrency,
                )
                runs["ours-big-cold"] = step(
                    f"ours cold, {args.big_feeds} feeds",
                    lambda: run_ours(bcfg, logdir, "ours-big-cold", args.timeout),
                )
                runs["ours-big-cold"]["entries"] = our_counts(d / "ours.db")["entries"]

    res["seconds"] = round(time.monotonic() - started, 1)
    res["machine"]["load_at_end"] = loadavg()
    table, verdicts = build_table(res)
    res["table"] = table
    res["verdicts"] = verdicts
    args.out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(table)
    print(
        f"\n{res['command']}  ({res['seconds']:.0f} s; results in {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out})"
    )


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def summary_line(path: Path) -> str:
    """The last row of ``run --once``'s summary table (polled, not modified, failed, …)."""
    rows = [line for line in path.read_text(errors="replace").splitlines() if line.startswith("│")]
    return rows[-1] if rows else ""


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()
