"""Several `aggregator run` workers sharing one PostgreSQL database (real processes)."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from builders import rss
from httpserver import FixtureServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    except Exception:  # noqa: BLE001 - schema not there yet / server restarting
        return []
    finally:
        engine.dispose()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def config(path: Path, urls: list[str], **settings: object) -> Path:
    base: dict[str, object] = {
        "allow_private_networks": ["127.0.0.0/8"],
        "per_host_delay": "0s",
        "per_host_concurrency": 64,
        "concurrency": 16,
        "workers": 1,
        "tick": "1s",
        "full_text": False,
    }
    base.update(settings)
    path.write_text(yaml.safe_dump({"settings": base, "feeds": [{"url": u} for u in urls]}))
    return path


def start_worker(cfg: Path, db_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    return subprocess.Popen(
        [sys.executable, "-m", "aggregator", "run", "--config", str(cfg), "--database", db_url],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def events(log: Path) -> list[dict[str, object]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def farm(server: FixtureServer, count: int, delay: float = 0.0) -> list[str]:
    urls = []
    for n in range(count):
        body = rss(
            f"f{n}",
            [
                {
                    "title": f"f{n} item {i}",
                    "link": f"http://127.0.0.1:1/{n}/{i}",
                    "guid": f"{n}-{i}",
                }
                for i in range(2)
            ],
        ).encode()
        if delay:

            def slow(handler: BaseHTTPRequestHandler, body: bytes = body) -> None:
                time.sleep(delay)
                handler.send_response(200)
                handler.send_header("Content-Type", "application/rss+xml")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            urls.append(server.add(f"/feed/{n}.xml", handler=slow))
        else:
            urls.append(server.add(f"/feed/{n}.xml", body))
    return urls


def test_three_workers_poll_each_feed_exactly_once(
    server: FixtureServer, tmp_path: Path, db_url: str
) -> None:
    """Three processes on one database: PostgreSQL (SKIP LOCKED) and SQLite (BEGIN IMMEDIATE)."""
    pg_url = db_url
    urls = farm(server, 300, delay=0.2)
    cfg = config(tmp_path / "feeds.yaml", urls, concurrency=8)
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    procs = [start_worker(cfg, pg_url, log) for log in logs]  # all start (and migrate) at once
    try:
        wait_for(
            lambda: (
                query(pg_url, "SELECT count(*) FROM feeds WHERE last_polled_at IS NOT NULL")
                == [(300,)]
            ),
            120,
            "all 300 feeds polled",
        )
        time.sleep(3)  # a few more ticks: nothing is polled twice within the cycle
    finally:
        stop(procs)
    for path in (f"/feed/{n}.xml" for n in range(300)):
        assert len(server.hits(path)) == 1, path
    assert query(
        pg_url, "SELECT count(*), count(DISTINCT feed_id || '/' || entry_key) FROM items"
    ) == [(600, 600)]
    per_worker = [sum(1 for e in events(log) if e.get("event") == "poll") for log in logs]
    assert sum(per_worker) == 300
    assert all(n > 0 for n in per_worker), per_worker
    assert all(p.returncode == 0 for p in procs)
    assert query(pg_url, "SELECT count(*) FROM feeds WHERE lease_owner IS NOT NULL") == [(0,)]


def test_killed_worker_leases_expire_and_others_take_over(
    server: FixtureServer, tmp_path: Path, pg_url: str
) -> None:
    urls = farm(server, 32, delay=1.0)
    cfg = config(tmp_path / "feeds.yaml", urls, lease_seconds="4s", concurrency=4)
    victim = start_worker(cfg, pg_url, tmp_path / "victim.log")
    survivor = start_worker(cfg, pg_url, tmp_path / "survivor.log")
    try:
        wait_for(
            lambda: bool(
                query(pg_url, f"SELECT 1 FROM feeds WHERE lease_owner LIKE '%:{victim.pid}:%'")
            ),
            60,
            "the victim to hold leases",
        )
        held = query(pg_url, f"SELECT id FROM feeds WHERE lease_owner LIKE '%:{victim.pid}:%'")
        killed_at = time.time()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert held, "the victim held no lease when it was killed"
        wait_for(
            lambda: (
                query(
                    pg_url,
                    "SELECT count(*) FROM feeds WHERE last_polled_at IS NOT NULL AND lease_owner IS NULL",
                )
                == [(32,)]
            ),
            120,
            "all feeds done",
        )
    finally:
        stop([p for p in (victim, survivor) if p is not None])
    assert query(
        pg_url, "SELECT count(*), count(DISTINCT feed_id || '/' || entry_key) FROM items"
    ) == [(64, 64)]
    # the feeds the victim held were polled again after it died, by the survivor
    ids = ",".join(str(r[0]) for r in held)
    late = query(
        pg_url,
        f"SELECT count(*) FROM feeds WHERE id IN ({ids}) AND extract(epoch FROM last_polled_at) > {killed_at}",
    )
    assert late == [(len(held),)]
    assert sum(1 for e in events(tmp_path / "survivor.log") if e.get("event") == "poll") >= len(
        held
    )


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@pytest.fixture
def private_pg() -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A PostgreSQL server of our own (initdb + pg_ctl on a free port), to restart at will."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        if os.environ.get("CI") == "true":
            pytest.fail("initdb/pg_ctl not found: the PostgreSQL restart test must run in CI")
        pytest.skip("initdb/pg_ctl not found")
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        as_postgres = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="agg-pg-"))
    if as_postgres:
        pw = pwd.getpwnam("postgres")
        os.chown(folder, pw.pw_uid, pw.pw_gid)
    data = folder / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(
        [*as_postgres, initdb, "-D", str(data), "-U", "postgres", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"

    def start() -> None:
        subprocess.run(
            [
                *as_postgres,
                pg_ctl,
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(folder / "log"),
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
        )

    def halt() -> None:
        subprocess.run(
            [*as_postgres, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
            check=True,
            capture_output=True,
        )

    start()
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", start, halt
    finally:
        subprocess.run(
            [*as_postgres, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)


def test_workers_survive_a_postgresql_restart(
    server: FixtureServer,
    tmp_path: Path,
    private_pg: tuple[str, Callable[[], None], Callable[[], None]],
) -> None:
    url, start, halt = private_pg
    urls = farm(server, 20, delay=1.0)
    cfg = config(tmp_path / "feeds.yaml", urls, lease_seconds="4s", concurrency=4)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_worker(cfg, url, log) for log in logs]
    try:
        wait_for(
            lambda: bool(query(url, "SELECT 1 FROM feeds WHERE last_polled_at IS NOT NULL")),
            60,
            "the first polls",
        )
        halt()
        time.sleep(4)
        start()
        wait_for(
            lambda: (
                query(
                    url,
                    "SELECT count(*) FROM feeds WHERE last_polled_at IS NOT NULL AND error_count = 0 AND lease_owner IS NULL",
                )
                == [(20,)]
            ),
            180,
            "every feed polled after the restart",
        )
        assert all(p.poll() is None for p in procs), "a worker died"
    finally:
        stop(procs)
    assert query(
        url, "SELECT count(*), count(DISTINCT feed_id || '/' || entry_key) FROM items"
    ) == [(40, 40)]
    for log in logs:
        kinds = [e.get("event") for e in events(log)]
        assert kinds.count("database_unavailable") <= 1, kinds
    all_kinds = [e.get("event") for log in logs for e in events(log)]
    assert "database_unavailable" in all_kinds and "database_recovered" in all_kinds
