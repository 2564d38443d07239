"""The daemon as a real process: live config reload, SIGHUP, kill -9 crash safety, politeness."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from builders import article_page, rss
from httpserver import FixtureServer
from ingest import aggregator

pytestmark = pytest.mark.slow


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    except Exception:  # noqa: BLE001 - the schema may not exist yet
        return []
    finally:
        engine.dispose()


def descendants(pid: int) -> set[int]:
    """The processes below ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def write(cfg: Path, feeds: list[dict[str, object]], **settings: object) -> None:
    base: dict[str, object] = {
        "allow_private_networks": ["127.0.0.0/8"],
        "per_host_delay": "0s",
        "per_host_concurrency": 8,
        "workers": 1,
        "tick": "1s",
    }
    base.update(settings)
    tmp = cfg.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"settings": base, "feeds": feeds}))
    os.replace(tmp, cfg)


@contextmanager
def daemon(cfg: Path, db: Path) -> Iterator[subprocess.Popen[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aggregator",
            "run",
            "--config",
            str(cfg),
            "--database",
            f"sqlite:///{db}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def feed(server: FixtureServer, name: str, n: int = 2) -> str:
    return server.add(
        f"/{name}.xml",
        rss(
            name,
            [
                {
                    "title": f"{name} {i}",
                    "link": f"http://127.0.0.1:1/{name}/{i}",
                    "guid": f"{name}{i}",
                }
                for i in range(n)
            ],
        ),
    )


def polled(db: Path, url: str) -> bool:
    return bool(
        query(db, f"SELECT 1 FROM feeds WHERE url = '{url}' AND last_polled_at IS NOT NULL")
    )


def test_live_reload_of_feeds_yaml(server: FixtureServer, tmp_path: Path) -> None:
    cfg, db = tmp_path / "feeds.yaml", tmp_path / "d.db"
    a, b = feed(server, "a"), feed(server, "b")
    write(cfg, [{"url": a, "full_text": False}])
    with daemon(cfg, db) as proc:
        wait_for(lambda: polled(db, a), 60, "the first feed")
        # a new feed is picked up within seconds, without a restart
        write(cfg, [{"url": a, "full_text": False}, {"url": b, "full_text": False}])
        took = wait_for(lambda: polled(db, b), 30, "the added feed")
        assert took < 10
        # an invalid edit is reported once and the daemon keeps the last good config
        cfg.write_text(yaml.safe_dump({"feeds": [{"url": a, "interval": "sometimes"}]}))
        time.sleep(5)
        assert proc.poll() is None
        # a removed feed stops being polled; its items are kept
        write(cfg, [{"url": a, "full_text": False}])
        wait_for(
            lambda: bool(
                query(db, f"SELECT 1 FROM feeds WHERE url = '{b}' AND removed_at IS NOT NULL")
            ),
            15,
            "removal",
        )
        server.clear()
        time.sleep(2.5)
        assert server.hits("/b.xml") == []
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    errors = [e for e in events if e.get("event") == "config_error"]
    assert len(errors) == 1, errors
    assert "feed #1" in errors[0]["error"] and "'interval'" in errors[0]["error"]
    assert query(
        db,
        "SELECT count(*) FROM items i JOIN feeds f ON f.id = i.feed_id WHERE f.url = '" + b + "'",
    ) == [(2,)]


def test_sighup_reloads(server: FixtureServer, tmp_path: Path) -> None:
    cfg, db = tmp_path / "feeds.yaml", tmp_path / "d.db"
    a, b = feed(server, "a"), feed(server, "b")
    write(cfg, [{"url": a, "full_text": False}], reload_interval=0)  # SIGHUP only
    with daemon(cfg, db) as proc:
        wait_for(lambda: polled(db, a), 60, "the first feed")
        write(
            cfg, [{"url": a, "full_text": False}, {"url": b, "full_text": False}], reload_interval=0
        )
        time.sleep(3)
        assert not polled(db, b)  # no file watching with reload_interval 0
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: polled(db, b), 15, "the feed added by SIGHUP")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert proc.returncode == 0


def test_kill_9_mid_poll_leaves_no_partial_feed(server: FixtureServer, tmp_path: Path) -> None:
    def slow_page(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(0.4)
        body = article_page("Slow", len(handler.path)).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    feeds = []
    per_feed = 6
    for f in range(8):
        items = []
        for i in range(per_feed):
            path = f"/p/{f}/{i}.html"
            server.add(path, handler=slow_page)
            items.append(
                {"title": f"Feed {f} story {i}", "link": server.url(path), "guid": f"{f}-{i}"}
            )
        feeds.append({"url": server.add(f"/f{f}.xml", rss(f"f{f}", items))})
    cfg, db = tmp_path / "feeds.yaml", tmp_path / "d.db"
    write(cfg, feeds, per_host_concurrency=3, concurrency=4)

    with daemon(cfg, db) as proc:
        wait_for(lambda: bool(query(db, "SELECT 1 FROM items")), 120, "the first stored feed")
        helpers = descendants(proc.pid)  # forkserver, pool workers, store writer, tracker
        assert len(helpers) >= 3, helpers
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # nothing of the killed daemon lingers (a pool worker used to wait on its job queue
    # forever, keeping the forkserver alive with it)
    wait_for(lambda: not any(alive(pid) for pid in helpers), 30, "the daemon's helpers to exit")

    counts = dict(
        query(
            db,
            "SELECT f.url, count(i.id) FROM feeds f LEFT JOIN items i ON i.feed_id = f.id GROUP BY f.url",
        )
    )
    assert set(counts.values()) <= {0, per_feed}, counts  # each feed: all of it or nothing
    interrupted = [u for u, c in counts.items() if c == 0]
    assert interrupted, "the kill came too late to interrupt anything"

    server.clear()
    result = aggregator(
        "run", "--once", "--config", str(cfg), "--database", f"sqlite:///{db}", timeout=180
    )
    assert result.returncode == 0, result.stderr
    after = dict(
        query(
            db,
            "SELECT f.url, count(i.id) FROM feeds f LEFT JOIN items i ON i.feed_id = f.id GROUP BY f.url",
        )
    )
    assert set(after.values()) == {per_feed}, after
    assert query(db, "SELECT count(*), count(DISTINCT feed_id || '/' || entry_key) FROM items") == [
        (8 * per_feed, 8 * per_feed)
    ]
    for url in interrupted:
        assert server.hits(url.replace(server.base, ""))  # the interrupted feeds were polled again


@pytest.mark.parametrize("pidfd", [True, False])
def test_a_pool_worker_follows_its_owner_out(pidfd: bool) -> None:
    """``pooljobs.follow`` ends the process when its owner ends, through a pidfd or, where
    there is none, by checking every 2 s."""
    worker = (
        "import os, sys, time\n"
        "from aggregator import pooljobs\n"
        f"{'' if pidfd else 'del os.pidfd_open'}\n"
        "pooljobs.follow(int(sys.argv[1]))\n"
        "time.sleep(120)\n"
    )
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, os, time\n"
            f"w = subprocess.Popen([sys.executable, '-c', {worker!r}, str(os.getpid())])\n"
            "print(w.pid, flush=True)\n"
            "time.sleep(1.0)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    pid = int(owner.stdout.readline())
    assert alive(pid)
    owner.wait(timeout=30)
    wait_for(lambda: not alive(pid), 15, "the worker to follow its owner out")


def test_per_host_limits_are_kept(server: FixtureServer, tmp_path: Path) -> None:
    lock = threading.Lock()
    active = [0, 0]  # in flight now, peak
    starts: list[float] = []

    def page(handler: BaseHTTPRequestHandler) -> None:
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
            starts.append(time.monotonic())
        time.sleep(0.3)
        body = article_page("P", len(handler.path)).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        with lock:
            active[0] -= 1

    items = []
    for i in range(6):
        server.add(f"/pp/{i}.html", handler=page)
        items.append({"title": f"S{i}", "link": server.url(f"/pp/{i}.html"), "guid": str(i)})
    url = server.add("/pf.xml", rss("p", items))
    cfg, db = tmp_path / "feeds.yaml", tmp_path / "d.db"
    write(cfg, [{"url": url}], per_host_concurrency=2, per_host_delay="0.5s")
    result = aggregator(
        "run", "--once", "--config", str(cfg), "--database", f"sqlite:///{db}", timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert active[1] <= 2
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 6 and min(gaps) >= 0.45, gaps
