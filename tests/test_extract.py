"""Behaviour of aggregator.extract on real pages (Mozilla readability test pages) and fragments."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aggregator.errors import ExtractError
from aggregator.extract import extract_article, html_to_text, sanitize_html
from aggregator.records import Article

PAGES = Path(__file__).parent / "data" / "pages"

# The URL each page was fetched from (as far as the page tells); deliberately not its canonical.
URLS = {
    "nytimes-1": "http://www.nytimes.com/2017/01/13/world/africa/sudan-sanctions.html?_r=0",
    "bbc-1": "http://www.bbc.com/news/world-us-canada-33646542",
    "heise": "http://www.heise.de/mac-and-i/meldung/1password-2596987.html?wt_mc=rss",
    "ars-1": "http://arstechnica.com/security/2015/04/16/minecraft/",
}


def _source(name: str) -> bytes:
    return gzip.decompress((PAGES / name / "source.html.gz").read_bytes())


def _expected(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAGES / name / "expected-metadata.json").read_text("utf-8"))
    return data


@pytest.fixture(scope="module")
def articles() -> dict[str, Article]:
    return {name: extract_article(_source(name), url) for name, url in URLS.items()}


# --- extract_article ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "sentences"),
    [
        (
            "nytimes-1",
            [
                "LONDON — After nearly 20 years of hostile relations, the American government "
                "plans to reverse its position on Sudan and lift trade sanctions",
                "Sudan is one of the poorest, most isolated and most violent countries in Africa",
            ],
        ),
        (
            "bbc-1",
            [
                "President Barack Obama has admitted that his failure to pass",
                "Mr Obama will become the first US president to address the African Union",
            ],
        ),
        ("heise", ["Das in der iOS-Version bereits enthaltene TOTP-Feature ist nun auch"]),
        (
            "ars-1",
            [
                "A flaw in the wildly popular online game Minecraft makes it easy for just about "
                "anyone to crash the server hosting the game",
            ],
        ),
    ],
)
def test_article_text_contains_known_sentences(
    articles: dict[str, Article], name: str, sentences: list[str]
) -> None:
    text = articles[name].text
    for sentence in sentences:
        assert sentence in text


@pytest.mark.parametrize(
    ("name", "junk"),
    [
        ("nytimes-1", ["Continue reading the main story", "Site Index", "Skip to content"]),
        ("bbc-1", ["Skip to content", "Accessibility links", "941 comments", "Most Popular"]),
        ("ars-1", ["Sign in", "SUBSCRIBE", "Reader comments"]),
    ],
)
def test_article_text_has_no_navigation_or_comments(
    articles: dict[str, Article], name: str, junk: list[str]
) -> None:
    for line in junk:
        assert line not in articles[name].text


def test_text_is_plain_paragraphs_separated_by_blank_lines(articles: dict[str, Article]) -> None:
    text = articles["nytimes-1"].text
    paragraphs = text.split("\n\n")
    assert len(paragraphs) > 5
    assert all(p.strip() == p and p for p in paragraphs)
    assert "<" not in text
    assert "  " not in text


@pytest.mark.parametrize("name", list(URLS))
def test_metadata_matches_expected(articles: dict[str, Article], name: str) -> None:
    article, expected = articles[name], _expected(name)
    assert article.url == URLS[name]
    assert article.title == expected["title"]
    assert article.language == expected["lang"]


@pytest.mark.parametrize("name", ["nytimes-1", "ars-1"])
def test_author_matches_expected_byline(articles: dict[str, Article], name: str) -> None:
    assert articles[name].author == _expected(name)["byline"]


def test_published_is_utc_and_canonical_comes_from_the_page(articles: dict[str, Article]) -> None:
    nyt = articles["nytimes-1"]
    assert nyt.published == datetime(2017, 1, 13, tzinfo=UTC)
    assert nyt.canonical_url == (
        "https://www.nytimes.com/2017/01/13/world/africa/sudan-sanctions.html"
    )
    assert nyt.image is not None and nyt.image.startswith("https://static01.nyt.com/")
    for article in articles.values():
        assert article.canonical_url != article.url
        assert article.published is None or article.published.tzinfo is UTC


def test_article_html_is_sanitized_with_absolute_links(articles: dict[str, Article]) -> None:
    html = articles["nytimes-1"].html
    assert html is not None
    assert "<p>" in html
    assert "<script" not in html and "<style" not in html and "onclick" not in html
    assert 'rel="noopener noreferrer nofollow"' in html
    assert 'href="/' not in html


def test_title_is_not_repeated_at_the_start_of_the_text(articles: dict[str, Article]) -> None:
    for article in articles.values():
        assert article.title is not None
        assert not article.text.startswith(article.title)


def test_bytes_are_decoded_with_the_meta_charset() -> None:
    body = "<p>Señor Müller’s café served crème brûlée to everyone who came by that day.</p>" * 4
    page = (
        '<html><head><meta charset="windows-1252"><title>Café</title></head>'
        f"<body><article>{body}</article></body></html>"
    ).encode("cp1252")
    article = extract_article(page, "https://example.org/a")
    assert "Señor Müller’s café served crème brûlée" in article.text
    assert article.title == "Café"


def test_canonical_falls_back_to_og_url_and_is_made_absolute() -> None:
    text = "<p>" + "A sentence of an article that is long enough to be kept. " * 8 + "</p>"
    page = (
        '<html lang="fr"><head><meta property="og:url" content="/stories/1">'
        f"<title>T</title></head><body><article>{text}</article></body></html>"
    )
    article = extract_article(page, "https://example.org/feed/item?id=1")
    assert article.canonical_url == "https://example.org/stories/1"
    assert article.language == "fr"


@pytest.mark.parametrize(
    "page",
    [
        "",
        "<html><head><title>x</title></head><body></body></html>",
        b"<html><body><script>var article = 'not text';</script></body></html>",
    ],
)
def test_no_article_text_raises(page: str | bytes) -> None:
    with pytest.raises(ExtractError, match="no article text found on the page"):
        extract_article(page, "https://example.org/")


# --- sanitize_html -----------------------------------------------------------------------------


def test_sanitize_removes_dangerous_markup() -> None:
    dirty = (
        '<p onclick="steal()">Hello <script>alert(1)</script><b>world</b></p>'
        "<style>p { color: red }</style>"
        '<a href="javascript:alert(1)">js</a>'
        '<img src="data:image/png;base64,AAAA" onerror="x()" alt="d">'
        '<iframe src="https://evil.example/"></iframe>'
        '<form action="/x"><input name="q"><button>Go</button></form>'
        '<div style="position:fixed">styled</div>'
    )
    clean = sanitize_html(dirty)
    for bad in ("<script", "alert(1)", "onclick", "onerror", "javascript:", "data:", "<iframe"):
        assert bad not in clean
    for bad in ("<style", "color: red", "<form", "<input", "<button", "style="):
        assert bad not in clean
    assert "<b>world</b>" in clean
    assert "styled" in clean


def test_sanitize_keeps_article_markup_and_adds_rel() -> None:
    clean = sanitize_html(
        '<h2>Head</h2><blockquote><p><a href="https://example.org/x" title="t">x</a></p>'
        '</blockquote><time datetime="2024-01-02">2 Jan</time><img src="https://e.org/i.png" alt="a">'
    )
    assert "<h2>Head</h2>" in clean
    assert '<a href="https://example.org/x" title="t" rel="noopener noreferrer nofollow">' in clean
    assert '<time datetime="2024-01-02">' in clean
    assert '<img src="https://e.org/i.png" alt="a">' in clean


def test_sanitize_makes_relative_links_absolute() -> None:
    clean = sanitize_html(
        '<p><a href="/about">a</a> <a href="next.html">n</a> <a href="#top">t</a>'
        ' <img src="../img/p.jpg"> <a href="mailto:x@example.org">m</a></p>',
        base_url="https://example.org/news/2024/story.html",
    )
    assert 'href="https://example.org/about"' in clean
    assert 'href="https://example.org/news/2024/next.html"' in clean
    assert 'src="https://example.org/news/img/p.jpg"' in clean
    assert 'href="#top"' in clean
    assert 'href="mailto:x@example.org"' in clean


def test_sanitize_still_blocks_javascript_after_absolutizing() -> None:
    clean = sanitize_html(
        '<a href=" javascript:alert(1)">x</a><a href="JaVaScRiPt:alert(2)">y</a>',
        base_url="https://example.org/",
    )
    assert "javascript" not in clean.lower()
    assert "alert" not in clean


def test_a_hostile_base_cannot_give_relative_links_a_forbidden_scheme() -> None:
    # a feed's xml:base is the feed's to choose: joining a relative link to it must not
    # produce what the scheme allowlist would have refused in the link itself
    clean = sanitize_html(
        '<a href="etc/passwd">f</a><img src="x.png"><a href="/ok" title="t">k</a>',
        base_url="file:///",
    )
    assert "file:" not in clean
    assert "href" not in clean and "src" not in clean  # the attributes go, not the text
    assert ">f</a>" in clean and "<img>" in clean and 'title="t"' in clean
    # entities in a joined link are escaped again on the way out
    clean = sanitize_html('<a href="q?a=1&amp;b=&quot;2&quot;">q</a>', base_url="https://e.org/")
    assert 'href="https://e.org/q?a=1&amp;b=&quot;2&quot;"' in clean


def test_sanitize_empty() -> None:
    assert sanitize_html("") == ""
    assert sanitize_html("   ", base_url="https://example.org/") == ""


# --- html_to_text ------------------------------------------------------------------------------


def test_html_to_text_paragraphs_entities_and_whitespace() -> None:
    fragment = (
        "<p>Fish &amp; chips   &nbsp;are\n  good.</p><p>Second<br>line</p>"
        "<ul><li>one</li><li>two</li></ul><script>var x = 1;</script>tail &lt;b&gt;"
    )
    assert html_to_text(fragment) == (
        "Fish & chips are good.\n\nSecond\nline\n\none\n\ntwo\n\ntail <b>"
    )


def test_html_to_text_plain_and_empty() -> None:
    assert html_to_text("just   text &eacute;t&eacute;") == "just text été"
    assert html_to_text("") == ""
    assert html_to_text("<p> </p>") == ""
    assert html_to_text("<p>a<b>b</b> c</p>") == "ab c"


_TEXT = "The council voted on the new budget after a long debate about the harbour. " * 4
_MARKUP = f"""<html><head><title>T</title></head><body><article><h1>Budget</h1>
<p>{_TEXT}</p><p>Line one<br>line two<br/>line three and {_TEXT}</p>
<table><tr><th>Year</th><th>Sum</th></tr><tr><td>2024</td><td>5</td></tr></table>
<ul><li>first point {_TEXT}</li><li>second</li></ul><blockquote>{_TEXT}</blockquote>
<pre>code   block
  kept</pre><details><summary>More</summary><p>{_TEXT}</p></details>
<form><p>{_TEXT} in a form</p><button>Press</button><select><option>o1</option></select></form>
<address>{_TEXT} address</address><p>Caf&eacute; &amp; &lt;tags&gt; <b>bold</b><i>it</i>
<del>gone</del></p></article></body></html>"""


@pytest.mark.parametrize("name", ["ars-1", "bbc-1", "heise", "nytimes-1", "markup"])
def test_the_text_is_the_text_of_the_stored_html(name: str) -> None:
    """``Article.text`` is read from the extracted tree, not from ``Article.html`` parsed
    again: it must still be exactly what ``html_to_text`` reads from the sanitized HTML
    that is stored (blocks, line breaks, cells, entities, what sanitizing drops)."""
    page = _MARKUP.encode() if name == "markup" else _source(name)
    article = extract_article(page, f"https://news.example/{name}")
    assert article.text
    assert article.text == html_to_text(article.html)
