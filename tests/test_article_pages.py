"""A poll's article pages (issue 21 item 5) and the entries a document holds past
``max_entries_per_feed`` (item 7), through the real pipeline: HTTP server, process pool,
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from aggregator import pages
from aggregator.config import Settings
from aggregator.metrics import Metrics
from aggregator.pages import PAGE_PENDING
from aggregator.records import Article, ArticlePage, FetchResult, PollOutcome
from builders import article_page, rss
from conftest import write_config
from httpserver import FixtureServer
from ingest import aggregator, rows, run_once


def test_entries_sharing_one_page_fetch_it_once(
    server: FixtureServer, tmp_path: Path, db_url: str
) -> None:
    page = server.add("/shared.html", article_page("The one page", 4), content_type="text/html")
    items = [{"title": f"Entry {i}", "link": page, "guid": f"e{i}"} for i in range(200)]
    feed = server.add("/feed.xml", rss("shared", items))
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": feed}])
    summary = run_once(cfg, db_url)
    assert (summary.failed, summary.new_items) == (0, 200)
    assert len(server.hits("/shared.html")) == 1
    assert rows(db_url, "SELECT text_source, count(*) FROM items GROUP BY text_source") == [
        ("article", 200)
    ]


class Slowloris:
    """Article pages that trickle one byte at a time until ``fast`` is set; then normal."""

    def __init__(self) -> None:
        self.fast = threading.Event()
        self.stop = threading.Event()

    def handler(self, title: str, seed: int):  # type: ignore[no-untyped-def]
        def handle(request: BaseHTTPRequestHandler) -> None:
            body = article_page(title, seed).encode()
            request.send_response(200)
            request.send_header("Content-Type", "text/html")
            if self.fast.is_set():
                request.send_header("Content-Length", str(len(body)))
                request.end_headers()
                request.wfile.write(body)
                return
            request.end_headers()
            request.close_connection = True
            try:
                for byte in body[:2000]:
                    if self.stop.wait(0.25):
                        return
                    request.wfile.write(bytes([byte]))
                    request.wfile.flush()
            except OSError:
                return

        return handle


@pytest.fixture
def slowloris() -> object:
    slow = Slowloris()
    yield slow
    slow.stop.set()


def test_article_fetching_has_a_time_budget_and_owed_pages_come_next_poll(
    server: FixtureServer,
    tmp_path: Path,
    db_url: str,
    slowloris: Slowloris,
    caplog: pytest.LogCaptureFixture,
) -> None:
    quick = server.add("/quick.html", article_page("Quick story", 1), content_type="text/html")
    slow = [
        server.add(f"/slow-{i}.html", handler=slowloris.handler(f"Slow story {i}", 10 + i))
        for i in range(3)
    ]
    items = [{"title": "Quick story", "link": quick, "guid": "q", "description": "Teaser q."}]
    items += [
        {"title": f"Slow story {i}", "link": url, "guid": f"s{i}", "description": f"Teaser {i}."}
        for i, url in enumerate(slow)
    ]
    feed = server.add("/feed.xml", rss("slow pages", items))
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": feed}], article_budget="1s")

    with caplog.at_level(logging.INFO, logger="aggregator.poll"):
        first = run_once(cfg, db_url)
    assert (first.failed, first.new_items) == (0, 4)
    stored = dict(rows(db_url, "SELECT title, text_source FROM items"))
    assert stored == {
        "Quick story": "article",
        "Slow story 0": "feed",
        "Slow story 1": "feed",
        "Slow story 2": "feed",
    }
    # the slow entries keep the feed's text, and their pages are owed
    owed = rows(db_url, f"SELECT title FROM items WHERE content_hash LIKE '{PAGE_PENDING}%'")
    assert sorted(t for (t,) in owed) == ["Slow story 0", "Slow story 1", "Slow story 2"]
    texts = dict(rows(db_url, "SELECT title, text FROM items"))
    assert texts["Slow story 1"] == "Teaser 1."
    # the log says what was cut
    (cut,) = [r for r in caplog.records if getattr(r, "event", None) == "article_budget"]
    assert cut.pages_cut == 3 and cut.pages == 4  # type: ignore[attr-defined]
    assert set(cut.cut_urls) == set(slow)  # type: ignore[attr-defined]
    ((last_error,),) = rows(db_url, "SELECT last_error FROM feeds")
    assert "article budget (1 s) spent: 3 of 4 article pages left for the next poll" in str(
        last_error
    )

    # the next poll (the feed unchanged) fetches the owed pages, and only them
    slowloris.fast.set()
    server.clear()
    second = run_once(cfg, db_url)
    assert (second.failed, second.new_items, second.updated_items) == (0, 0, 3)
    assert sorted(r.path for r in server.requests if r.path.endswith(".html")) == [
        "/slow-0.html",
        "/slow-1.html",
        "/slow-2.html",
    ]
    assert rows(db_url, "SELECT text_source, count(*) FROM items GROUP BY text_source") == [
        ("article", 4)
    ]
    assert rows(
        db_url, f"SELECT count(*) FROM items WHERE content_hash LIKE '{PAGE_PENDING}%'"
    ) == [(0,)]
    assert rows(db_url, "SELECT last_error FROM feeds") == [(None,)]
    # and then nothing is owed any more
    server.clear()
    third = run_once(cfg, db_url)
    assert (third.new_items, third.updated_items) == (0, 0)
    assert not [r for r in server.requests if r.path.endswith(".html")]


def test_an_owed_page_that_fails_is_no_longer_owed(
    server: FixtureServer, tmp_path: Path, slowloris: Slowloris
) -> None:
    db_url = f"sqlite:///{tmp_path / 'owed.db'}"
    slow = server.add("/slow.html", handler=slowloris.handler("Slow", 3))
    feed = server.add(
        "/feed.xml", rss("f", [{"title": "Slow", "link": slow, "guid": "s", "description": "T."}])
    )
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": feed}], article_budget="1s")
    run_once(cfg, db_url)
    assert rows(
        db_url, f"SELECT count(*) FROM items WHERE content_hash LIKE '{PAGE_PENDING}%'"
    ) == [(1,)]
    server.add("/slow.html", status=404, body="gone")
    second = run_once(cfg, db_url)
    assert (second.failed, second.updated_items) == (0, 0)  # only the mark was cleared
    assert rows(db_url, "SELECT text_source, text FROM items") == [("feed", "T.")]
    assert rows(
        db_url, f"SELECT count(*) FROM items WHERE content_hash LIKE '{PAGE_PENDING}%'"
    ) == [(0,)]
    server.clear()
    run_once(cfg, db_url)
    assert server.hits("/slow.html") == []


def test_more_entries_than_the_old_limit_are_all_stored(
    server: FixtureServer, tmp_path: Path
) -> None:
    """A podcast feed of 730 episodes: the old default (500) dropped 230 silently."""
    assert Settings().max_entries_per_feed >= 10_000
    items = [
        {"title": f"Episode {i}", "link": f"https://pod.example/{i}", "guid": f"ep{i}"}
        for i in range(730)
    ]
    feed = server.add("/podcast.xml", rss("podcast", items))
    db_url = f"sqlite:///{tmp_path / 'pod.db'}"
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": feed, "full_text": False}])
    summary = run_once(cfg, db_url)
    assert summary.new_items == 730
    assert rows(db_url, "SELECT last_error FROM feeds") == [(None,)]


def test_cut_entries_are_said_in_the_log_feeds_list_and_metrics(
    server: FixtureServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    items = [
        {"title": f"Entry {i}", "link": f"https://x.example/{i}", "guid": f"e{i}"}
        for i in range(12)
    ]
    feed = server.add("/big.xml", rss("big", items))
    db_url = f"sqlite:///{tmp_path / 'cut.db'}"
    cfg = write_config(
        tmp_path / "feeds.yaml", [{"url": feed, "full_text": False}], max_entries_per_feed=10
    )
    with caplog.at_level(logging.INFO, logger="aggregator.poll"):
        summary = run_once(cfg, db_url)
    assert summary.new_items == 10
    # the poll log line
    (poll,) = [r for r in caplog.records if getattr(r, "event", None) == "poll"]
    assert poll.entries_cut == 2  # type: ignore[attr-defined]
    assert "2 of 12 entries not stored" in poll.error  # type: ignore[attr-defined]
    # the feed's state, as `feeds list` shows it
    ((last_error,),) = rows(db_url, "SELECT last_error FROM feeds")
    assert "2 of 12 entries not stored: only the first 10 are read (max_entries_per_feed)" in str(
        last_error
    )
    listed = aggregator("feeds", "list", "--config", str(cfg), "--database", db_url)
    assert listed.returncode == 0, listed.stderr
    assert "2 of 12 entries not stored" in " ".join(listed.stdout.split())
    # /metrics: a counter of the entries cut
    metrics = Metrics()
    metrics.observe_poll(PollOutcome(feed, 200, ok=True, new_items=10, entries_cut=2))
    text = generate_latest(metrics.registry).decode()
    assert "aggregator_entries_cut_total 2.0" in text


# --------------------------------------------------------------------------- pages.fetch_pages


class FakePages:
    """A fetch component serving article pages from memory; links under /hang/ never answer."""

    def __init__(self) -> None:
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
        if "/hang/" in url:
            await asyncio.sleep(3600)
        return FetchResult(url, url, 200, {"content-type": "text/html"}, url.encode())


def fake_article(body: bytes, url: str) -> ArticlePage:
    return ArticlePage(Article(url=url, text=body.decode()), None)


def test_fetch_pages_once_each_and_cut_at_the_budget() -> None:
    fetcher = FakePages()
    links = ["https://a.example/1", "https://a.example/1", "https://a.example/hang/2"] * 3

    async def extract(batch: list[tuple[bytes, str]]) -> list[ArticlePage | str]:
        return [fake_article(body, url) for body, url in batch]

    got = asyncio.run(pages.fetch_pages(fetcher, links, 0.5, extract))
    assert sorted(fetcher.calls) == ["https://a.example/1", "https://a.example/hang/2"]
    assert list(got.extracted) == ["https://a.example/1"]
    assert got.cut == ["https://a.example/hang/2"] and got.requested == 2


def test_a_busy_pool_slows_a_poll_down_but_does_not_cut_its_pages() -> None:
    """The budget counts fetching, not the time every held place waits for the pool:
    64 instant pages whose extraction takes 8 x 0.25 s fit a 0.5 s budget."""
    fetcher = FakePages()
    links = [f"https://a.example/{i}" for i in range(2 * pages.HELD_PAGES)]

    async def go() -> pages.Pages:
        one_worker = asyncio.Lock()  # a pool of one process: batches one after the other

        async def slow_extract(batch: list[tuple[bytes, str]]) -> list[ArticlePage | str]:
            async with one_worker:
                await asyncio.sleep(0.25)
            return [fake_article(body, url) for body, url in batch]

        return await pages.fetch_pages(fetcher, links, 0.5, slow_extract)

    got = asyncio.run(go())
    assert got.cut == []
    assert len(got.extracted) == len(links)
