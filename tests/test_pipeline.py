"""End-to-end ingestion through the real pipeline: HTTP server, process pool, database."""

from __future__ import annotations

from pathlib import Path

import pytest

from builders import article_page, paragraph, rss
from conftest import DATA, write_config
from httpserver import FixtureServer
from ingest import rows, run_once


def news_site(server: FixtureServer, prefix: str, count: int) -> str:
    items = []
    for i in range(count):
        path = f"/{prefix}/story-{i}.html"
        server.add(
            path,
            article_page(f"{prefix} story {i}", seed=i + len(prefix)),
            content_type="text/html",
        )
        items.append(
            {
                "title": f"{prefix} story {i}",
                "link": server.url(path),
                "guid": f"{prefix}-{i}",
                "description": f"Teaser {i}.",
                "pubDate": f"Mon, 0{1 + i % 9} Jun 2026 10:00:00 GMT",
            }
        )
    return server.add(f"/{prefix}/feed.xml", rss(f"{prefix} news", items))


def test_run_once_ingests_then_uses_conditional_get(
    server: FixtureServer, tmp_path: Path, db_url: str
) -> None:
    feed_a = news_site(server, "alpha", 4)
    feed_b = news_site(server, "beta", 3)
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": feed_a, "name": "Alpha"}, {"url": feed_b}])

    first = run_once(cfg, db_url)
    assert (first.polled, first.failed, first.new_items, first.new_stories) == (2, 0, 7, 7)
    items = rows(db_url, "SELECT title, text, text_source, story_id FROM items ORDER BY title")
    assert len(items) == 7
    assert all(r[2] == "article" for r in items), items
    assert all(r[3] is not None for r in items)
    # the article text is the page's body, not its navigation or sidebar
    assert paragraph(0 + len("alpha"))[:80] in str(items[0][1])
    assert "Most read" not in str(items[0][1])
    assert len(server.hits("/alpha/story-0.html")) == 1

    server.clear()
    second = run_once(cfg, db_url)
    assert (second.polled, second.not_modified, second.new_items) == (2, 2, 0)
    feed_hits = server.hits("/alpha/feed.xml")
    assert len(feed_hits) == 1
    assert feed_hits[0].headers.get("if-none-match", "").startswith('"')
    assert "if-modified-since" in feed_hits[0].headers
    # no article page is fetched again
    assert not [r for r in server.requests if r.path.endswith(".html")]
    assert rows(db_url, "SELECT count(*) FROM items") == [(7,)]
    states = rows(db_url, "SELECT last_status, error_count, etag IS NOT NULL FROM feeds")
    assert sorted(states) == [(304, 0, True), (304, 0, True)]


def test_changed_entry_updates_in_place(server: FixtureServer, tmp_path: Path, db_url: str) -> None:
    def feed(title: str) -> str:
        return rss(
            "t",
            [
                {
                    "title": title,
                    "link": "http://127.0.0.1:1/a",
                    "guid": "g1",
                    "description": "same body",
                }
            ],
        )

    url = server.add("/feed.xml", feed("First title"))
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": url, "full_text": False}])
    run_once(cfg, db_url)
    before = rows(db_url, "SELECT id, title, first_seen_at, updated_at FROM items")
    server.add("/feed.xml", feed("Corrected title"))
    summary = run_once(cfg, db_url)
    after = rows(db_url, "SELECT id, title, first_seen_at, updated_at FROM items")
    assert summary.updated_items == 1 and summary.new_items == 0
    assert len(after) == 1 and after[0][0] == before[0][0]
    assert after[0][1] == "Corrected title"
    assert after[0][2] == before[0][2] and after[0][3] > before[0][3]


def test_tracking_parameters_collapse_into_one_story(
    server: FixtureServer, tmp_path: Path, db_url: str
) -> None:
    page = server.add(
        "/news/big-story.html", article_page("Big story", 3), content_type="text/html"
    )
    feeds = []
    for n, suffix in enumerate(["?utm_source=rss&utm_medium=feed", "?fbclid=XYZ#comments", ""]):
        feeds.append(
            {
                "url": server.add(
                    f"/f{n}.xml",
                    rss(f"f{n}", [{"title": "Big story", "link": page + suffix, "guid": f"s{n}"}]),
                )
            }
        )
    cfg = write_config(tmp_path / "feeds.yaml", feeds)
    summary = run_once(cfg, db_url)
    assert summary.new_items == 3
    assert summary.new_stories == 1
    stories = rows(db_url, "SELECT id, item_count, url FROM stories")
    assert len(stories) == 1 and stories[0][1] == 3
    canon = rows(db_url, "SELECT DISTINCT canonical_url FROM items")
    assert canon == [(page,)]


def test_failing_feed_beside_good_ones(server: FixtureServer, tmp_path: Path, db_url: str) -> None:
    good = server.add(
        "/good.xml", rss("good", [{"title": "A", "link": "http://127.0.0.1:1/a", "guid": "a"}])
    )
    broken = server.add(
        "/broken.xml", "<html><body>not a feed</body></html>", content_type="text/html"
    )
    missing = server.url("/missing.xml")
    down = "http://127.0.0.1:9/feed.xml"  # nothing listens on the discard port
    cfg = write_config(
        tmp_path / "feeds.yaml",
        [{"url": u, "full_text": False} for u in (good, broken, missing, down)],
    )
    summary = run_once(cfg, db_url)
    assert summary.polled == 4 and summary.failed == 3 and summary.new_items == 1
    state = dict(
        (r[0], r[1:])
        for r in rows(
            db_url, "SELECT url, error_count, last_error, last_status, next_check_at FROM feeds"
        )
    )
    assert state[good][0] == 0 and state[good][1] is None
    for url in (broken, missing, down):
        assert state[url][0] == 1, url
        assert state[url][1], url
    assert "HTML page" in state[broken][1] or "html" in state[broken][1].lower()
    assert "404" in state[missing][1]
    assert state[missing][2] == 404
    assert "127.0.0.1" in state[down][1] or "connect" in state[down][1].lower()


@pytest.mark.parametrize(
    "fixture",
    [
        "rss-parser/content-encoded.rss",
        "miniflux/small_atom.xml",
        "atoma/jsonfeed.org.json",
        "codehollow-feedreader/Rss10OrfAt.xml",
    ],
)
def test_real_feed_files_are_stored(server: FixtureServer, tmp_path: Path, fixture: str) -> None:
    body = (DATA / "feeds" / fixture).read_bytes()
    ctype = "application/feed+json" if fixture.endswith(".json") else "application/xml"
    url = server.add("/real", body, content_type=ctype)
    db = f"sqlite:///{tmp_path / 'a.db'}"
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": url, "full_text": False}])
    summary = run_once(cfg, db)
    assert summary.failed == 0
    count = rows(db, "SELECT count(*), count(DISTINCT entry_key), count(story_id) FROM items")[0]
    assert count[0] == summary.new_items > 0
    assert count[0] == count[1] == count[2]
    # every stored HTML fragment is sanitized
    for (content,) in rows(db, "SELECT content FROM items WHERE content IS NOT NULL"):
        assert "<script" not in str(content).lower()


def test_run_once_holds_coroutines_for_the_polls_in_flight_not_for_every_feed(
    server: FixtureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run --once`` over many feeds keeps ``concurrency`` polling coroutines, not a task
    per feed, and claims the feeds a chunk at a time as the polls get to them, not all at
    the start (memory flat in the number of feeds); the claimed feeds still waiting for
    their turn count as active, so their leases are renewed while they wait. Every feed
    is polled exactly once."""
    import asyncio

    from aggregator import scheduler
    from aggregator.scheduler import Runner

    feeds = [{"url": server.add(f"/t{i}/feed.xml", rss(f"t{i}", [_item(i, 0)]))} for i in range(30)]
    cfg = write_config(tmp_path / "feeds.yaml", feeds, concurrency=3, workers=1, full_text=False)
    monkeypatch.setattr(scheduler, "RUN_ONCE_CHUNK", 7)
    peak_tasks = 0
    active_seen: list[int] = []
    claims: list[int] = []
    poll, claim = Runner.poll, Runner.claim

    async def counted(self: Runner, state: object) -> object:
        nonlocal peak_tasks
        peak_tasks = max(peak_tasks, len(asyncio.all_tasks()))
        active_seen.append(len(self.active))
        return await poll(self, state)  # type: ignore[arg-type]

    async def claimed(self: Runner, *args: object, **kwargs: object) -> object:
        states = await claim(self, *args, **kwargs)  # type: ignore[arg-type]
        claims.append(len(states))
        return states

    monkeypatch.setattr(Runner, "poll", counted)
    monkeypatch.setattr(Runner, "claim", claimed)
    summary = run_once(cfg, f"sqlite:///{tmp_path / 'tasks.db'}")
    assert (summary.polled, summary.failed, summary.new_items, summary.skipped) == (30, 0, 30, 0)
    server_hits = [len(server.hits(f"/t{i}/feed.xml")) for i in range(30)]
    assert server_hits == [1] * 30  # none polled twice, none left out
    # three pollers, the lease renewer and the run itself (a task per feed would be 30+)
    assert peak_tasks <= 3 + 2
    # claimed 7 at a time (the last claim finds the 2 left), never more held at once
    assert claims == [7, 7, 7, 7, 2]
    assert active_seen[0] == 7 and max(active_seen) <= 7 + 3


def _item(feed: int, n: int) -> dict[str, str]:
    return {
        "title": f"Feed {feed} item {n}",
        "link": f"https://p{feed}.example/{n}",
        "guid": f"p{feed}-{n}",
        "description": paragraph(feed * 10 + n),
    }
