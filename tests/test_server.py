"""The HTTP face against a running uvicorn server on 127.0.0.1 (port 0)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import feedparser
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import exportdata
from aggregator.config import Config, load_config
from aggregator.metrics import Metrics
from aggregator.scheduler import Daemon
from aggregator.server import create_app
from aggregator.store import open_store
from appserver import running
from exportdata import World
from httpserver import FixtureServer

world = exportdata.world


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
    assert page.text.count('<li class="story"') == 9
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


# ---- bad parameters: a 400 naming the problem, never a 500/503 or a cut body (#21) ----

OUT_OF_RANGE = [
    ("since", "99999999999999d", "reaches back"),
    ("since", "9999-12-31T23:59:59-14:00", "out of range"),
    ("until", "0001-01-01T00:00:00+01:00", "out of range"),
    ("until", "9" * 400 + "d", "reaches back"),  # a float infinity
]


@pytest.mark.parametrize("path", ["/export/atom", "/export/html", "/stories", "/items"])
def test_dates_out_of_range_are_a_400_and_the_connection_lives(
    served: tuple[str, Clock], path: str
) -> None:
    with httpx.Client(base_url=served[0], timeout=30) as client:
        for name, value, words in OUT_OF_RANGE:
            response = client.get(path, params={name: value})
            assert response.status_code == 400, (name, value, response.text)
            assert words in response.json()["error"]
        # the same keep-alive connection still answers
        assert client.get(path, params={"since": "7d"}).status_code == 200


def cursor_of(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


BAD_CURSORS = [
    cursor_of(["2026-06-01T00:00:00+00:00", 2**70]),  # bigint out of range
    cursor_of(["2026-06-01T00:00:00+00:00", -1]),
    cursor_of(["2026-06-01T00:00:00+00:00", True]),
    cursor_of(["2026-06-01T00:00:00+00:00", 1.5]),
    cursor_of(["2026-06-01T00:00:00+00:00", "7"]),
    cursor_of([20260601, 7]),
    cursor_of({"a": 1, "b": 2}),
    cursor_of("ab"),
    cursor_of(["9999-12-31T23:59:59-14:00", 7]),  # overflows when made UTC
    cursor_of(["0001-01-01T00:00:00+01:00", 7]),
    cursor_of(["2026-06-01T00:00:00", 7]),  # no offset
    cursor_of([[[[[[[[[[[["deep"]]]]]]]]]]], 7]),
    cursor_of([None, None]),
    cursor_of(1e400),
    "W" * 5000,
    base64.urlsafe_b64encode(b"[" * 5000).decode(),  # RecursionError, were it decoded
    "\u00e9t\u00e9",
]


@pytest.mark.parametrize("path", ["/stories", "/items"])
def test_bad_cursors_are_a_400(served: tuple[str, Clock], path: str) -> None:
    with httpx.Client(base_url=served[0], timeout=30) as client:
        for cursor in BAD_CURSORS:
            response = client.get(path, params={"cursor": cursor})
            assert response.status_code == 400, (cursor[:80], response.text)
            assert "invalid cursor" in response.json()["error"]


def test_limits_are_checked_before_the_first_byte(served: tuple[str, Clock]) -> None:
    base = served[0]
    for value in ("9223372036854775808", "0", "-1", "1e3", "9" * 5000):
        response = get(base, "/export/jsonl", limit=value)
        assert response.status_code == 400, value
        assert "limit must be a whole number" in response.json()["error"]
    largest = get(base, "/export/jsonl", limit=str(2**63 - 1))
    assert largest.status_code == 200
    assert len(largest.text.splitlines()) == 11  # complete: every item, nothing cut
    assert get(base, "/items", limit=str(2**63 - 1)).status_code == 200  # clamped to 500


@pytest.mark.parametrize("fmt", ["atom", "rss", "json", "jsonl", "csv", "html"])
def test_nul_in_a_search_is_a_400(served: tuple[str, Clock], fmt: str) -> None:
    response = get(served[0], f"/export/{fmt}", search="a\x00b")
    assert response.status_code == 400
    assert "NUL" in response.json()["error"]
    assert get(served[0], "/items", q="harbour\x00").status_code == 400


@pytest.mark.parametrize("path", ["/export/atom", "/stories", "/items"])
def test_an_unknown_feed_name_is_a_400_everywhere(served: tuple[str, Clock], path: str) -> None:
    response = get(served[0], path, feed="No Such Feed")
    assert response.status_code == 400
    assert "no feed named 'No Such Feed'" in response.json()["error"]
    assert get(served[0], path, feed="Alpha Times").status_code == 200


def test_a_hostile_title_parameter_is_cleaned(served: tuple[str, Clock]) -> None:
    response = get(served[0], "/export/atom", title="News\x00\x01 <b>today</b>")
    assert response.status_code == 200
    feed = feedparser.parse(response.content)
    assert not feed.bozo and feed.feed.title == "News <b>today</b>"


def test_links_come_from_public_url_when_set(world: World) -> None:
    base_config = load_config(world.config_path)
    public = Config(
        path=base_config.path,
        settings=base_config.settings.model_copy(
            update={"public_url": "https://news.example.org/agg/"}
        ),
        feeds=base_config.feeds,
    )
    store = open_store(world.db_url)
    try:
        for config, expected in ((public, "https://news.example.org/agg"), (base_config, None)):
            with running(create_app(store, lambda c=config: c)) as base:
                response = httpx.get(
                    base + "/export/atom",
                    params={"tag": "tech"},
                    headers={"Host": "evil.example"},
                    timeout=30,
                )
                feed = feedparser.parse(response.content)
                links = {link.rel: link.href for link in feed.feed.links}
                doc = httpx.get(base + "/export/json", headers={"Host": "evil.example"}).json()
            if expected is None:  # the Host header's fallback (documented risk)
                assert links["alternate"] == "http://evil.example/"
                assert links["self"] == "http://evil.example/export/atom?tag=tech"
            else:
                assert links["alternate"] == expected + "/"
                assert links["self"] == expected + "/export/atom?tag=tech"
                assert doc["home_page_url"] == expected + "/"
                assert doc["feed_url"] == expected + "/export/json"
    finally:
        store.close()


def test_public_url_must_be_an_http_url(tmp_path: Path) -> None:
    from aggregator.errors import ConfigError

    path = tmp_path / "feeds.yaml"
    path.write_text(
        yaml.safe_dump({"settings": {"public_url": "javascript:alert(1)"}, "feeds": []}), "utf-8"
    )
    with pytest.raises(ConfigError, match="public_url"):
        load_config(path)


# ---- feed formats can be polled cheaply (#22) ------------------------------------------


@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
def test_a_second_poll_costs_no_body(served: tuple[str, Clock], fmt: str) -> None:
    base = served[0]
    url = f"{base}/export/{fmt}?tag=news"
    first = httpx.get(url, timeout=30)
    assert first.status_code == 200 and len(first.content) > 1000
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert etag.startswith('W/"') and first.headers["cache-control"] == "public, max-age=60"
    # the validators a feed reader sends back (feedparser and reader send both)
    again = httpx.get(url, headers={"If-None-Match": etag, "If-Modified-Since": modified})
    assert again.status_code == 304 and again.num_bytes_downloaded == 0
    assert again.headers["etag"] == etag
    by_date = httpx.get(url, headers={"If-Modified-Since": modified})
    assert by_date.status_code == 304 and by_date.content == b""
    # another query is another document
    other = httpx.get(f"{base}/export/{fmt}?tag=tech", headers={"If-None-Match": etag})
    assert other.status_code == 200 and other.headers["etag"] != etag
    stale = httpx.get(url, headers={"If-None-Match": 'W/"0123"', "If-Modified-Since": modified})
    assert stale.status_code == 200  # If-None-Match decides when it is there
    garbage = httpx.get(url, headers={"If-Modified-Since": "yesterday-ish"})
    assert garbage.status_code == 200
    items = f"{base}/export/{fmt}?per_item=1&search=harbour"
    etag = httpx.get(items, timeout=30).headers["etag"]
    assert httpx.get(items, headers={"If-None-Match": etag}).status_code == 304


def test_feedparser_polls_with_the_validators(served: tuple[str, Clock]) -> None:
    url = served[0] + "/export/atom"
    first = feedparser.parse(url)
    assert first.status == 200 and len(first.entries) == 9 and not first.bozo
    second = feedparser.parse(url, etag=first.etag, modified=first.modified)
    assert second.status == 304 and second.entries == []


def test_the_validator_follows_story_changes(tmp_path: Path) -> None:
    server = FixtureServer().start()
    try:
        exportdata._feeds(server, round2=False)
        config_path = write_world_config(tmp_path, server)
        config = load_config(config_path)
        from ingest import run_once

        run_once(config_path, config.database_url)
        store = open_store(config.database_url)
        try:
            with running(create_app(store, lambda: config)) as base:
                first = httpx.get(base + "/export/rss", timeout=30)
                etag = first.headers["etag"]
                exportdata._feeds(server, round2=True)  # two new stories
                run_once(config_path, config.database_url)
                second = httpx.get(base + "/export/rss", headers={"If-None-Match": etag})
                assert second.status_code == 200 and second.headers["etag"] != etag
                assert second.text.count("<item>") == first.text.count("<item>") + 2
                third = httpx.get(
                    base + "/export/rss", headers={"If-None-Match": second.headers["etag"]}
                )
                assert third.status_code == 304
        finally:
            store.close()
    finally:
        server.stop()


def write_world_config(folder: Path, server: FixtureServer, **settings: Any) -> Path:
    path = folder / "feeds.yaml"
    raw = {
        "settings": {
            "allow_private_networks": ["127.0.0.0/8"],
            "per_host_delay": "0s",
            "workers": 1,
            "full_text": False,
            "database_url": f"sqlite:///{folder / 'agg.db'}",
            **settings,
        },
        "feeds": [
            {"url": server.url(p), "name": p.strip("/")}
            for p in ("/alpha.xml", "/beta.xml", "/gamma.xml")
        ],
    }
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_feed_formats_have_a_default_limit(world: World) -> None:
    base_config = load_config(world.config_path)
    small = Config(
        path=base_config.path,
        settings=base_config.settings.model_copy(update={"feed_export_limit": 3}),
        feeds=base_config.feeds,
    )
    store = open_store(world.db_url)
    try:
        with running(create_app(store, lambda: small)) as base:
            for fmt in ("atom", "rss"):
                assert len(feedparser.parse(get(base, f"/export/{fmt}").content).entries) == 3
            assert len(get(base, "/export/json").json()["items"]) == 3
            assert len(get(base, "/export/json", limit="5").json()["items"]) == 5
            assert len(get(base, "/export/jsonl").text.splitlines()) == 11  # dumps: no default
    finally:
        store.close()
