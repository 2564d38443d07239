"""The HTML digest: ranked, escaped, self-contained, and looked at in headless Chromium
(screenshots at desktop and phone widths are saved under test-artifacts/)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lxml.html
import pytest
from bs4 import BeautifulSoup
from sqlalchemy import insert

import exportdata
from aggregator.config import load_config
from aggregator.export import ExportRequest, build_filter, stream
from aggregator.store import open_store
from aggregator.store.queries import Queries
from aggregator.store.tables import feeds, items, stories
from exportdata import RAW_TITLE, World
from test_export import assert_safe_html

world = exportdata.world

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def digest(world: World, **filters: object) -> str:
    config = load_config(world.config_path)
    store = open_store(world.db_url)
    try:
        now = datetime.now(UTC)
        request = ExportRequest(format="html", filter=build_filter(now=now, **filters))  # type: ignore[arg-type]
        return "".join(stream(Queries(store), request, now=now, feeds=config.feeds))
    finally:
        store.close()


def chromium() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return found


def browser(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
            "--mute-audio",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_digest_ranks_by_sources_and_escapes(world: World) -> None:
    page = digest(world)
    doc = BeautifulSoup(page, "lxml")
    stories = doc.select("li.story")
    assert len(stories) == 9  # default window: the last 24 h holds everything
    first = stories[0]
    assert first.h2 is not None and first.h2.get_text() == "Council approves harbour budget"
    assert [b.get_text() for b in first.select(".badge")] == ["3 sources"]
    assert [a.get_text() for a in first.select(".sources a")] == [
        "Alpha Times",
        "Beta Daily",
        "Gamma Tech",
    ]
    # then by time, newest first
    times = [str(s.select("time.seen")[0]["datetime"]) for s in stories[1:]]
    assert times == sorted(times, reverse=True)
    # hostile strings are text, never markup
    titles = [s.h2.get_text() for s in stories if s.h2 is not None]
    assert RAW_TITLE.replace(" \x0b\x1b", "") in titles
    assert not doc.select("script, iframe, svg, img, object, embed, link, base")
    assert len(doc.select("style")) == 1  # ours, inline
    for el in doc.find_all(True):
        for name, value in el.attrs.items():
            assert not name.startswith("on"), (el.name, name)
            if name in ("href", "src"):
                assert str(value).startswith("http"), value
    body = lxml.html.document_fromstring(page).body
    assert_safe_html(lxml.html.tostring(body, encoding="unicode"))


def test_digest_window_and_empty_period(world: World) -> None:
    late = BeautifulSoup(digest(world, since=world.between.isoformat()), "lxml")
    assert len(late.select("li.story")) == 3
    future = datetime.now(UTC) + timedelta(days=30)
    empty = digest(world, since=future.isoformat())
    assert "No stories in this period." in empty
    assert "0 stories" in empty


def test_digest_in_headless_chromium(world: World) -> None:
    if not world.db_url.startswith("sqlite"):
        pytest.skip("the page does not depend on the database: looked at once, from SQLite")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n", encoding="utf-8")
    backend = "sqlite"
    html_path = ARTIFACTS / f"digest-{backend}.html"
    html_path.write_text(digest(world), encoding="utf-8")
    url = html_path.as_uri()
    # the DOM the browser built: our stories, no script ran or was created
    dom = browser("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = BeautifulSoup(dom.stdout, "lxml")
    assert len(rendered.select("li.story")) == 9
    assert not rendered.select("script")
    assert "alert(" not in " ".join(
        str(v) for el in rendered.find_all(True) for v in el.attrs.values()
    )
    for name, width, height in (("desktop", 1280, 1500), ("phone", 390, 1700)):
        shot = ARTIFACTS / f"digest-{backend}-{name}.png"
        shot.unlink(missing_ok=True)
        result = browser(f"--window-size={width},{height}", f"--screenshot={shot}", url)
        assert result.returncode == 0, result.stderr[-2000:]
        assert shot.exists() and shot.stat().st_size > 10_000
        assert png_size(shot) == (width, height)


def test_digest_shows_published_dates_and_first_seen_when_apart(world: World) -> None:
    doc = BeautifulSoup(digest(world), "lxml")
    harbour = doc.select("li.story")[0]
    # the feeds say 1 June 10:00; the aggregator saw them today: both are shown
    published = harbour.select("time.published")
    assert [t["datetime"] for t in published] == ["2026-06-01T10:00:00+00:00"]
    assert "1 Jun 2026, 10:00 UTC" in published[0].get_text()
    assert "first seen" in harbour.select_one(".meta").get_text()
    assert not doc.select(".summary")  # 9 stories: no summary


def long_store(folder: Path) -> str:
    """60 stories from four feeds: story n has n % 4 + 1 sources; story 0 was published
    as it was first seen, story 1 two days before, story 2 has no date."""
    url = f"sqlite:///{folder / 'long.db'}"
    store = open_store(url)
    store.upgrade()
    seen = datetime.now(UTC) - timedelta(hours=3)
    names = ["Alpha", "Beta", "Gamma", "Delta"]
    with store.engine.begin() as conn:
        conn.execute(
            insert(feeds),
            [
                {"id": i + 1, "url": f"http://example.org/{n}.xml", "name": n, "created_at": seen}
                for i, n in enumerate(names)
            ],
        )
        conn.execute(
            insert(stories),
            [
                {
                    "id": n + 1,
                    "title": f"Story {n}",
                    "url": f"http://example.org/s/{n}",
                    "item_count": n % 4 + 1,
                    "first_seen_at": seen + timedelta(seconds=n),
                    "last_seen_at": seen + timedelta(seconds=n),
                }
                for n in range(60)
            ],
        )
        published = {0: seen + timedelta(minutes=20), 1: seen - timedelta(days=2), 2: None}
        conn.execute(
            insert(items),
            [
                {
                    "feed_id": f + 1,
                    "entry_key": f"{n}-{f}",
                    "url": f"http://example.org/{names[f]}/{n}",
                    "title": f"Story {n}",
                    "text": f"Text of story {n}.",
                    "content_hash": "x",
                    "story_id": n + 1,
                    "published_at": published.get(n, seen - timedelta(minutes=30)),
                    "first_seen_at": seen + timedelta(seconds=n),
                    "updated_at": seen + timedelta(seconds=n),
                }
                for n in range(60)
                for f in range(n % 4 + 1)
            ],
        )
    store.close()
    return url


def test_a_long_digest_starts_with_a_summary(tmp_path: Path) -> None:
    url = long_store(tmp_path)
    store = open_store(url)
    try:
        now = datetime.now(UTC)
        page = "".join(stream(Queries(store), ExportRequest(format="html"), now=now))
        short = "".join(
            stream(
                Queries(store),
                ExportRequest(format="html", filter=build_filter(now=now, limit=50)),
                now=now,
            )
        )
    finally:
        store.close()
    doc = BeautifulSoup(page, "lxml")
    summary = doc.select_one("section.summary")
    assert summary is not None
    text = " ".join(summary.get_text(" ").split())
    # 60 stories; items: 15 stories each of 1, 2, 3 and 4 sources
    assert "60 stories from 150 items in 4 feeds." in text
    assert "Top sources: Alpha (60), Beta (45), Gamma (30), Delta (15)." in text
    carried = summary.select("ol li a")
    assert [a.get_text() for a in carried] == [f"Story {n}" for n in (59, 55, 51, 47, 43)]
    for link in carried:  # each points at its story further down
        assert doc.select_one(str(link["href"])) is not None
    assert "(4 sources)" in summary.select("ol li")[0].get_text()
    # summary first, then the ranked list
    assert page.index('class="summary"') < page.index('<li class="story"')
    assert len(doc.select("li.story")) == 60
    # dates: published only when first seen is close; both when far; first seen alone
    by_title = {s.h2.get_text(): s for s in doc.select("li.story") if s.h2 is not None}
    assert by_title["Story 0"].select("time.published") and not by_title["Story 0"].select(
        "time.seen"
    )
    assert by_title["Story 1"].select("time.published") and by_title["Story 1"].select("time.seen")
    assert not by_title["Story 2"].select("time.published")
    assert "first seen" in by_title["Story 2"].select_one(".meta").get_text()
    assert "section" not in short.split("<main>")[1].split("<ol>")[0]  # 50: no summary
