"""Feed discovery: which feeds does a web page offer? Pure; never fetches.

``feed_links`` reads the ``<link rel="alternate">`` (and ``rel="feed"``) elements of
a page for every feed type (RSS, Atom, JSON Feed, RDF), resolved against the page's
``<base href>`` and URL. ``candidate_urls`` lists the common feed paths to probe
when a page links to none (/feed, /rss, /atom.xml, /index.xml, …); the caller
fetches them through ``fetch.py`` and keeps the ones that parse as feeds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urljoin, urlsplit, urlunsplit

from bs4 import BeautifulSoup, Tag

from aggregator.records import FeedLink

__all__ = ["COMMON_PATHS", "candidate_urls", "feed_links"]

FEED_TYPES: dict[str, str] = {
    "application/rss+xml": "RSS",
    "application/x-rss+xml": "RSS",
    "application/atom+xml": "Atom",
    "application/x-atom+xml": "Atom",
    "application/feed+json": "JSON Feed",
    "application/json": "JSON Feed",
    "application/rdf+xml": "RDF",
    "application/rss+rdf": "RDF",
    "text/xml": "feed",
    "application/xml": "feed",
}
COMMON_PATHS = (
    "/feed",
    "/rss",
    "/atom.xml",
    "/index.xml",
    "/feed.xml",
    "/rss.xml",
    "/feed.json",
    "/feed/atom",
    "/index.rss",
    "/atom",
)
_WS = re.compile(r"\s+")


def feed_links(body: bytes, headers: Mapping[str, str], base_url: str) -> tuple[FeedLink, ...]:
    """The feeds a page links to, in page order, without repeats."""
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    match = re.search(r"charset=[\"']?([\w.:-]+)", ctype, re.I)
    try:
        soup = BeautifulSoup(body, "lxml", from_encoding=match.group(1) if match else None)
    except LookupError:
        soup = BeautifulSoup(body, "lxml")
    base = base_url
    base_tag = soup.find("base", href=True)
    if isinstance(base_tag, Tag):
        href = base_tag.get("href")
        if isinstance(href, str) and href.strip():
            base = urljoin(base_url, href.strip())
    found: list[FeedLink] = []
    seen: set[str] = set()
    for node in soup.find_all(["link", "a"]):
        assert isinstance(node, Tag)
        rels = {r.lower() for r in node.get_attribute_list("rel") if r}
        if not rels & {"alternate", "feed"}:
            continue
        mime = str(node.get("type") or "").split(";", 1)[0].strip().lower()
        kind = FEED_TYPES.get(mime)
        if kind is None and not ("feed" in rels and not mime):
            continue
        if mime == "application/json" and "alternate" in rels and node.name == "link":
            kind = "JSON Feed"  # JSON Feed pages often use the generic type
        url = _absolute(str(node.get("href") or ""), base)
        if url is None or url in seen:
            continue
        seen.add(url)
        title = _WS.sub(" ", str(node.get("title") or "")).strip() or None
        found.append(FeedLink(url=url, kind=kind or "feed", title=title))
    return tuple(found)


def candidate_urls(page_url: str) -> tuple[str, ...]:
    """Common feed locations for a site: under the page's folder, then the site root."""
    parts = urlsplit(page_url)
    root = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    folders = [""]
    path = parts.path
    if path and path != "/":
        folder = path if path.endswith("/") else path.rsplit("/", 1)[0] + "/"
        folder = folder.rstrip("/")
        if folder:
            folders.insert(0, folder)
    out: list[str] = []
    for folder in folders:
        for common in COMMON_PATHS:
            url = root + folder + common
            if url not in out and url != page_url:
                out.append(url)
    return tuple(out)


def _absolute(href: str, base: str) -> str | None:
    href = href.strip()
    if not href:
        return None
    try:
        parts = urlsplit(urljoin(base, href))
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https", "feed") or not parts.netloc:
        return None
    if parts.scheme.lower() == "feed":
        parts = parts._replace(scheme="http")
    return urlunsplit(parts._replace(fragment=""))
