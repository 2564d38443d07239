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

import exportdata
from aggregator.config import load_config
from aggregator.export import ExportRequest, build_filter, stream
from aggregator.store import open_store
from aggregator.store.queries import Queries
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
    times = [str(s.select("time")[0]["datetime"]) for s in stories[1:]]
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
