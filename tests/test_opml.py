"""OPML: read real lists, import into feeds.yaml keeping comments, export OPML 2.0, round trip."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aggregator.cli import app
from aggregator.config import load_config
from aggregator.errors import ParseError
from aggregator.feedsfile import add_subscriptions, url_key
from aggregator.opml import read_opml, write_opml
from aggregator.records import FeedSpec, Subscription
from conftest import DATA

OPML = DATA / "opml"
LISTS = sorted(OPML.rglob("*.opml"))

CONFIG = """\
# Feeds for the newsroom.
settings:
  per_host_delay: 2s   # be polite
  allow_private_networks: ["127.0.0.0/8"]

feeds:
  # the wire first
  - url: https://feeds.bbci.co.uk/news/world/rss.xml/
    name: "BBC World (ours)"
    tags: [wire]

  - url: https://example.org/listing/
    type: html   # no feed on this site
"""


def test_real_lists_are_read() -> None:
    subs = read_opml((OPML / "rsparser-netnewswire" / "Subs.opml").read_bytes())
    assert subs.title == "Subs" and len(subs.feeds) == 207
    assert subs.feeds[0] == Subscription("http://daringfireball.net/feeds/main", "Daring Fireball")
    tech = read_opml((OPML / "awesome-rss-feeds" / "Tech.opml").read_bytes())
    assert len(tech.feeds) == 26
    assert tech.feeds[0] == Subscription("https://atp.fm/rss", "Accidental Tech Podcast", ("Tech",))
    assert all(s.tags == ("Tech",) for s in tech.feeds)


def test_not_opml_is_an_error() -> None:
    with pytest.raises(ParseError):
        read_opml(b"<html><body>hello</body></html>")
    with pytest.raises(ParseError):
        read_opml(b"   ")


def test_import_keeps_comments_and_order_and_skips_duplicates(tmp_path: Path) -> None:
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(CONFIG, encoding="utf-8")
    news = OPML / "awesome-rss-feeds" / "News.opml"
    runner = CliRunner()
    result = runner.invoke(app, ["feeds", "import", str(news), "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    text = cfg.read_text(encoding="utf-8")
    assert text.startswith(CONFIG)  # everything that was there is untouched, comments too
    assert "added 10 of 11 subscriptions" in result.output
    assert "= http://feeds.bbci.co.uk/news/world/rss.xml" in result.output  # same feed, other form
    config = load_config(cfg)
    assert [f.url for f in config.feeds][:2] == [
        "https://feeds.bbci.co.uk/news/world/rss.xml/",
        "https://example.org/listing/",
    ]
    expected = [s for s in read_opml(news.read_bytes()).feeds][1:]
    assert [(f.url, f.name, f.tags) for f in config.feeds[2:]] == [
        (s.url, s.title, s.tags) for s in expected
    ]

    again = runner.invoke(app, ["feeds", "import", str(news), "--config", str(cfg)])
    assert again.exit_code == 0 and "added 0 of 11" in again.output
    assert cfg.read_text(encoding="utf-8") == text


def test_import_into_a_new_file_and_dry_run(tmp_path: Path) -> None:
    cfg = tmp_path / "config" / "feeds.yaml"
    tech = OPML / "awesome-rss-feeds" / "Tech.opml"
    runner = CliRunner()
    dry = runner.invoke(app, ["feeds", "import", str(tech), "--dry-run", "--config", str(cfg)])
    assert dry.exit_code == 0 and "would add 26 of 26" in dry.output
    assert not cfg.exists()
    result = runner.invoke(app, ["feeds", "import", str(tech), "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert len(load_config(cfg).feeds) == 26


@pytest.mark.parametrize("path", LISTS, ids=[p.name for p in LISTS])
def test_round_trip_import_export_read(path: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text("# mine\nfeeds: []\n", encoding="utf-8")
    runner = CliRunner()
    imported = runner.invoke(app, ["feeds", "import", str(path), "--config", str(cfg)])
    assert imported.exit_code == 0, imported.output
    out = tmp_path / "export.opml"
    exported = runner.invoke(app, ["feeds", "export", "--output", str(out), "--config", str(cfg)])
    assert exported.exit_code == 0, exported.output
    root = ET.parse(out).getroot()
    assert root.tag == "opml" and root.get("version") == "2.0"
    original = read_opml(path.read_bytes()).feeds
    # keep the first of feeds the list holds twice in different spellings
    unique: dict[str, Subscription] = {}
    for sub in original:
        unique.setdefault(url_key(sub.url), sub)
    # feed names are unique in feeds.yaml: a title met again is imported as "Title (2)"
    expected = []
    taken: set[str] = set()
    for sub in unique.values():
        name = sub.title
        n = 1
        while name is not None and name in taken:
            n += 1
            name = f"{sub.title} ({n})"
        if name is not None:
            taken.add(name)
        expected.append((sub.url, name, sub.tags))
    again = read_opml(out.read_bytes()).feeds
    assert [(s.url, s.title, s.tags) for s in again] == expected


def test_export_escapes_and_keeps_tags_and_html_sources() -> None:
    specs = [
        FeedSpec(
            url="https://a.example/feed?x=1&y=2", name='Tom & Jerry "<news>"', tags=("a", "b/c")
        ),
        FeedSpec(url="https://b.example/rss"),
        FeedSpec(url="https://c.example/news/", name="C listing", type="html", tags=("a",)),
    ]
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    document = write_opml(specs, title="Mine & yours", now=now)
    root = ET.fromstring(document)
    assert root.findtext("head/title") == "Mine & yours"
    assert root.findtext("head/dateCreated") == "Mon, 01 Jun 2026 12:00:00 GMT"
    back = read_opml(document)
    assert back.feeds == (
        Subscription("https://a.example/feed?x=1&y=2", 'Tom & Jerry "<news>"', ("a", "b/c")),
        Subscription("https://b.example/rss", "https://b.example/rss"),
    )
    assert back.pages == (Subscription("https://c.example/news/", "C listing", ("a",)),)


def test_html_pages_are_imported_only_on_request(tmp_path: Path) -> None:
    specs = [FeedSpec(url="https://c.example/news/", name="C listing", type="html")]
    opml = tmp_path / "pages.opml"
    opml.write_bytes(write_opml(specs, title="t", now=datetime(2026, 1, 1, tzinfo=UTC)))
    cfg = tmp_path / "feeds.yaml"
    runner = CliRunner()
    plain = runner.invoke(app, ["feeds", "import", str(opml), "--config", str(cfg)])
    assert plain.exit_code == 0 and "1 outline(s) without a feed URL skipped" in plain.output
    assert not cfg.exists()
    result = runner.invoke(
        app, ["feeds", "import", str(opml), "--html-pages", "--config", str(cfg)]
    )
    assert result.exit_code == 0, result.output
    [spec] = load_config(cfg).feeds
    assert (spec.url, spec.type, spec.name) == ("https://c.example/news/", "html", "C listing")


def test_add_subscriptions_keeps_layout_without_indent() -> None:
    text = "feeds:\n- url: https://a.example/x   # first\n"
    new, report = add_subscriptions(text, [Subscription("https://b.example/y", "B: the best")])
    assert new == text + "- url: https://b.example/y\n  name: 'B: the best'\n"
    assert yaml.safe_load(new)["feeds"][1] == {"url": "https://b.example/y", "name": "B: the best"}
    assert [s.url for s in report.added] == ["https://b.example/y"]
    bad, report = add_subscriptions(text, [Subscription("ftp://x.example/f")])
    assert bad == text and report.invalid[0][1] == "not an http(s) URL with a host"
