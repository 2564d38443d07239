"""Tests for aggregator.parse: golden values from real feeds plus small inline cases.

The golden values below were checked by hand against the fixture documents in
tests/data/feeds/ (provenance and licences in tests/data/feeds/LICENSES.md).
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator.errors import ParseError
from aggregator.extract import sanitize_html
from aggregator.parse import looks_like_html, parse_feed
from aggregator.records import ParsedFeed

FEEDS = Path(__file__).parent / "data" / "feeds"
BASE = "https://example.org/feeds/feed.xml"


def load(name: str) -> bytes:
    return (FEEDS / name).read_bytes()


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True)
class Golden:
    file: str
    kind: str
    count: int
    key_level: str
    feed_title: str
    key: str
    title: str
    link: str | None
    published: str | None
    updated: str | None = None
    problem: str | None = None  # expected prefix of ParsedFeed.problem


GOLDEN = [
    # RSS 0.91, ISO-8859-1 bytes; items have no <guid>, so keys fall back to the link.
    Golden(
        "codehollow-feedreader/Rss091Stadtfeuerwehr.xml",
        "rss091u",
        15,
        "guid",
        "Stadtfeuerwehr Weiz - Einsätze",
        "link:http://www.stadtfeuerwehr-weiz.at/einsaetze/einsatz-detail/5220/",
        "[19.08.2018 - 07:08 Uhr] Brandmeldeanlagenalarm",
        "http://www.stadtfeuerwehr-weiz.at/einsaetze/einsatz-detail/5220/",
        "2018-08-19T06:08:00+00:00",  # Sun, 19 Aug 2018 07:08:00 +0100
    ),
    # RSS 1.0 / RDF: rdf:about is the id; dc:date is an update date, not a publish date.
    Golden(
        "codehollow-feedreader/Rss10OrfAt.xml",
        "rss10",
        50,
        "guid",
        "news.ORF.at",
        "guid:http://orf.at/stories/2376368/",
        "US-Band New Edition mit Stern auf „Walk of Fame“ geehrt",
        "http://orf.at/stories/2376368/",
        None,
        "2017-01-23T20:54:55+00:00",  # 2017-01-23T21:54:55+01:00
    ),
    # RSS 2.0 with content:encoded (Medium).
    Golden(
        "rss-parser/content-encoded.rss",
        "rss20",
        7,
        "guid",
        "Food in Invironment on Medium",
        "guid:https://medium.com/p/125af37d838f",
        "THE CREATIVE FORAGER",
        "https://medium.com/invironment/the-creative-forager-125af37d838f"
        "?source=rss----d12c403d4976--food",
        "2018-04-09T18:55:38+00:00",
        "2018-04-09T19:39:12+00:00",  # atom:updated 19:39:12.675Z
    ),
    # Atom 0.3 where two different entries share one id and one link: the document
    # steps down to the hash level.
    Golden(
        "feedsmith/atom-03.xml",
        "atom03",
        3,
        "hash",
        "Sample Feed",
        "hash:" + hashlib.sha1(b"First entry title\x002004-04-20T00:23:47+00:00").hexdigest(),
        "First entry title",
        "http://example.org/entry/3",  # href="/entry/3" under xml:base="http://example.org/"
        "2004-04-20T00:23:47+00:00",  # <issued>
        "2004-04-20T11:56:34+00:00",  # <modified>
    ),
    # Atom 1.0 (GitHub commits).
    Golden(
        "miniflux/small_atom.xml",
        "atom10",
        20,
        "guid",
        "Recent Commits to v2:main",
        "guid:tag:github.com,2008:Grit::Commit/6d97f8b4582414b6ce69467656824690057d4793",
        "Parse podcast categories",
        "https://github.com/miniflux/v2/commit/6d97f8b4582414b6ce69467656824690057d4793",
        None,
        "2024-03-12T05:30:27+00:00",
    ),
    # RSS 2.0 in windows-1251.
    Golden(
        "miniflux/encoding_WINDOWS-1251.xml",
        "rss20",
        50,
        "guid",
        "iBash.Org.Ru",
        "guid:http://ibash.org.ru/quote.php?id=17703",
        "Цитата #17703",
        "http://ibash.org.ru/quote.php?id=17703",
        "2018-03-21T07:27:32+00:00",  # Wed, 21 Mar 2018 10:27:32 +0300
    ),
    # Not well-formed (a bare & in the second item's link): still ingested, with a problem.
    Golden(
        "node-feedparser/saxerror.xml",
        "rss20",
        3,
        "guid",
        "SAXError Test Feed",
        "guid:http://example.com/good",
        "Good Item",
        "http://example.com/good",
        None,
        problem="XML is not well-formed: ",
    ),
    # JSON Feed 1.0.
    Golden(
        "atoma/jsonfeed.org.json",
        "json10",
        1,
        "guid",
        "JSON Feed",
        "guid:https://jsonfeed.org/2017/05/17/announcing_json_feed",
        "Announcing JSON Feed",
        "https://jsonfeed.org/2017/05/17/announcing_json_feed",
        "2017-05-17T15:02:12+00:00",  # 2017-05-17T08:02:12-07:00
    ),
    # JSON Feed 1.1.
    Golden(
        "atoma/podcast.json",
        "json11",
        1,
        "guid",
        "The Record",
        "guid:http://therecord.co/chris-parrish",
        "Special #1 - Chris Parrish",
        "http://therecord.co/chris-parrish",
        "2014-05-09T21:04:00+00:00",  # 2014-05-09T14:04:00-07:00
    ),
    # JSON Feed whose home_page_url, feed_url and item urls are all relative.
    Golden(
        "feed-extractor/json-feed-miss-base-url.json",
        "json10",
        2,
        "guid",
        "JSON Feed",
        "guid:http://jsonfeed.micro.blog/2020/08/07/json-feed-version.html",
        "JSON Feed version 1.1",
        "https://example.org/2020/08/07/json-feed-version.html",
        "2020-08-07T16:44:36+00:00",
    ),
    # Atom with an xml:base on the content element.
    Golden(
        "feed-rs/atom_xml_base.xml",
        "atom10",
        1,
        "guid",
        "my cool website title",
        "guid:https://numi.st/post/2022/travel-uke",
        "my cool entry title",
        "https://numi.st/post/2022/travel-uke",
        None,
        "2022-04-21T00:00:00+00:00",
    ),
    # RSS 2.0 whose channel and item links are relative to the feed URL.
    Golden(
        "node-feedparser/rss-with-relative-urls.xml",
        "rss20",
        2,
        "guid",
        "Neverwinter",
        "guid:http://www.arcgames.com/en/games/PAB_nw/news/detail/10743874",
        "Neverwinter & Jingle Jam Humble Bundle!",
        "https://example.org/en/games/neverwinter/news/detail/"
        "10743874-neverwinter-%26-jingle-jam-humble-bundle%21",
        "2017-12-07T18:00:29+00:00",
    ),
    Golden(
        "rssreader-java/rss-skip-days-skip-hours.xml",
        "rss20",
        2,
        "guid",
        "Podnews Daily - podcast industry news",
        "guid:https://podnews.net/update/jeanine-wright-interview",
        "Inside the AI podcast factory",
        "https://podnews.net/update/jeanine-wright-interview",
        "2025-09-26T09:08:58+00:00",
    ),
]


@pytest.mark.parametrize("golden", GOLDEN, ids=lambda g: g.file)
def test_golden_feeds(golden: Golden) -> None:
    feed = parse_feed(load(golden.file), {}, BASE)
    assert feed.kind == golden.kind
    assert len(feed.entries) == golden.count
    assert feed.key_level == golden.key_level
    assert feed.title == golden.feed_title
    first = feed.entries[0]
    assert first.key == golden.key
    assert first.title == golden.title
    assert first.link == golden.link
    assert iso(first.published) == golden.published
    assert iso(first.updated) == golden.updated
    if golden.problem is None:
        assert feed.problem is None
    else:
        assert feed.problem is not None
        assert feed.problem.startswith(golden.problem)
    assert len({e.key for e in feed.entries}) == len(feed.entries)
    for entry in feed.entries:
        for value in (entry.published, entry.updated):
            assert value is None or value.utcoffset() is not None
        assert entry.link is None or entry.link.startswith(("http://", "https://"))


def test_result_pickles() -> None:
    feed = parse_feed(load("rss-parser/content-encoded.rss"), {}, BASE)
    assert pickle.loads(pickle.dumps(feed)) == feed


def test_content_encoded_is_content_and_author() -> None:
    feed = parse_feed(load("rss-parser/content-encoded.rss"), {}, BASE)
    first = feed.entries[0]
    assert first.content is not None
    assert first.content.startswith("<h4>Using Wild Ingredients in the\xa0Kitchen</h4>")
    assert first.author == "Jeremy Puma"


def test_xml_base_resolves_relative_urls_in_content() -> None:
    feed = parse_feed(load("feed-rs/atom_xml_base.xml"), {}, BASE)
    entry = feed.entries[0]
    assert entry.author == "Not Blank"
    assert entry.content is not None
    # the parser keeps the content as given and reports the xml:base in effect; links are
    # made absolute against it when the content is sanitized
    assert entry.base is not None and entry.base.startswith("https://numi.st/post/2022/travel-uke")
    clean = sanitize_html(entry.content, entry.base)
    assert 'src="https://numi.st/post/2022/travel-uke/IMG_1232.jpeg"' in clean


def test_relative_links_use_base_url() -> None:
    feed = parse_feed(
        load("node-feedparser/rss-with-relative-urls.xml"), {}, "https://www.arcgames.com/rss"
    )
    assert feed.link == "https://www.arcgames.com/en/games/neverwinter/news"
    assert feed.entries[0].link is not None
    assert feed.entries[0].link.startswith("https://www.arcgames.com/en/games/neverwinter/")
    assert feed.hints.ttl_seconds == 3600


def test_content_location_header_wins_over_base_url() -> None:
    feed = parse_feed(
        load("node-feedparser/rss-with-relative-urls.xml"),
        {"content-location": "https://mirror.example.net/rss"},
        "https://www.arcgames.com/rss",
    )
    assert feed.link == "https://mirror.example.net/en/games/neverwinter/news"


def test_media_thumbnail_is_image() -> None:
    feed = parse_feed(load("miniflux/small_atom.xml"), {}, BASE)
    entry = feed.entries[0]
    assert entry.image == "https://avatars.githubusercontent.com/u/323546?s=30&v=4"
    assert entry.author == "fguillot"


def test_json_feed_relative_urls_resolve_against_feed_url() -> None:
    body = load("feed-extractor/json-feed-miss-base-url.json")
    feed = parse_feed(body, {"content-type": "application/feed+json"}, "https://blog.example.com/x")
    assert feed.link == "https://blog.example.com/"
    assert [e.link for e in feed.entries] == [
        "https://blog.example.com/2020/08/07/json-feed-version.html",
        "https://blog.example.com/2017/05/17/announcing-json-feed.html",
    ]


def test_json_feed_content_text_and_summary_become_html() -> None:
    feed = parse_feed(load("atoma/podcast.json"), {}, BASE)
    entry = feed.entries[0]
    assert entry.content is not None
    assert entry.content.startswith('Chris has worked at <a href="http://adobe.com/">Adobe</a>')
    assert entry.summary == (
        "<p>Brent interviews Chris Parrish, co-host of The Record and one-half of "
        "Aged &amp; Distilled.</p>"
    )


def test_hints_ttl_skip_hours_skip_days() -> None:
    feed = parse_feed(load("rssreader-java/rss-skip-days-skip-hours.xml"), {}, BASE)
    assert feed.hints.ttl_seconds == 30 * 60
    assert feed.hints.skip_hours == (0, 1, 2, 3, 4, 5, 6, 15, 16, 17, 18, 19, 20, 21, 22, 23)
    assert feed.hints.skip_days == ("Saturday", "Sunday")


def test_hints_sy_update_period() -> None:
    feed = parse_feed(load("codehollow-feedreader/Rss10OrfAt.xml"), {}, BASE)
    assert feed.hints.update_period_seconds == 3600 / 2  # hourly, frequency 2


@pytest.mark.parametrize(
    "name", ["rsparser-netnewswire/inessential.html", "node-feedparser/notafeed.html"]
)
def test_html_page_is_parse_error(name: str) -> None:
    body = load(name)
    assert looks_like_html(body, {})
    with pytest.raises(ParseError, match="HTML page, not a feed"):
        parse_feed(body, {"content-type": "text/html; charset=utf-8"}, BASE)


def test_invalid_json_is_parse_error() -> None:
    with pytest.raises(ParseError, match="not valid JSON"):
        parse_feed(load("rsparser-netnewswire/allthis-partial.json"), {}, BASE)


# --------------------------------------------------------------------------- inline


def rss(items: str, channel_extra: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<rss version="2.0" xmlns:sy="http://purl.org/rss/1.0/modules/syndication/">'
        f"<channel><title>Inline</title><link>https://site.example/</link>{channel_extra}"
        f"{items}</channel></rss>"
    ).encode()


def item(title: str, *, guid: str | None = None, link: str | None = None, date: str = "") -> str:
    parts = [f"<title>{title}</title>"]
    if guid is not None:
        parts.append(f'<guid isPermaLink="false">{guid}</guid>')
    if link is not None:
        parts.append(f"<link>{link}</link>")
    if date:
        parts.append(f"<pubDate>{date}</pubDate>")
    parts.append(f"<description>Body of {title}</description>")
    return "<item>" + "".join(parts) + "</item>"


def parse(body: bytes, headers: dict[str, str] | None = None) -> ParsedFeed:
    return parse_feed(body, headers or {"content-type": "application/rss+xml"}, BASE)


def test_shared_guid_steps_down_to_link_level() -> None:
    items = "".join(
        item(f"Story {i}", guid="same-guid", link=f"https://site.example/{i}") for i in range(5)
    )
    feed = parse(rss(items))
    assert feed.key_level == "link"
    assert [e.key for e in feed.entries] == [f"link:https://site.example/{i}" for i in range(5)]
    assert {e.guid for e in feed.entries} == {"same-guid"}


def test_one_link_for_all_steps_down_to_hash_level() -> None:
    items = "".join(
        item(
            f"Story {i}", link="https://site.example/", date=f"Mon, 0{i + 1} Jan 2024 10:00:00 GMT"
        )
        for i in range(4)
    )
    feed = parse(rss(items))
    assert feed.key_level == "hash"
    expected = [
        "hash:" + hashlib.sha1(f"Story {i}\x002024-01-0{i + 1}T10:00:00+00:00".encode()).hexdigest()
        for i in range(4)
    ]
    assert [e.key for e in feed.entries] == expected


def test_hash_collisions_are_disambiguated_by_content() -> None:
    body = rss(
        "<item><title>Same</title><link>https://site.example/</link>"
        "<description>one</description></item>"
        "<item><title>Same</title><link>https://site.example/</link>"
        "<description>two</description></item>"
    )
    feed = parse(body)
    assert feed.key_level == "hash"
    assert len(feed.entries) == 2
    assert len({e.key for e in feed.entries}) == 2


def test_exact_repeats_collapse_without_stepping_down() -> None:
    one = item("Story", guid="g1", link="https://site.example/1")
    feed = parse(rss(one + one + item("Other", guid="g2", link="https://site.example/2")))
    assert feed.key_level == "guid"
    assert [e.key for e in feed.entries] == ["guid:g1", "guid:g2"]


def test_entry_fields_are_normalised() -> None:
    body = rss(
        "<item><title>  A &amp;amp; B\n  <![CDATA[<b>bold</b>]]> </title>"
        "<guid>https://site.example/p/1</guid><link>/p/1</link>"
        "<pubDate>Mon, 01 Jan 2024 10:00:00 +0200</pubDate>"
        "<description>same</description>"
        "<content:encoded xmlns:content='http://purl.org/rss/1.0/modules/content/'>"
        "same</content:encoded>"
        '<enclosure url="/img.jpg" type="image/jpeg" length="1"/></item>'
    )
    entry = parse(body).entries[0]
    assert entry.title == "A & B bold"
    assert entry.link == "https://example.org/p/1"
    assert entry.published == datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
    assert entry.updated is None
    assert entry.content == "same"
    assert entry.summary is None  # identical to the content
    assert entry.image == "https://example.org/img.jpg"


def test_updated_only_keeps_published_none() -> None:
    body = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>A</title>'
        b"<entry><id>urn:x:1</id><title>T</title><updated>2030-05-01T00:00:00Z</updated></entry>"
        b"</feed>"
    )
    entry = parse_feed(body, {"content-type": "application/atom+xml"}, BASE).entries[0]
    assert entry.published is None
    assert entry.updated == datetime(2030, 5, 1, tzinfo=UTC)  # future dates stay as given
    assert entry.key == "guid:urn:x:1"


def test_empty_but_valid_feed_has_no_entries_and_no_error() -> None:
    feed = parse(rss(""))
    assert feed.kind == "rss20"
    assert feed.title == "Inline"
    assert feed.entries == ()
    assert feed.problem is None


def test_inline_hints() -> None:
    extra = (
        "<ttl>15</ttl><sy:updatePeriod>daily</sy:updatePeriod>"
        "<sy:updateFrequency>4</sy:updateFrequency>"
        "<skipHours><hour>23</hour><hour>1</hour></skipHours>"
        "<skipDays><day>monday</day></skipDays>"
    )
    hints = parse(rss("", extra)).hints
    assert hints.ttl_seconds == 900
    assert hints.update_period_seconds == 86400 / 4
    assert hints.skip_hours == (1, 23)
    assert hints.skip_days == ("Monday",)


def test_json_feed_inline_relative_urls_and_text() -> None:
    body = (
        b'{"version": "https://jsonfeed.org/version/1.1", "title": "J",'
        b' "feed_url": "https://j.example/blog/feed.json",'
        b' "items": [{"id": 7, "url": "post/1", "title": "<b>Hi</b> &amp; bye",'
        b' "content_text": "a < b\\n\\nline1\\nline2", "image": "/i.png",'
        b' "date_published": "2024-02-03T04:05:06+01:00",'
        b' "authors": [{"name": "Ann"}, {"name": "Bob"}]}]}'
    )
    feed = parse_feed(body, {"content-type": "application/json"}, BASE)
    assert feed.kind == "json11"
    entry = feed.entries[0]
    assert entry.key == "guid:7"
    assert entry.link == "https://j.example/blog/post/1"
    assert entry.image == "https://j.example/i.png"
    assert entry.title == "<b>Hi</b> & bye"  # JSON Feed titles are plain text
    assert entry.content == "<p>a &lt; b</p><p>line1<br>line2</p>"
    assert entry.author == "Ann, Bob"
    assert entry.published == datetime(2024, 2, 3, 3, 5, 6, tzinfo=UTC)


def test_json_that_is_not_a_json_feed() -> None:
    with pytest.raises(ParseError, match="not a JSON Feed"):
        parse_feed(b'{"rss": {"version": "2.0"}}', {"content-type": "application/json"}, BASE)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty response body"),
        (b"  \n\t ", "empty response body"),
        (b"<!DOCTYPE html><html><head><title>Hi</title></head><body>x</body></html>", "HTML page"),
        (bytes(range(256)) * 4, "not a feed"),
        (b"\x1f\x8b\x08\x00garbage", "gzip"),
        (b"{not json", "not valid JSON"),
    ],
)
def test_not_a_feed(body: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_feed(body, {}, BASE)


def test_looks_like_html() -> None:
    assert looks_like_html(b"\n<!-- x --><html><body/></html>", {})
    assert not looks_like_html(b'<?xml version="1.0"?><rss version="2.0"/>', {})
    assert not looks_like_html(rss(""), {"content-type": "text/html"})
    assert looks_like_html(b"hello", {"content-type": "text/html"})
    assert not looks_like_html(b'{"version": "x"}', {"content-type": "text/html"})


def test_charset_comes_from_xml_declaration_for_bare_text_xml() -> None:
    body = load("miniflux/encoding_WINDOWS-1251.xml")
    feed = parse_feed(body, {"content-type": "text/xml"}, BASE)
    assert feed.entries[0].title == "Цитата #17703"
    assert feed.problem is None


def test_feed_served_as_text_html_still_parses_with_a_problem() -> None:
    body = load("miniflux/small_atom.xml")
    feed = parse_feed(body, {"content-type": "text/html; charset=utf-8"}, BASE)
    assert feed.kind == "atom10"
    assert len(feed.entries) == 20
    assert feed.problem is not None
    assert "XML content type" in feed.problem


# --------------------------------------------------------------------------- hostile dates
HOSTILE = "9999-12-31T23:59:59-14:00"  # a valid ISO date whose UTC time is in year 10000


def test_json_feed_date_out_of_range_is_dropped_and_noted() -> None:
    body = (
        '{"version": "https://jsonfeed.org/version/1.1", "title": "t", "items": ['
        f'{{"id": "1", "title": "far", "content_text": "x", "date_published": "{HOSTILE}",'
        ' "date_modified": "0001-01-01T00:00:00+01:00"},'
        '{"id": "2", "title": "fine", "content_text": "y",'
        ' "date_published": "2026-06-01T10:00:00+02:00"}]}'
    ).encode()
    feed = parse_feed(body, {"content-type": "application/feed+json"}, BASE)
    far, fine = feed.entries
    assert far.published is None and far.updated is None
    assert fine.published == datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
    assert feed.problem is not None
    assert f"date_published '{HOSTILE}' is out of range; ignored" in feed.problem
    assert "1 more" in feed.problem  # the date_modified of the same entry


@pytest.mark.parametrize(
    "date",
    [
        HOSTILE,  # feedparser gives year 10000
        "0001-01-01T00:00:00+01:00",  # feedparser gives year 0
        "0100-01-01T00:00:00Z",  # a real date, but not a publication date
    ],
)
def test_xml_entry_date_out_of_range_is_dropped_and_noted(date: str) -> None:
    feed = parse(
        rss(
            item("far", guid="1", date=date)
            + item("fine", guid="2", date="Mon, 01 Jun 2026 10:00:00 GMT")
        )
    )
    far, fine = feed.entries
    assert far.published is None
    assert fine.published == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    assert feed.problem == f"entry published date '{date}' is out of range; ignored"
