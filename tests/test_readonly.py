"""A database on a read-only mount: `serve`, `export`, `stories` and `feeds list` read it
(SQLite opened with mode=ro, or immutable=1 where SQLite cannot open its -shm there);
`aggregator run` says it cannot write it and exits 3 at once; a daemon whose database
turns read-only while it runs stops with exit status 3 instead of retrying forever."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import event

from aggregator.config import load_config
from aggregator.ingest.direct import save_now
from aggregator.records import CleanEntry, FeedSpec, FeedUpdate, ParsedEntry, PollToSave
from aggregator.scheduler import Daemon
from aggregator.store import DatabaseReadOnly, open_store
from builders import paragraph, rss
from conftest import write_config
from httpserver import FixtureServer
from ingest import aggregator

FEED = "https://news.example/feed.xml"


def fill(db: Path) -> None:
    """A database with one feed and three items (first seen now)."""
    store = open_store(f"sqlite:///{db}")
    try:
        store.upgrade()
        now = datetime.now(UTC)
        store.sync_feeds([FeedSpec(url=FEED, name="News")], now)
        (state,) = store.feed_states(now, due_only=False)
        new = []
        for n in range(3):
            text = paragraph(n, 200)
            entry = ParsedEntry(
                key=f"guid:{n}", guid=str(n), link=f"https://news.example/{n}", title=f"story {n}"
            )
            new.append(
                CleanEntry(
                    entry, entry.link, None, None, text, hashlib.sha1(text.encode()).hexdigest()
                )
            )
        update = FeedUpdate(polled_at=now, status=200, ok=True, next_check_at=now)
        save_now(store, PollToSave(state.id, update, tuple(new)))
    finally:
        store.close()


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """``view(folder)``: the folder, read-only: a read-only bind mount (root), or without
    write permission (other users)."""
    mounts: list[Path] = []

    def view(folder: Path) -> Path:
        if os.geteuid() != 0:
            for path in folder.iterdir():
                path.chmod(0o444)
            folder.chmod(0o555)
            return folder
        target = tmp_path / f"read-only-{len(mounts)}"
        target.mkdir()
        bind = subprocess.run(
            ["mount", "--bind", str(folder), str(target)], capture_output=True, text=True
        )
        if bind.returncode != 0:
            pytest.skip(f"cannot bind-mount here: {bind.stderr.strip()}")
        mounts.append(target)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
        return target

    yield view
    for target in reversed(mounts):
        subprocess.run(["umount", "-l", str(target)], check=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_everything(db: Path, cfg: Path, cwd: Path) -> dict[str, str]:
    """What each read-only command printed (each must succeed)."""
    url = f"sqlite:///{db}"
    out: dict[str, str] = {}
    for name, command in {
        "export": ["export", "-f", "jsonl"],
        "stories": ["stories", "--since", "1d", "--min-sources", "1", "--json"],
        "feeds": ["feeds", "list"],
    }.items():
        done = aggregator(*command, "-c", str(cfg), "-d", url, cwd=cwd)
        assert done.returncode == 0, (name, done.stderr)
        out[name] = done.stdout
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    serve = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "serve", "-d", url, "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/items", timeout=10) as r:
                    out["serve"] = r.read().decode()
                break
            except OSError:
                assert serve.poll() is None, serve.communicate()[1]
                assert time.monotonic() < deadline, "serve did not answer"
                time.sleep(0.2)
    finally:
        serve.terminate()
        serve.wait(30)
    return out


def titles_in(export: str) -> set[str]:
    return {json.loads(line)["title"] for line in export.splitlines() if line.strip()}


@pytest.mark.slow
def test_read_commands_read_a_database_on_a_read_only_mount(
    tmp_path: Path, read_only_view: Callable[[Path], Path]
) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    fill(folder / "news.db")
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": FEED}])
    before = sorted(p.name for p in folder.iterdir())
    view = read_only_view(folder)
    out = read_everything(view / "news.db", cfg, tmp_path)
    assert titles_in(out["export"]) == {"story 0", "story 1", "story 2"}
    assert len(out["stories"].splitlines()) == 3
    assert FEED in out["feeds"]
    assert "story 1" in out["serve"]
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written


@pytest.mark.slow
def test_read_commands_see_what_is_still_in_the_write_ahead_log(
    tmp_path: Path, read_only_view: Callable[[Path], Path]
) -> None:
    """A database whose writer had not checkpointed (a daemon still running elsewhere, or
    killed): the rows still in its -wal are read too."""
    folder = tmp_path / "db"
    folder.mkdir()
    fill(folder / "news.db")
    writer = sqlite3.connect(folder / "news.db", isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("UPDATE items SET title = 'only in the log' WHERE entry_key = 'guid:1'")
        assert (folder / "news.db-wal").stat().st_size > 0
        cfg = write_config(tmp_path / "feeds.yaml", [{"url": FEED}])
        view = read_only_view(folder)
        out = read_everything(view / "news.db", cfg, tmp_path)
    finally:
        writer.close()
    assert titles_in(out["export"]) == {"story 0", "only in the log", "story 2"}
    assert "only in the log" in out["serve"]


def test_a_log_without_its_index_on_a_read_only_mount_is_refused_with_the_reason(
    tmp_path: Path, read_only_view: Callable[[Path], Path]
) -> None:
    """A copy of the file and its -wal but not its -shm, on read-only media: SQLite can
    read it only as immutable, which skips the log; that would be silently stale."""
    folder = tmp_path / "db"
    folder.mkdir()
    fill(folder / "news.db")
    writer = sqlite3.connect(folder / "news.db", isolation_level=None)
    copy = tmp_path / "copy"
    copy.mkdir()
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("UPDATE items SET title = 'only in the log' WHERE entry_key = 'guid:1'")
        for name in ("news.db", "news.db-wal"):
            shutil.copyfile(folder / name, copy / name)
    finally:
        writer.close()
    view = read_only_view(copy)
    done = aggregator("export", "-f", "jsonl", "-d", f"sqlite:///{view / 'news.db'}", cwd=tmp_path)
    assert done.returncode == 3, done
    assert "write-ahead log news.db-wal holds changes" in " ".join(done.stderr.split())


@pytest.mark.slow
def test_run_on_a_read_only_database_exits_3_at_once(
    tmp_path: Path, read_only_view: Callable[[Path], Path]
) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    fill(folder / "news.db")
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": FEED}])
    view = read_only_view(folder)
    for command in (["run", "--once"], ["run"], ["db", "upgrade"]):
        done = aggregator(
            *command, "-c", str(cfg), "-d", f"sqlite:///{view / 'news.db'}", timeout=60
        )
        assert done.returncode == 3, (command, done)
        assert "read-only" in done.stderr or "not writable" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_a_daemon_whose_database_turns_read_only_stops_with_it(
    server: FixtureServer, tmp_path: Path
) -> None:
    """SQLite refuses writes from then on (``PRAGMA query_only``: "attempt to write a
    readonly database", as on a file made read-only): the daemon's next claim fails with
    a permanent error, and the daemon stops with it (the command exits 3)."""
    url = server.add("/f.xml", rss("f", [{"title": "one", "link": "http://127.0.0.1:1/1"}]))
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": url}], tick="1s", reload_interval="0s")
    db = tmp_path / "d.db"
    config = load_config(cfg, f"sqlite:///file:{db}?uri=true")
    store = open_store(config.database_url)
    store.upgrade()

    def read_only(conn: object, _record: object) -> None:
        conn.execute("PRAGMA query_only=1")  # type: ignore[attr-defined]

    async def go() -> BaseException | None:
        daemon = Daemon(config, store, config_path=None, database_override=None)
        task = asyncio.create_task(daemon.run())
        deadline = time.monotonic() + 60
        while not server.hits("/f.xml"):
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        event.listen(store.engine, "connect", read_only)
        store.dispose()
        try:
            await asyncio.wait_for(task, timeout=60)
        except DatabaseReadOnly as exc:
            return exc
        return None

    try:
        error = asyncio.run(go())
    finally:
        event.remove(store.engine, "connect", read_only)
        store.close()
    assert isinstance(error, DatabaseReadOnly)
    assert "read-only" in str(error)
