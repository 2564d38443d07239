"""The operator's log, from real processes: JSON lines on standard error, the start line's
schedule after a restart, a tick that overruns said in our words (not APScheduler's), no
uvicorn colour fields."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from builders import rss
from conftest import write_config
from httpserver import FixtureServer
from ingest import aggregator

WAIT = 90.0  # seconds for a line to show up (a slow, shared machine)


class Process:
    """An ``aggregator`` child whose standard error is read line by line as it comes."""

    def __init__(self, *args: str, cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aggregator", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.stdout = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first JSON log line that ``match``es (every line read is kept in ``seen``)."""
        while True:
            try:
                line = self.lines.get(timeout=WAIT)
            except queue.Empty:
                pytest.fail(f"no such log line within {WAIT} s; got: {self.seen}")
            self.seen.append(line)
            if not line.startswith("{"):
                continue  # a command's own note ("serving on …")
            record: dict[str, Any] = json.loads(line)
            if match(record):
                return record

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.stdout, _ = self.proc.communicate(timeout=60)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.proc.returncode


@contextmanager
def running(*args: str, cwd: Path) -> Iterator[Process]:
    process = Process(*args, cwd=cwd)
    try:
        yield process
    finally:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


def test_after_a_restart_the_start_line_says_where_the_schedule_stands(
    server: FixtureServer, tmp_path: Path, db_url: str
) -> None:
    good = server.add("/good.xml", rss("good", [{"title": "One", "link": "http://x/1"}]))
    cfg = write_config(
        tmp_path / "feeds.yaml",
        [{"url": good}, {"url": server.url("/gone.xml")}],
        full_text=False,
    )
    first = aggregator("run", "--once", "--config", str(cfg), "--database", db_url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    with running("run", "--config", str(cfg), "--database", db_url, cwd=tmp_path) as daemon:
        started = daemon.wait_for(lambda r: r.get("event") == "started")
        assert daemon.stop() == 0
    assert (started["due"], started["backoff"], started["held"], started["retired"]) == (0, 1, 0, 0)
    assert started["waiting"] == 1 and started["feeds"] == 2
    next_poll = datetime.fromisoformat(started["next_poll_at"])
    assert next_poll > datetime.fromisoformat(started["ts"])
    assert (
        "2 feeds: 0 due, 1 in backoff, 0 held by Retry-After, 0 retired, 1 waiting"
        in (started["msg"])
    )
    assert f"next poll at {next_poll:%Y-%m-%d %H:%M:%S} UTC (in " in started["msg"]
    assert daemon.stdout == ""  # the log is on standard error


@pytest.mark.postgres
@pytest.mark.slow
def test_a_tick_still_running_is_said_once_in_our_words(
    server: FixtureServer, tmp_path: Path, pg_url: str
) -> None:
    """The feeds table is locked from outside, so the tick's claim waits; the next ticks
    find it still running. APScheduler's own line about it is not in the log."""
    good = server.add("/good.xml", rss("good", [{"title": "One", "link": "http://x/1"}]))
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": good}], full_text=False, tick="0.3s")
    engine = create_engine(pg_url)
    try:
        with running("run", "--config", str(cfg), "--database", pg_url, cwd=tmp_path) as daemon:
            daemon.wait_for(lambda r: r.get("event") == "poll")
            with engine.connect() as conn, conn.begin():
                conn.execute(text("LOCK TABLE feeds IN ACCESS EXCLUSIVE MODE"))
                line = daemon.wait_for(lambda r: r.get("event") == "tick_still_running")
            assert daemon.stop() == 0
    finally:
        engine.dispose()
    assert line["msg"].startswith("a tick is still running; 0 polls in flight (")
    assert line["logger"] == "aggregator.daemon" and line["level"] == "info"
    log = "".join(daemon.seen)
    assert "maximum number of running instances" not in log
    assert sum(1 for entry in daemon.seen if "tick_still_running" in entry) == 1  # a minute


def test_uvicorn_lines_carry_no_colour_field(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'a.db'}"
    assert aggregator("db", "upgrade", "--database", db, cwd=tmp_path).returncode == 0
    with running("serve", "--port", "0", "--database", db, cwd=tmp_path) as serve:
        started = serve.wait_for(lambda r: r["logger"].startswith("uvicorn"))
        serve.stop()  # uvicorn re-raises the SIGTERM it handled: the exit status says so
    assert started["msg"].startswith("Started server process")
    lines = [json.loads(line) for line in serve.seen if line.startswith("{")]
    assert lines and not [line for line in lines if "color_message" in line]
    assert "{" not in serve.stdout


def test_apschedulers_skipped_run_line_is_dropped_and_its_other_lines_kept() -> None:
    """What APScheduler logs (its logger, its words) when a job's last run is still going."""
    code = """
import logging
from aggregator.logs import setup_logging
setup_logging("INFO", json_lines=True)
log = logging.getLogger("apscheduler.scheduler")
log.warning('Execution of job "%s" skipped: maximum number of running instances reached (%d)',
            "Daemon.scheduled_tick (trigger: interval[0:00:05], next run at: ...)", 1)
log.warning("Run time of job %s was missed by %s", "tick", "0:00:07")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == ""
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["msg"] for line in lines] == ["Run time of job tick was missed by 0:00:07"]
