"""``extract.page_metadata`` finds what ``trafilatura.bare_extraction(with_metadata=True)``
finds (title, author, date, image, URL), and the article text is the same either way.

It replaces trafilatura's metadata step inside ``extract_article`` (without categories,
tags, site name and license, which an article never uses), so it must stay equal to
trafilatura's own step on real pages, including after a trafilatura upgrade.
"""

from __future__ import annotations

import gzip
from copy import deepcopy
from pathlib import Path

import pytest
import trafilatura
from lxml import html as lxml_html
from trafilatura.settings import Document
from trafilatura.utils import load_html

from aggregator import extract

PAGES = Path(__file__).parent / "data" / "pages"
REAL = sorted(p.name for p in PAGES.iterdir() if (p / "source.html.gz").exists())
FIELDS = ("title", "author", "date", "image", "url", "language")

# small pages where each step of the metadata search decides something
MADE = {
    "json-ld author and date": """<html><head><title>Site | Page</title>
        <script type="application/ld+json">{"@context": "https://schema.org", "@type": "NewsArticle",
        "headline": "A JSON-LD headline", "author": {"@type": "Person", "name": "Ada Lovelace"},
        "datePublished": "2024-03-05T10:00:00Z", "image": "https://e.org/a.jpg"}</script>
        </head><body><article><h1>A headline</h1><p>{text}</p></article></body></html>""",
    "one-word meta author dropped": """<html><head><meta name="author" content="admin">
        <meta property="og:title" content="Og title"></head><body><article>
        <p class="byline">By Grace Hopper</p><p>{text}</p></article></body></html>""",
    "date only in the text": """<html><head><title>Plain</title></head><body><article>
        <p>Posted on March 7, 2023 by the desk.</p><p>{text}</p></article></body></html>""",
    "broken json-ld": """<html><head><script type="application/ld+json">{"@type":
        "Article", "author": [</script><title>Broken</title></head><body><article>
        <p>{text}</p></article></body></html>""",
}
TEXT = "The council voted on the new budget after a long debate about the harbour. " * 6


def _tree(name: str) -> lxml_html.HtmlElement:
    if name in MADE:
        page = MADE[name].replace("{text}", TEXT)
    else:
        page = gzip.decompress((PAGES / name / "source.html.gz").read_bytes()).decode("utf-8")
    tree = load_html(page)
    assert tree is not None
    return tree


@pytest.mark.parametrize("name", REAL + sorted(MADE))
def test_page_metadata_equals_trafilaturas(name: str) -> None:
    url = f"https://news.example/{name.replace(' ', '-')}"
    theirs = trafilatura.bare_extraction(
        deepcopy(_tree(name)), url=url, output_format="txt", with_metadata=True
    )
    tree = _tree(name)
    ours = extract.page_metadata(tree, url)
    without = trafilatura.bare_extraction(tree, url=url, output_format="txt", with_metadata=False)
    assert isinstance(theirs, Document) and isinstance(without, Document)
    assert {f: getattr(ours, f) for f in FIELDS} == {f: getattr(theirs, f) for f in FIELDS}
    # the metadata step does not change what the text extraction sees
    assert without.raw_text == theirs.raw_text


def test_the_steps_find_something_on_these_pages() -> None:
    """The made pages exercise JSON-LD, the one-word author rule and a date found in the
    text (a page_metadata that skipped a step would still agree with trafilatura on
    pages where that step finds nothing)."""
    found = {name: extract.page_metadata(_tree(name), "https://news.example/x") for name in MADE}
    assert found["json-ld author and date"].author == "Ada Lovelace"
    assert found["json-ld author and date"].date == "2024-03-05"
    assert found["one-word meta author dropped"].author != "admin"
    assert found["date only in the text"].date == "2023-03-07"
    assert found["broken json-ld"].title == "Broken"
