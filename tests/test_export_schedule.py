"""Scheduled exports (``exports:`` in feeds.yaml) run by the daemon's APScheduler, with
the clock injected: the fire time comes from the cron trigger, never from sleeping."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from bs4 import BeautifulSoup

import exportdata
from aggregator.config import load_config
from aggregator.errors import ConfigError
from aggregator.scheduler import Daemon
from aggregator.store import open_store
from exportdata import World

world = exportdata.world


def config_with_exports(world: World, folder: Path, exports: list[dict[str, Any]]) -> Path:
    raw = yaml.safe_load(world.config_path.read_text(encoding="utf-8"))
    raw["exports"] = exports
    path = folder / "feeds.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def counter(daemon: Daemon, name: str, outcome: str) -> float:
    value = daemon.metrics.registry.get_sample_value(
        "aggregator_export_runs_total", {"export": name, "outcome": outcome}
    )
    return value or 0.0


def test_scheduled_exports_fire_and_a_failure_stops_nothing(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be", encoding="utf-8")
    path = config_with_exports(
        world,
        tmp_path,
        [
            {
                "name": "broken",
                "format": "json",
                "path": str(blocker / "feed.json"),
                "schedule": "0 7 * * *",
            },
            {
                "name": "digest",
                "format": "html",
                "path": str(tmp_path / "exports/digest.html"),
                "schedule": "0 7 * * *",
                "timezone": "Europe/Berlin",
                "title": "Morning digest",
            },
            {
                "name": "news",
                "format": "jsonl",
                "path": str(tmp_path / "exports/news.jsonl"),
                "schedule": "*/15 * * * *",
                "tags": ["news"],
            },
        ],
    )
    config = load_config(path)
    store = open_store(world.db_url)
    daemon = Daemon(config, store, config_path=path, database_override=None)
    try:
        now = datetime.now(UTC)
        triggers = daemon.export_triggers()
        fire = {
            name: trigger.get_next_fire_time(None, now) for name, (_e, trigger) in triggers.items()
        }
        berlin = fire["digest"].astimezone(triggers["digest"][1].timezone)
        assert (berlin.hour, berlin.minute) == (7, 0)
        assert fire["news"].minute % 15 == 0 and fire["news"] > now

        async def run_all() -> list[bool]:
            # in the order the scheduler would: the broken one first
            return [
                await daemon.run_export(name, fire[name]) for name in ("broken", "digest", "news")
            ]

        with caplog.at_level(logging.INFO, logger="aggregator.daemon"):
            results = asyncio.run(run_all())
    finally:
        store.close()
    assert results == [False, True, True]
    failed = [r for r in caplog.records if getattr(r, "event", None) == "export_failed"]
    assert len(failed) == 1 and failed[0].levelno == logging.ERROR
    assert "broken" in failed[0].getMessage() and str(blocker) in failed[0].getMessage()
    digest = BeautifulSoup((tmp_path / "exports/digest.html").read_text("utf-8"), "lxml")
    assert digest.title is not None and digest.title.get_text() == "Morning digest"
    assert len(digest.select("li.story")) == 9  # within 24 h before the fire time
    assert "CET" in digest.text or "CEST" in digest.text  # times shown in the export's zone
    lines = (tmp_path / "exports/news.jsonl").read_text("utf-8").splitlines()
    assert len(lines) == 8
    assert not list((tmp_path / "exports").glob(".*.tmp"))
    assert counter(daemon, "broken", "failed") == 1
    assert counter(daemon, "digest", "ok") == 1 and counter(daemon, "news", "ok") == 1


def test_the_scheduler_runs_the_export_job(world: World, tmp_path: Path) -> None:
    """The job the daemon registers really is the export: moved to "now", APScheduler
    runs it and the file appears; the other jobs keep their cron times."""
    target = tmp_path / "feed.atom"
    path = config_with_exports(
        world,
        tmp_path,
        [
            {"name": "atom", "format": "atom", "path": str(target), "schedule": "30 6 * * 1"},
            {
                "name": "later",
                "format": "rss",
                "path": str(tmp_path / "x.rss"),
                "schedule": "0 0 1 1 *",
            },
        ],
    )
    config = load_config(path)
    store = open_store(world.db_url)
    daemon = Daemon(config, store, config_path=path, database_override=None)

    async def go() -> tuple[dict[str, datetime], bool]:
        scheduler = AsyncIOScheduler(timezone=UTC, event_loop=asyncio.get_running_loop())
        daemon.schedule_exports(scheduler)
        scheduler.start(paused=True)
        try:
            jobs = {job.id: job.next_run_time for job in scheduler.get_jobs()}
            done = asyncio.Event()
            original = daemon.run_export

            async def tracked(name: str, now: datetime | None = None) -> bool:
                ok = await original(name, now)
                done.set()
                return ok

            scheduler.modify_job("export:atom", func=tracked, next_run_time=datetime.now(UTC))
            scheduler.resume()
            await asyncio.wait_for(done.wait(), timeout=30)
            return jobs, target.exists()
        finally:
            scheduler.shutdown(wait=False)

    try:
        jobs, written = asyncio.run(go())
    finally:
        store.close()
    assert set(jobs) == {"export:atom", "export:later"}
    assert (jobs["export:atom"].weekday(), jobs["export:atom"].hour) == (0, 6)
    assert (jobs["export:later"].month, jobs["export:later"].day) == (1, 1)
    assert written and target.read_text("utf-8").startswith("<?xml")
    assert not (tmp_path / "x.rss").exists()


@pytest.mark.parametrize(
    ("export", "field", "words"),
    [
        ({"format": "pdf"}, "format", "unknown format"),
        ({"schedule": "0 7 * *"}, "schedule", "cron expression"),
        ({"schedule": "61 7 * * *"}, "schedule", "cron expression"),
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ({"since": "last week"}, "since", "duration"),
        ({"limit": 0}, "limit", "greater than"),
        ({"surprise": 1}, "surprise", "unknown key"),
    ],
)
def test_export_config_errors_name_file_export_and_field(
    tmp_path: Path, export: dict[str, Any], field: str, words: str
) -> None:
    entry = {
        "name": "daily",
        "format": "html",
        "path": "exports/digest.html",
        "schedule": "0 7 * * *",
        **export,
    }
    path = tmp_path / "feeds.yaml"
    path.write_text(yaml.safe_dump({"feeds": [], "exports": [entry]}), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message and "export #1 (daily)" in message
    assert f"field '{field}'" in message and words in message, message


def test_duplicate_export_names_are_refused(tmp_path: Path) -> None:
    entry = {"name": "daily", "format": "html", "path": "a.html", "schedule": "0 7 * * *"}
    path = tmp_path / "feeds.yaml"
    path.write_text(yaml.safe_dump({"exports": [entry, {**entry, "path": "b.html"}]}), "utf-8")
    with pytest.raises(ConfigError, match=r"export #2 \(daily\), field 'name': duplicate"):
        load_config(path)


@pytest.mark.parametrize(
    ("schedule", "days"),
    [
        ("30 6 * * 1", {"Mon"}),
        ("0 7 * * 0", {"Sun"}),
        ("0 7 * * 7", {"Sun"}),
        ("0 7 * * 1-5", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
        ("0 7 * * 5-7", {"Fri", "Sat", "Sun"}),
        ("0 7 * * */2", {"Sun", "Tue", "Thu", "Sat"}),
        ("0 7 * * sat,sun", {"Sat", "Sun"}),
    ],
)
def test_cron_weekdays_follow_crontab_not_apscheduler(schedule: str, days: set[str]) -> None:
    """crontab counts Sunday = 0; APScheduler 3's own day numbers start at Monday."""
    from datetime import timedelta

    from aggregator.config import cron_trigger

    trigger = cron_trigger(schedule)
    moment = datetime(2026, 6, 1, tzinfo=UTC)
    seen = set()
    for _ in range(14):
        moment = trigger.get_next_fire_time(None, moment + timedelta(seconds=1))
        seen.add(moment.strftime("%a"))
    assert seen == days
