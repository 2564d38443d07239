"""Feed discovery: <link rel=alternate> of every feed type, common paths, `aggregator discover`."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from aggregator.cli import app
from aggregator.discovery import candidate_urls, feed_links
from aggregator.records import FeedLink
from builders import rss
from conftest import DATA, write_config
from httpserver import FixtureServer

REAL = DATA / "pages" / "listings" / "rsparser-netnewswire"

SEVERAL = b"""<!doctype html><html><head><title>A site</title>
<base href="https://cdn.example.com/site/">
<link rel="stylesheet" href="/style.css">
<link rel="alternate" hreflang="de" href="https://example.com/de/">
<link rel="alternate" type="application/rss+xml" title="Main RSS" href="feed.rss">
<link rel="alternate" type="application/atom+xml" title="Atom" href="/atom.xml">
<link rel="alternate" type="application/feed+json" title="JSON Feed" href="https://example.com/feed.json">
<link rel="alternate" type="application/rdf+xml" href="index.rdf">
<link rel="alternate" type="application/rss+xml" title="Duplicate" href="feed.rss#again">
<link rel="alternate" type="application/rss+xml" href="javascript:void(0)">
</head><body><a href="/x">x</a></body></html>"""


def test_every_feed_type_is_found_in_page_order() -> None:
    links = feed_links(SEVERAL, {"content-type": "text/html"}, "https://example.com/page")
    assert links == (
        FeedLink("https://cdn.example.com/site/feed.rss", "RSS", "Main RSS"),
        FeedLink("https://cdn.example.com/atom.xml", "Atom", "Atom"),
        FeedLink("https://example.com/feed.json", "JSON Feed", "JSON Feed"),
        FeedLink("https://cdn.example.com/site/index.rdf", "RDF", None),
    )


def test_real_pages() -> None:
    coco = feed_links((REAL / "coco.html").read_bytes(), {}, "https://www.theatlantic.com/x/")
    assert coco == (
        FeedLink("https://www.theatlantic.com/feed/all/", "RSS", "The Atlantic"),
        FeedLink("https://www.theatlantic.com/feed/best-of/", "RSS", "Best of The Atlantic"),
    )
    df = feed_links((REAL / "DaringFireball.html").read_bytes(), {}, "http://daringfireball.net/")
    assert df == (FeedLink("http://daringfireball.net/feeds/main", "Atom", None),)


def test_a_page_without_links_has_none() -> None:
    assert (
        feed_links(b"<html><head><title>t</title></head><body></body></html>", {}, "https://x/")
        == ()
    )


def test_candidate_paths() -> None:
    urls = candidate_urls("https://example.com/blog/post.html")
    assert urls[:2] == ("https://example.com/blog/feed", "https://example.com/blog/rss")
    assert "https://example.com/atom.xml" in urls and "https://example.com/index.xml" in urls
    assert candidate_urls("https://example.com/")[0] == "https://example.com/feed"


def _page(links: str) -> str:
    return (
        f"<!doctype html><html><head><title>Site</title>{links}</head><body><p>Hi</p></body></html>"
    )


def test_discover_prints_entries_for_linked_feeds(server: FixtureServer, tmp_path: Path) -> None:
    server.add("/feed.xml", rss("Site news", [{"title": "a", "link": "http://x/a"}]))
    server.add(
        "/atom.xml",
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Site Atom</title></feed>',
    )
    page = server.add(
        "/",
        _page(
            '<link rel="alternate" type="application/rss+xml" title="News" href="/feed.xml">'
            '<link rel="alternate" type="application/atom+xml" href="/atom.xml">'
            '<link rel="alternate" type="application/rss+xml" title="Gone" href="/missing.xml">'
        ),
        content_type="text/html",
    )
    cfg = write_config(tmp_path / "feeds.yaml", [])
    result = CliRunner().invoke(app, ["discover", page, "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    entries = yaml.safe_load(result.stdout)
    assert entries == [
        {"url": server.url("/feed.xml"), "name": "News"},
        {"url": server.url("/atom.xml"), "name": "Site Atom"},
    ]
    assert "does not load: HTTP 404" in result.stderr
    assert not server.hits("/index.xml")  # no probing when the page links feeds


def test_discover_probes_common_paths(server: FixtureServer, tmp_path: Path) -> None:
    server.add("/index.xml", rss("Hugo site", []))
    page = server.add("/posts/hello/", _page(""), content_type="text/html")
    cfg = write_config(tmp_path / "feeds.yaml", [])
    result = CliRunner().invoke(app, ["discover", page, "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == [{"url": server.url("/index.xml"), "name": "Hugo site"}]
    assert server.hits("/posts/hello/feed") and server.hits("/feed")


def test_discover_with_nothing_found_suggests_an_html_source(
    server: FixtureServer, tmp_path: Path
) -> None:
    page = server.add("/plain/", _page(""), content_type="text/html")
    cfg = write_config(tmp_path / "feeds.yaml", [])
    result = CliRunner().invoke(app, ["discover", page, "--config", str(cfg)])
    assert result.exit_code == 1
    assert yaml.safe_load(result.stdout) == [{"url": page, "type": "html"}]


def test_discover_of_a_feed_url_returns_it(server: FixtureServer, tmp_path: Path) -> None:
    feed = server.add("/rss", rss("Direct", []))
    cfg = write_config(tmp_path / "feeds.yaml", [])
    result = CliRunner().invoke(app, ["discover", feed, "--config", str(cfg)])
    assert result.exit_code == 0
    assert yaml.safe_load(result.stdout) == [{"url": feed, "name": "Direct"}]
