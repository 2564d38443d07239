"""Parse one fetched document into a :class:`~aggregator.records.ParsedFeed`.

Pure: ``(bytes, response headers, base url) -> ParsedFeed``. No I/O, no network, no
clock. RSS 0.9x/1.0/2.0, RDF and Atom 0.3/1.0 go through feedparser (fed the bytes
through a ``BytesIO`` so it can never open a file or a URL); JSON Feed 1.0/1.1 is
read here.

Entry identity
--------------
Every entry gets a ``key`` that is unique within the document. The document tries
the levels ``guid`` → ``link`` → ``hash`` in turn:

* ``guid``: ``guid:<id>``, falling back per entry to ``link:<url>``, then ``hash:…``;
* ``link``: ``link:<url>``, falling back per entry to ``hash:…``;
* ``hash``: ``hash:<sha1(title + "\\0" + date iso)>``.

Exact repeats (same key, same title/link/summary/content) collapse into one entry.
When a key repeats for entries that differ, the whole document steps down a level.
At the ``hash`` level, entries that still collide get a hash over their content too.
"""

from __future__ import annotations

import functools
import hashlib
import html
import io
import json
import re
import xml.sax
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import feedparser

from aggregator import dates
from aggregator.errors import ParseError
from aggregator.records import FeedHints, ParsedEntry, ParsedFeed

__all__ = ["looks_like_html", "parse_feed"]

_JSON_TYPES = frozenset({"application/feed+json", "application/json", "text/json"})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_HTTP_SCHEMES = frozenset({"http", "https"})
_WS = re.compile(r"\s+")
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")

_PERIOD_SECONDS = {
    "hourly": 3600.0,
    "daily": 86400.0,
    "weekly": 7 * 86400.0,
    "monthly": 30 * 86400.0,
    "yearly": 365 * 86400.0,
}
_DAY_NAMES = {
    d.lower(): d
    for d in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
}
_SKIP_HOURS = re.compile(rb"<skipHours\b[^>]*>(.*?)</skipHours\s*>", re.S | re.I)
_SKIP_DAYS = re.compile(rb"<skipDays\b[^>]*>(.*?)</skipDays\s*>", re.S | re.I)
_HOUR = re.compile(rb"<hour\b[^>]*>\s*(\d{1,2})\s*</hour\s*>", re.I)
_DAY = re.compile(rb"<day\b[^>]*>\s*([A-Za-z]+)\s*</day\s*>", re.I)
# What may precede the root element: whitespace, the XML declaration, comments,
# processing instructions and a doctype.
_PROLOG = re.compile(rb"\s*(?:<\?.*?\?>\s*|<!--.*?-->\s*)*", re.S)
_FIRST_TAG = re.compile(rb"<(!doctype\s+html|[A-Za-z][\w.:-]*)", re.I)
_FEED_ROOTS = frozenset({b"rss", b"feed", b"rdf:rdf", b"rdf", b"channel"})
# an RFC 8288 Link header value: <uri>; params, <uri>; params
_LINK_VALUE = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,<]*)*)")
_LINK_REL = re.compile(r"""(?:^|;)\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))""", re.I)
MAX_HUBS = 5  # hub links kept per document (a hostile feed could list thousands)


# --------------------------------------------------------------------------- public


def parse_feed(body: bytes, headers: Mapping[str, str], base_url: str) -> ParsedFeed:
    """Parse a feed document; raise :class:`ParseError` when it is not a feed."""
    stripped = _strip_bom(body).strip()
    if not stripped:
        raise ParseError("empty response body")
    if stripped[:2] == b"\x1f\x8b":
        raise ParseError("the body is still gzip-compressed, not a feed document")
    ctype = _media_type(headers)
    if stripped[:1] in (b"{", b"[") or (ctype in _JSON_TYPES and stripped[:1] != b"<"):
        return _parse_json(stripped, base_url)
    return _parse_xml(body, headers, base_url)


def looks_like_html(body: bytes, headers: Mapping[str, str]) -> bool:
    """True when the document is an HTML page rather than a feed.

    Sniffs the first element (after BOM, XML declaration, comments and processing
    instructions); when that is inconclusive, an HTML content type decides.
    """
    head = _strip_bom(body[:4096])
    prolog = _PROLOG.match(head)
    rest = head[prolog.end() if prolog else 0 :]
    match = _FIRST_TAG.match(rest)
    if match:
        name = match.group(1).lower()
        if name.startswith(b"!doctype") or name == b"html":
            return True
        if name in _FEED_ROOTS or name.endswith((b":rss", b":feed", b":rdf")):
            return False
    elif rest.lstrip()[:1] in (b"{", b"["):
        return False
    return _media_type(headers) in _HTML_TYPES


# --------------------------------------------------------------------------- XML feeds


def _parse_xml(body: bytes, headers: Mapping[str, str], base_url: str) -> ParsedFeed:
    response_headers = {k.lower(): v for k, v in headers.items()}
    location = response_headers.get("content-location")
    response_headers["content-location"] = urljoin(base_url, location) if location else base_url
    ctype = response_headers.get("content-type", "")
    if not ctype or (_media_type(headers) == "text/xml" and "charset" not in ctype.lower()):
        # Without a content type feedparser falls back to Latin-1, and for a bare
        # text/xml to US-ASCII (RFC 3023); RFC 7303 lets the XML declaration decide.
        response_headers["content-type"] = "application/xml"
    result: Any = feedparser.parse(
        io.BytesIO(body),
        response_headers=response_headers,
        # both off: we sanitize with nh3 and make links absolute at the same time (against
        # each content's xml:base, kept in ParsedEntry.base); feedparser's HTML passes for
        # them cost a third of its parse time
        resolve_relative_uris=False,
        sanitize_html=False,
    )
    version = _text(dict.get(result, "version")) or ""
    feed: dict[str, Any] = dict.get(result, "feed") or {}
    raw_entries: list[Any] = dict.get(result, "entries") or []
    title = _plain_title(dict.get(feed, "title"), dict.get(feed, "title_detail"))
    bozo_exc = dict.get(result, "bozo_exception") if dict.get(result, "bozo") else None

    if not version and not raw_entries:
        if looks_like_html(body, headers):
            raise ParseError("the document is an HTML page, not a feed")
        if not title:
            reason = _bozo_sentence(bozo_exc) if bozo_exc else "no RSS, RDF or Atom root element"
            raise ParseError(f"not a feed: {reason}")

    notes: list[str] = []
    parsed = [_xml_entry(e, base_url, notes) for e in raw_entries]
    entries, level = _assign_keys([d for d in parsed if not d.is_empty])
    return ParsedFeed(
        kind=version or "unknown",
        title=title,
        link=_http_url(_text(dict.get(feed, "link")), base_url),
        entries=entries,
        problem=_problems(_bozo_sentence(bozo_exc) if bozo_exc is not None else None, notes),
        hints=_with_push_links(
            _hints(feed, body),
            [
                (_text(dict.get(link, "rel")), _text(dict.get(link, "href")))
                for link in (dict.get(feed, "links") or [])
                if isinstance(link, dict)
            ],
            headers,
            base_url,
        ),
        key_level=level,
    )


def _xml_entry(entry: dict[str, Any], base_url: str, notes: list[str]) -> _Draft:
    details = [
        (_html_value(dict.get(c, "value"), dict.get(c, "type")), dict.get(c, "base"))
        for c in (dict.get(entry, "content") or [])
    ]
    content, content_base = max(
        ((c, b) for c, b in details if c), key=lambda cb: len(cb[0]), default=(None, None)
    )
    summary_detail = dict.get(entry, "summary_detail") or {}
    summary = _html_value(dict.get(entry, "summary"), dict.get(summary_detail, "type"))
    if summary is not None and content is not None and summary.strip() == content.strip():
        summary = None
    author_detail = dict.get(entry, "author_detail") or {}
    author = _clean_ws(_text(dict.get(author_detail, "name")) or _text(dict.get(entry, "author")))
    return _Draft(
        guid=_clean_ws(_text(dict.get(entry, "id"))),
        link=_http_url(_text(dict.get(entry, "link")), base_url),
        title=_plain_title(dict.get(entry, "title"), dict.get(entry, "title_detail")),
        author=author,
        published=_xml_date(entry, "published", notes),
        updated=_xml_date(entry, "updated", notes),
        summary=summary,
        content=content,
        image=_xml_image(entry, base_url),
        base=_http_url(_text(content_base or dict.get(summary_detail, "base")), base_url),
        tags=_tags(
            _text(dict.get(t, "term")) or _text(dict.get(t, "label"))
            for t in dict.get(entry, "tags") or []
            if isinstance(t, dict)
        ),
    )


MAX_TAGS = 50  # categories kept per entry (entry filters read them), each cut at 200 chars


def _tags(values: Iterable[str | None]) -> tuple[str, ...]:
    tags = (_clean_ws(v) for v in values)
    return tuple(dict.fromkeys(t[:200] for t in tags if t))[:MAX_TAGS]


def _xml_image(entry: dict[str, Any], base_url: str) -> str | None:
    for thumb in dict.get(entry, "media_thumbnail") or []:
        url = _http_url(_text(dict.get(thumb, "url")), base_url)
        if url:
            return url
    for media in dict.get(entry, "media_content") or []:
        medium = (_text(dict.get(media, "medium")) or "").lower()
        mtype = (_text(dict.get(media, "type")) or "").lower()
        if medium == "image" or mtype.startswith("image/"):
            url = _http_url(_text(dict.get(media, "url")), base_url)
            if url:
                return url
    for link in dict.get(entry, "links") or []:
        rel = _text(dict.get(link, "rel"))
        ltype = (_text(dict.get(link, "type")) or "").lower()
        if rel == "enclosure" and ltype.startswith("image/"):
            url = _http_url(_text(dict.get(link, "href")), base_url)
            if url:
                return url
    image = dict.get(entry, "image")  # itunes:image on the item
    if isinstance(image, dict):
        return _http_url(_text(image.get("href")), base_url)
    return None


def _bozo_sentence(exc: object) -> str:
    name = type(exc).__name__
    if isinstance(exc, xml.sax.SAXParseException):
        return (
            f"XML is not well-formed: {exc.getMessage()} "
            f"(line {exc.getLineNumber()}, column {exc.getColumnNumber()})"
        )
    if name == "CharacterEncodingOverride":
        return f"the declared character encoding was wrong; the document was read anyway ({exc})"
    if name == "CharacterEncodingUnknown":
        return f"the character encoding could not be determined: {exc}"
    if name == "NonXMLContentType":
        return f"the server did not label the feed with an XML content type: {exc}"
    if name == "UndeclaredNamespace":
        return f"XML uses an undeclared namespace prefix: {exc}"
    return f"the feed is malformed: {exc or name}"


def _hints(feed: dict[str, Any], body: bytes) -> FeedHints:
    ttl = _positive_float(dict.get(feed, "ttl"))
    period = (_text(dict.get(feed, "sy_updateperiod")) or "").strip().lower()
    update: float | None = None
    if period in _PERIOD_SECONDS:
        frequency = _positive_float(dict.get(feed, "sy_updatefrequency")) or 1.0
        update = _PERIOD_SECONDS[period] / frequency
    hours: list[int] = []
    days: list[str] = []
    if b"skipHours" in body or b"skiphours" in body:
        for block in _SKIP_HOURS.findall(body):
            for raw in _HOUR.findall(block):
                hour = int(raw) % 24  # some feeds write 24 for midnight
                if int(raw) <= 24 and hour not in hours:
                    hours.append(hour)
    if b"skipDays" in body or b"skipdays" in body:
        for block in _SKIP_DAYS.findall(body):
            for raw in _DAY.findall(block):
                day = _DAY_NAMES.get(raw.decode("ascii").lower())
                if day and day not in days:
                    days.append(day)
    return FeedHints(
        ttl_seconds=ttl * 60 if ttl is not None else None,
        update_period_seconds=update,
        skip_hours=tuple(sorted(hours)),
        skip_days=tuple(days),
    )


def _with_push_links(
    hints: FeedHints,
    links: Iterable[tuple[str | None, str | None]],
    headers: Mapping[str, str],
    base_url: str,
) -> FeedHints:
    """``hints`` with the WebSub hubs and the rel="self" URL (the topic): from the HTTP
    ``Link`` headers when they name them (WebSub 4: discovery looks there first), else
    from the document's links (Atom ``<link>``, ``atom:link`` in an RSS channel, JSON
    Feed ``hubs`` and ``feed_url``). Only absolute http(s) URLs count."""
    from_header = _link_header(headers, base_url)
    from_document: dict[str, list[str]] = {}
    for rel, href in links:
        url = _http_url(href, base_url)
        if url is None or rel is None:
            continue
        for name in rel.lower().split():
            from_document.setdefault(name, []).append(url)
    hubs = from_header.get("hub") or from_document.get("hub") or []
    selfs = from_header.get("self") or from_document.get("self") or []
    unique = tuple(dict.fromkeys(hubs))[:MAX_HUBS]
    if not unique and not selfs:
        return hints
    return replace(hints, hubs=unique, self_url=selfs[0] if selfs else None)


def _link_header(headers: Mapping[str, str], base_url: str) -> dict[str, list[str]]:
    """The http(s) targets of an RFC 8288 ``Link`` header, by relation type."""
    value = next((v for k, v in headers.items() if k.lower() == "link"), None)
    found: dict[str, list[str]] = {}
    if not value:
        return found
    for match in _LINK_VALUE.finditer(value[:65536]):
        url = _http_url(match.group(1), base_url)
        rel = _LINK_REL.search(match.group(2))
        if url is None or rel is None:
            continue
        for name in (rel.group(1) or rel.group(2) or "").lower().split():
            found.setdefault(name, []).append(url)
    return found


# --------------------------------------------------------------------------- JSON Feed


def _parse_json(body: bytes, base_url: str) -> ParsedFeed:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError(f"the document is not valid JSON: {exc}") from None
    version = _text(doc.get("version")) if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or not version or "jsonfeed.org" not in version:
        raise ParseError("the document is JSON but not a JSON Feed (no jsonfeed.org version)")
    kind = "json11" if version.rstrip("/").endswith("/1.1") else "json10"
    feed_url = _abs_url(_text(doc.get("feed_url")), base_url)
    home = _abs_url(_text(doc.get("home_page_url")), base_url)
    base = feed_url or home or base_url
    problem: str | None = None
    items = doc.get("items")
    if not isinstance(items, list):
        items = []
        problem = "the JSON Feed has no items array"
    drafts = []
    notes: list[str] = []
    for item in items:
        if isinstance(item, dict):
            drafts.append(_json_entry(item, base, notes))
        else:
            problem = "the JSON Feed has items that are not objects; they were skipped"
    entries, level = _assign_keys([d for d in drafts if not d.is_empty])
    hubs = doc.get("hubs")
    links = [
        ("hub", _text(hub.get("url")))
        for hub in (hubs if isinstance(hubs, list) else [])
        if isinstance(hub, dict) and (_text(hub.get("type")) or "").strip().lower() == "websub"
    ]
    links.append(("self", feed_url))
    return ParsedFeed(
        kind=kind,
        title=_plain_text(_text(doc.get("title"))),
        link=_http_url(home, base_url),
        entries=entries,
        problem=_problems(problem, notes),
        hints=_with_push_links(FeedHints(), links, {}, base_url),
        key_level=level,
    )


def _json_entry(item: dict[str, Any], base: str, notes: list[str]) -> _Draft:
    raw_id = item.get("id")
    guid = str(raw_id).strip() if isinstance(raw_id, str | int) and str(raw_id).strip() else None
    content = _text(item.get("content_html"))
    if not content:
        text = _text(item.get("content_text"))
        content = _text_to_html(text) if text else None
    summary = _text(item.get("summary"))
    summary = _text_to_html(summary) if summary else None
    if summary is not None and content is not None and summary.strip() == content.strip():
        summary = None
    image = _http_url(_text(item.get("image")), base) or _http_url(
        _text(item.get("banner_image")), base
    )
    return _Draft(
        guid=guid,
        link=_http_url(_text(item.get("url")), base)
        or _http_url(_text(item.get("external_url")), base),
        title=_plain_text(_text(item.get("title"))),
        author=_json_author(item),
        published=dates.parse_date(_text(item.get("date_published")), "date_published", notes),
        updated=dates.parse_date(_text(item.get("date_modified")), "date_modified", notes),
        summary=summary,
        content=content,
        image=image,
        tags=_tags(t for t in _list(item.get("tags")) if isinstance(t, str)),
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _json_author(item: dict[str, Any]) -> str | None:
    authors = item.get("authors")
    if not isinstance(authors, list):
        single = item.get("author")
        authors = [single] if isinstance(single, dict) else []
    names = [_clean_ws(_text(a.get("name"))) for a in authors if isinstance(a, dict)]
    joined = ", ".join(n for n in names if n)
    return joined or None


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class _Draft:
    guid: str | None
    link: str | None
    title: str | None
    author: str | None
    published: datetime | None
    updated: datetime | None
    summary: str | None
    content: str | None
    image: str | None
    base: str | None = None  # xml:base in effect for the content (relative links resolve here)
    tags: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        """Nothing to show or to identify (e.g. a stray ``<item/>``)."""
        return not (self.guid or self.link or self.title or self.summary or self.content)

    @property
    def signature(self) -> tuple[str | None, ...]:
        return (self.title, self.link, self.summary, self.content)

    def hash_key(self) -> str:
        date = self.published or self.updated
        text = (self.title or "") + "\x00" + (date.isoformat() if date else "")
        return "hash:" + hashlib.sha1(text.encode("utf-8")).hexdigest()

    def content_hash_key(self) -> str:
        date = self.published or self.updated
        parts = [date.isoformat() if date else "", *(s or "" for s in self.signature)]
        return "hash:" + hashlib.sha1("\x00".join(parts).encode("utf-8")).hexdigest()

    def key(self, level: str) -> str:
        if level == "guid" and self.guid:
            return "guid:" + self.guid
        if level in ("guid", "link") and self.link:
            return "link:" + self.link
        return self.hash_key()

    def build(self, key: str) -> ParsedEntry:
        return ParsedEntry(
            key=key,
            guid=self.guid,
            link=self.link,
            title=self.title,
            author=self.author,
            published=self.published,
            updated=self.updated,
            summary=self.summary,
            content=self.content,
            image=self.image,
            base=self.base,
            tags=self.tags,
        )


def _assign_keys(drafts: list[_Draft]) -> tuple[tuple[ParsedEntry, ...], str]:
    for level in ("guid", "link"):
        keyed = _unique(drafts, functools.partial(_Draft.key, level=level))
        if keyed is not None:
            return keyed, level
    signatures: dict[str, set[tuple[str | None, ...]]] = {}
    for d in drafts:
        signatures.setdefault(d.hash_key(), set()).add(d.signature)
    colliding = {k for k, sigs in signatures.items() if len(sigs) > 1}
    keyed = _unique(
        drafts, lambda d: d.content_hash_key() if d.hash_key() in colliding else d.hash_key()
    )
    assert keyed is not None  # the content hash covers every field of the signature
    return keyed, "hash"


def _unique(
    drafts: Iterable[_Draft], key_of: Callable[[_Draft], str]
) -> tuple[ParsedEntry, ...] | None:
    """Entries keyed by ``key_of`` with exact repeats dropped; None on a real collision."""
    seen: dict[str, tuple[str | None, ...]] = {}
    out: list[ParsedEntry] = []
    for d in drafts:
        key = key_of(d)
        if key in seen:
            if seen[key] != d.signature:
                return None
            continue
        seen[key] = d.signature
        out.append(d.build(key))
    return tuple(out)


# --------------------------------------------------------------------------- values


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _strip_tags(value: str) -> str:
    parser = _TextExtractor()
    parser.feed(value)
    parser.close()
    return "".join(parser.parts)


def _plain_title(value: object, detail: object) -> str | None:
    text = _text(value)
    if text is None:
        return None
    ctype = _text(detail.get("type")) if isinstance(detail, dict) else None
    if ctype in ("text/html", "application/xhtml+xml") and ("<" in text or "&" in text):
        text = _strip_tags(text)
    return _plain_text(text)


def _plain_text(text: str | None) -> str | None:
    """Decode leftover entities (double-escaped feeds) and collapse whitespace."""
    if text is None:
        return None
    if "&" in text:
        text = html.unescape(text)
    return _clean_ws(text)


def _clean_ws(text: str | None) -> str | None:
    if text is None:
        return None
    return _WS.sub(" ", text).strip() or None


def _html_value(value: object, ctype: object) -> str | None:
    text = _text(value)
    if not text or not text.strip():
        return None
    if ctype == "text/plain":
        return _text_to_html(text)
    return text


def _text_to_html(text: str) -> str:
    """Plain text → HTML paragraphs (blank lines split paragraphs, newlines → <br>)."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n"))]
    return "".join(
        "<p>" + html.escape(p, quote=False).replace("\n", "<br>") + "</p>" for p in paragraphs if p
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _abs_url(url: str | None, base: str) -> str | None:
    url = url.strip() if url else None
    return urljoin(base, url) if url else None


def _http_url(url: str | None, base: str) -> str | None:
    """Absolute http(s) URL, resolved against ``base``; None for other schemes."""
    absolute = _abs_url(url, base)
    if absolute is None:
        return None
    try:
        parts = urlsplit(absolute)
    except ValueError:
        return None
    return absolute if parts.scheme.lower() in _HTTP_SCHEMES and parts.netloc else None


def _xml_date(entry: dict[str, Any], name: str, notes: list[str]) -> datetime | None:
    """feedparser's ``<name>_parsed`` (a UTC struct_time), through the date guard; a note
    quotes the date as the feed wrote it."""
    return dates.parse_date(
        dict.get(entry, f"{name}_parsed"),
        f"entry {name} date",
        notes,
        shown=_text(dict.get(entry, name)),
    )


def _problems(problem: str | None, notes: list[str]) -> str | None:
    """The document's problem sentence with the notes of its values (dates out of range)."""
    noted = dates.summary(notes)
    if problem and noted:
        return f"{problem}; {noted}"
    return problem or noted


def _positive_float(value: object) -> float | None:
    text = _text(value)
    if not text:
        return None
    try:
        number = float(text.strip())
    except ValueError:
        return None
    return number if 0 < number < 1e9 else None


def _media_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _strip_bom(body: bytes) -> bytes:
    for bom in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :]
    return body
