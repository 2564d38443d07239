"""The CPU-heavy work done in the process pool: parsing, sanitizing, extraction.

Only pool workers import this module (through the light entry points in
:mod:`aggregator.pooljobs`), so feedparser, trafilatura, lxml, bs4, dateparser and
courlan stay out of the main process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

from . import dedup, discovery, extract, listing, parse
from .errors import ExtractError, ParseError
from .records import (
    ArticlePage,
    CleanEntry,
    HtmlSelectors,
    ParsedEntry,
    ParsedFeed,
    Prepared,
    TextFingerprint,
)


def warm() -> None:
    """Import the heavy libraries once per worker process, not on the first job."""
    import feedparser  # noqa: F401
    import trafilatura  # noqa: F401


def _entry_hash(entry: ParsedEntry) -> str:
    digest = hashlib.sha256()
    for part in (
        entry.title,
        entry.link,
        entry.summary,
        entry.content,
        entry.published.isoformat() if entry.published else None,
        entry.author,
    ):
        digest.update((part or "").encode("utf-8", "replace"))
        digest.update(b"\x00")
    return digest.hexdigest()


def read_document(
    body: bytes,
    headers: dict[str, str],
    base_url: str,
    source_type: str = "feed",
    selectors: HtmlSelectors | None = None,
) -> ParsedFeed:
    """A feed document, or the stories of an HTML listing page for ``type: html``.

    A ``type: feed`` URL that turns out to be an HTML page fails with the feeds that the
    page links to, so the operator can fix the URL.
    """
    if source_type == "html":
        return listing.parse_listing(body, headers, base_url, selectors)
    try:
        return parse.parse_feed(body, headers, base_url)
    except ParseError as exc:
        if not parse.looks_like_html(body, headers):
            raise
        links = discovery.feed_links(body, headers, base_url)
        if links:
            offered = "; ".join(
                f"{link.url} ({link.kind}{', ' + repr(link.title) if link.title else ''})"
                for link in links
            )
            raise ParseError(
                f"the document is an HTML page, not a feed; the page links to these feeds: "
                f"{offered}"
            ) from None
        raise ParseError(
            f"{exc}; the page links to no feed (try `aggregator discover {base_url}`, "
            "or follow the page itself with type: html)"
        ) from None


def prepare_document(
    body: bytes,
    headers: dict[str, str],
    base_url: str,
    limit: int,
    source_type: str = "feed",
    selectors: HtmlSelectors | None = None,
) -> Prepared:
    """Parse a fetched document and sanitize its entries."""
    feed = read_document(body, headers, base_url, source_type, selectors)
    entries = feed.entries[:limit]
    clean: list[CleanEntry] = []
    for entry in entries:
        base = entry.base or base_url  # relative links resolve against xml:base / the feed
        summary = extract.sanitize_html(entry.summary, base) if entry.summary else None
        content = extract.sanitize_html(entry.content, base) if entry.content else None
        source = content or summary
        text = extract.html_to_text(source) if source else None
        clean.append(
            CleanEntry(
                # the raw HTML is not needed past this point: only the sanitized copy crosses
                # back to the main process
                entry=replace(entry, summary=None, content=None),
                canonical_url=None,
                summary=summary,
                content=content,
                text=text or None,
                content_hash=_entry_hash(entry),
            )
        )
    # canonical URLs are decided per document: a URL shared by several of its entries, or
    # fragments that tell its entries apart, say what the URL identifies
    urls = dedup.document_urls(
        [dedup.DocumentEntry(c.entry.link, c.entry.key, c.entry.title, c.text) for c in clean]
    )
    clean = [
        replace(c, canonical_url=url, url_refusal=refusal)
        for c, (url, refusal) in zip(clean, urls, strict=True)
    ]
    return Prepared(
        feed=replace(feed, entries=()),
        entries=tuple(clean),
        cut=max(0, len(feed.entries) - limit),
    )


def extract_page(body: bytes, url: str) -> ArticlePage | str:
    """Extract an article page; an error comes back as its message."""
    try:
        article = extract.extract_article(body, url)
    except ExtractError as exc:
        return str(exc)
    return ArticlePage(article, dedup.page_canonical_url(article.canonical_url))


def fingerprints(texts: Sequence[str | None]) -> list[TextFingerprint | None]:
    """Text fingerprints for story dedup, one per text (None for no text)."""
    return dedup.fingerprints(texts)
