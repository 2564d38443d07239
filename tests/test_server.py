"""The HTTP face against a running uvicorn server on 127.0.0.1 (port 0)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import feedparser
import httpx
import pytest
import uvicorn
import yaml
from prometheus_client.parser import text_string_to_metric_families

import exportdata
from aggregator.config import Config, load_config
from aggregator.metrics import Metrics
from aggregator.scheduler import Daemon
from aggregator.server import bind, create_app
from aggregator.store import open_store
from exportdata import World
from httpserver import FixtureServer

world = exportdata.world


@contextmanager
def running(app: Any) -> Iterator[str]:
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            thread.join(0.01)
        assert server.started
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture(scope="module")
def served(world: World) -> Iterator[tuple[str, Clock]]:
    config = load_config(world.config_path)
    store = open_store(world.db_url)
    clock = Clock()
    try:
        with running(create_app(store, lambda: config, clock=clock)) as base:
            yield base, clock
    finally:
        store.close()


def get(base: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(base + path, params=params, timeout=30)


def test_export_endpoints(served: tuple[str, Clock]) -> None:
    base, _ = served
    atom = get(base, "/export/atom")
    assert atom.status_code == 200
    assert atom.headers["content-type"].startswith("application/atom+xml")
    feed = feedparser.parse(atom.content)
    assert not feed.bozo and len(feed.entries) == 9
    assert feed.feed.links[0].href == base + "/"
    per_item = feedparser.parse(get(base, "/export/rss", per_item="1", feed="Alpha Times").content)
    assert len(per_item.entries) == 3
    page = get(base, "/export/html", since="7d")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.text.count('<li class="story">') == 9
    rows = get(base, "/export/jsonl", search="quantum", limit="1").text.splitlines()
    assert len(rows) == 1 and "Quantum" in json.loads(rows[0])["title"]
    assert get(base, "/export/csv", tag="tech").text.count("\r\n") == 4  # header + 3
    assert "<opml" in get(base, "/export/opml").text
    doc = get(base, "/export/json", tag="tech").json()
    assert doc["feed_url"].startswith(base + "/export/json")


@pytest.mark.parametrize(
    ("path", "params", "status", "words"),
    [
        ("/export/pdf", {}, 404, "unknown format"),
        ("/export/atom", {"since": "yesterday"}, 400, "yesterday"),
        ("/export/atom", {"limit": "many"}, 400, "limit"),
        ("/export/atom", {"feed": "No Such Feed"}, 400, "No Such Feed"),
        ("/stories", {"cursor": "!!!"}, 400, "cursor"),
        ("/items", {"limit": "0"}, 400, "limit"),
    ],
)
def test_bad_requests_say_why(
    served: tuple[str, Clock], path: str, params: dict[str, str], status: int, words: str
) -> None:
    response = get(served[0], path, **params)
    assert response.status_code == status
    assert words in response.json()["error"]


def walk(base: str, path: str, key: str, **params: Any) -> list[list[dict[str, Any]]]:
    pages = []
    cursor = None
    for _ in range(20):
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        body = get(base, path, **query).json()
        pages.append(body[key])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("the cursor never ended")


def test_stories_are_paginated_by_cursor(served: tuple[str, Clock]) -> None:
    base, _ = served
    pages = walk(base, "/stories", "stories", limit=4)
    assert [len(p) for p in pages] == [4, 4, 1]
    stories = [s for p in pages for s in p]
    assert len({s["story_id"] for s in stories}) == 9
    seen = [(s["first_seen_at"], s["story_id"]) for s in stories]
    assert seen == sorted(seen, reverse=True)
    harbour = next(s for s in stories if s["title"] == "Council approves harbour budget")
    assert harbour["source_count"] == 3
    assert [s["feed"] for s in harbour["sources"]] == ["Alpha Times", "Beta Daily", "Gamma Tech"]
    tech = walk(base, "/stories", "stories", tag="tech", limit=2)
    assert sorted(s["title"] for p in tech for s in p) == [
        "Council approves harbour budget",
        "Quantum computing startup raises funds",
        "Quantum sensors at the lab",
    ]


def test_items_are_paginated_by_cursor(served: tuple[str, Clock]) -> None:
    base, _ = served
    pages = walk(base, "/items", "items", limit=5)
    assert [len(p) for p in pages] == [5, 5, 1]
    ids = [i["item_id"] for p in pages for i in p]
    assert len(set(ids)) == 11
    found = walk(base, "/items", "items", search="quantum", limit=5)
    assert len(found) == 1 and len(found[0]) == 2


def test_healthz_follows_the_last_successful_poll(served: tuple[str, Clock]) -> None:
    base, clock = served
    ok = get(base, "/healthz")
    assert ok.status_code == 200 and ok.json()["status"] == "ok"
    clock.offset = timedelta(hours=3)  # health_max_age defaults to 2 h
    try:
        stale = get(base, "/healthz")
    finally:
        clock.offset = timedelta()
    assert stale.status_code == 503
    assert "no feed polled successfully for" in stale.json()["reason"]


def test_healthz_without_polls_or_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    store = open_store(url)
    store.upgrade()
    config = Config(path=None, settings=load_config_settings(url), feeds=())
    try:
        with running(create_app(store, lambda: config)) as base:
            fresh = get(base, "/healthz")
            assert fresh.status_code == 503
            assert fresh.json()["reason"] == "no feed has been polled successfully yet"
            store.engine.dispose()
            (tmp_path / "fresh.db").write_bytes(b"this is not a database" * 100)
            for suffix in ("-wal", "-shm"):
                (tmp_path / f"fresh.db{suffix}").unlink(missing_ok=True)
            broken = get(base, "/healthz")
            assert broken.status_code == 503
            assert "database" in broken.json()["reason"]
            metrics = get(base, "/metrics").text
            assert "aggregator_database_up 0.0" in metrics
    finally:
        store.close()


def load_config_settings(url: str) -> Any:
    from aggregator.config import Settings

    return Settings(database_url=url)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_in_prometheus_format(served: tuple[str, Clock]) -> None:
    response = get(served[0], "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = samples(response.text)
    assert values[("aggregator_database_up", ())] == 1
    assert values[("aggregator_feeds", (("state", "ok"),))] == 4
    assert values[("aggregator_polls_total", (("outcome", "ok"),))] == 0  # not this process
    assert ("aggregator_fetch_duration_seconds_bucket", (("kind", "feed"), ("le", "1.0"))) in values


def test_the_daemon_polls_and_serves_from_one_process(tmp_path: Path) -> None:
    server = FixtureServer().start()
    try:
        exportdata._feeds(server, round2=False)
        raw = {
            "settings": {
                "allow_private_networks": ["127.0.0.0/8"],
                "per_host_delay": "0s",
                "workers": 1,
                "full_text": False,
                "tick": "0.2s",
                "database_url": f"sqlite:///{tmp_path / 'daemon.db'}",
                "http": {"host": "127.0.0.1", "port": 0},
            },
            "feeds": [
                {"url": server.url(p), "name": p.strip("/")}
                for p in ("/alpha.xml", "/beta.xml", "/gamma.xml")
            ],
        }
        path = tmp_path / "feeds.yaml"
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        config = load_config(path)
        store = open_store(config.database_url)
        store.upgrade()
        metrics = Metrics()
        daemon = Daemon(config, store, config_path=path, database_override=None, metrics=metrics)
        seen: dict[str, Any] = {}

        async def probe() -> None:
            try:
                await until(lambda: daemon.http is not None and daemon.http.server.started)
                assert daemon.http is not None
                base = f"http://127.0.0.1:{daemon.http.port}"
                await until(lambda: polled(metrics) >= 3)
                async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                    seen["metrics"] = (await client.get("/metrics")).text
                    seen["health"] = (await client.get("/healthz")).status_code
                    seen["stories"] = (await client.get("/stories")).json()
            finally:
                daemon.stop_event.set()

        async def main() -> None:
            task = asyncio.create_task(probe())
            await daemon.run()
            await task

        try:
            asyncio.run(main())
        finally:
            store.close()
    finally:
        server.stop()
    values = samples(seen["metrics"])
    assert values[("aggregator_polls_total", (("outcome", "ok"),))] >= 3
    assert values[("aggregator_items_created_total", ())] == 6
    assert values[("aggregator_stories_created_total", ())] == 4
    assert values[("aggregator_downloaded_bytes_total", (("kind", "feed"),))] > 0
    assert values[("aggregator_fetch_duration_seconds_count", (("kind", "feed"),))] >= 3
    assert seen["health"] == 200
    assert len(seen["stories"]["stories"]) == 4


def polled(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("aggregator_polls_total", {"outcome": "ok"}) or 0


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)
