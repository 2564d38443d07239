"""A bug inside one feed's poll is logged as critical with its traceback, recorded on that
feed (last_error, error_count, a backoff), and never ends the daemon, a `run --once`, or
another feed's poll. The bug comes from a fake fetch component (behind the pipeline's
FetchPort) that fails one URL the way a bug would; every other URL goes to the real
fetcher and the real test server."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from pathlib import Path

import pytest

from aggregator.app import fetch_limits
from aggregator.config import load_config
from aggregator.fetch import Fetcher
from aggregator.records import FetchResult
from aggregator.scheduler import Daemon, RunSummary, run_once
from aggregator.store import open_store
from builders import rss
from conftest import write_config
from httpserver import FixtureServer
from ingest import rows


class BuggyFetcher:
    """The real fetcher, except that one URL raises an exception no stage expects."""

    def __init__(self, inner: Fetcher, bad_url: str) -> None:
        self.inner = inner
        self.bad_url = bad_url
        self.calls: list[str] = []

    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        page: bool = False,
    ) -> FetchResult:
        self.calls.append(url)
        if url == self.bad_url:
            raise ZeroDivisionError("a bug inside the poll")
        return await self.inner.fetch(url, etag=etag, last_modified=last_modified, page=page)


def two_feeds(server: FixtureServer, tmp_path: Path) -> tuple[Path, str, str]:
    good = server.add(
        "/good.xml",
        rss(
            "good",
            [
                {"title": f"Good {i}", "link": server.url(f"/g{i}"), "guid": f"g{i}"}
                for i in range(3)
            ],
        ),
    )
    bad = server.add(
        "/bad.xml", rss("bad", [{"title": "b", "link": server.url("/b"), "guid": "b"}])
    )
    cfg = write_config(
        tmp_path / "feeds.yaml",
        [{"url": bad, "full_text": False}, {"url": good, "full_text": False}],
        tick="1s",
    )
    return cfg, good, bad


def feed_row(db_url: str, url: str) -> tuple[object, ...]:
    (row,) = rows(
        db_url,
        f"SELECT error_count, last_error, last_polled_at, next_check_at FROM feeds WHERE url = '{url}'",
    )
    return row


def _when(value: object) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def assert_recorded(db_url: str, bad: str) -> None:
    errors, last_error, polled_at, next_check = feed_row(db_url, bad)
    assert errors == 1
    assert "internal error" in str(last_error) and "ZeroDivisionError" in str(last_error)
    # backed off like any failure: not due again at once
    assert (_when(next_check) - _when(polled_at)).total_seconds() > 60


def assert_critical(caplog: pytest.LogCaptureFixture, bad: str) -> None:
    crashes = [r for r in caplog.records if getattr(r, "event", None) == "poll_crashed"]
    assert crashes, [r.getMessage() for r in caplog.records]
    record = crashes[0]
    assert record.levelno == logging.CRITICAL
    assert record.feed == bad  # type: ignore[attr-defined]
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError


def test_a_bug_in_one_poll_is_recorded_and_the_daemon_goes_on(
    server: FixtureServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, good, bad = two_feeds(server, tmp_path)
    config = load_config(cfg, f"sqlite:///{tmp_path / 'daemon.db'}")
    db_url = config.database_url
    store = open_store(db_url)
    store.upgrade()

    async def scenario() -> list[str]:
        fetcher = BuggyFetcher(Fetcher(fetch_limits(config)), bad)
        daemon = Daemon(config, store, config_path=None, database_override=None, fetcher=fetcher)
        running = asyncio.create_task(daemon.run())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not running.done():
            done = await asyncio.to_thread(
                rows, db_url, f"SELECT count(*) FROM feeds WHERE error_count > 0 AND url = '{bad}'"
            )
            if done == [(1,)] and server.hits("/good.xml"):
                break
            await asyncio.sleep(0.2)
        still_running = not running.done()
        daemon.stop_event.set()
        await asyncio.wait_for(running, 30)  # stops cleanly: the bug did not break it
        await fetcher.inner.aclose()
        assert still_running
        return fetcher.calls

    try:
        with caplog.at_level(logging.INFO):
            calls = asyncio.run(scenario())
    finally:
        store.close()
    assert bad in calls and good in calls
    assert_recorded(db_url, bad)
    assert_critical(caplog, bad)
    assert rows(
        db_url,
        f"SELECT count(*) FROM items i JOIN feeds f ON f.id = i.feed_id WHERE f.url = '{good}'",
    ) == [(3,)]
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def test_a_bug_in_one_poll_does_not_end_run_once(
    server: FixtureServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, good, bad = two_feeds(server, tmp_path)
    config = load_config(cfg, f"sqlite:///{tmp_path / 'once.db'}")
    db_url = config.database_url
    store = open_store(db_url)
    store.upgrade()

    async def scenario() -> RunSummary:
        inner = Fetcher(fetch_limits(config))
        try:
            return await run_once(config, store, fetcher=BuggyFetcher(inner, bad))
        finally:
            await inner.aclose()

    try:
        with caplog.at_level(logging.INFO):
            summary = asyncio.run(scenario())
    finally:
        store.close()
    assert summary.polled == 2 and summary.failed == 1
    ((url, error),) = summary.failures
    assert url == bad and "ZeroDivisionError" in error
    assert_recorded(db_url, bad)
    assert_critical(caplog, bad)
    assert rows(
        db_url,
        "SELECT f.url, count(*) FROM items i JOIN feeds f ON f.id = i.feed_id GROUP BY f.url",
    ) == [(good, 3)]
