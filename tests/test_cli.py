"""The command line as an operator runs it: real processes, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from builders import article_page, rss
from conftest import write_config
from httpserver import FixtureServer
from ingest import aggregator


def count(db: Path, sql: str) -> int:
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


def site(server: FixtureServer) -> list[dict[str, object]]:
    page = server.add("/a/1.html", article_page("One", 1), content_type="text/html")
    good = server.add("/good.xml", rss("good", [{"title": "One", "link": page, "guid": "1"}]))
    return [{"url": good, "name": "Good"}, {"url": server.url("/gone.xml")}]


def test_run_once_default_database_and_summary(server: FixtureServer, tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    write_config(tmp_path / "config" / "feeds.yaml", site(server))
    result = aggregator("run", "--once", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    db = tmp_path / "data" / "aggregator.db"  # the default database, folder created
    assert db.exists()
    assert count(db, "SELECT count(*) FROM items") == 1
    out = result.stdout
    assert "feeds polled" in out and "new items" in out and "failed" in out
    assert "HTTP 404" in out  # the failing feed is named with its error
    # standard output carries the summary only; the log is JSON lines on standard error
    assert not any(line.startswith("{") for line in out.splitlines())
    polls = [json.loads(line) for line in result.stderr.splitlines()]
    assert any(p.get("event") == "poll" and p.get("new_items") == 1 for p in polls)


def test_bad_config_exits_non_zero_with_one_message(tmp_path: Path) -> None:
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text("feeds:\n  - url: https://a.example/f\n    intervall: 5m\n")
    result = aggregator("run", "--once", "--config", str(cfg), cwd=tmp_path)
    assert result.returncode == 2
    assert "feed #1 (https://a.example/f), field 'intervall': unknown key" in result.stderr
    assert "Traceback" not in result.stderr
    check = aggregator("check", "--config", str(cfg), cwd=tmp_path)
    assert check.returncode == 2 and "intervall" in check.stderr


def test_unusable_database_exits_non_zero(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "feeds.yaml", [])
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = aggregator(
        "run",
        "--once",
        "--config",
        str(cfg),
        "--database",
        f"sqlite:///{blocker}/sub/x.db",
        cwd=tmp_path,
    )
    assert result.returncode == 3, result
    assert "error:" in result.stderr and "Traceback" not in result.stderr
    pg = aggregator(
        "run",
        "--once",
        "--config",
        str(cfg),
        "--database",
        "postgresql://postgres@127.0.0.1:1/none",
        cwd=tmp_path,
    )
    assert pg.returncode == 3 and "does not answer" in pg.stderr


def test_check_lists_feeds_and_db_upgrade(server: FixtureServer, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "feeds.yaml", site(server))
    check = aggregator("check", "--config", str(cfg), cwd=tmp_path)
    assert check.returncode == 0 and "2 feeds" in check.stdout and "Good" in check.stdout
    db = tmp_path / "x.db"
    up = aggregator("db", "upgrade", "--database", f"sqlite:///{db}", cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert count(db, "SELECT count(*) FROM alembic_version") == 1


@pytest.mark.slow
def test_daemon_polls_and_stops_cleanly_on_sigterm(server: FixtureServer, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "feeds.yaml", site(server), tick="1s")
    db = tmp_path / "d.db"
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
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if db.exists():
                try:
                    if (
                        count(db, "SELECT count(*) FROM feeds WHERE last_polled_at IS NOT NULL")
                        == 2
                    ):
                        break
                except Exception:  # noqa: BLE001 - the schema may not exist yet
                    pass
            time.sleep(0.3)
        else:
            pytest.fail("the daemon did not poll both feeds within 60 s")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert time.monotonic() - started < 10
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert count(db, "SELECT count(*) FROM items") == 1
    assert out == ""  # the log is on standard error
    events = [json.loads(line).get("event") for line in err.splitlines()]
    assert "started" in events and "poll" in events and "stopped" in events
