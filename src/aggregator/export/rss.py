"""RSS 2.0, generated with feedgen one item at a time (streamed like the Atom feed).

RSS has room for one ``<source>`` per item: it names the first feed that carried the
story; the description ends with a paragraph listing every source.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from feedgen.entry import FeedEntry
from feedgen.feed import FeedGenerator
from lxml import etree

from ..config import VERSION
from .model import Entry, FeedMeta

MEDIA_TYPE = "application/rss+xml; charset=utf-8"
DC = "http://purl.org/dc/elements/1.1/"


def _head(meta: FeedMeta) -> tuple[str, str]:
    fg = FeedGenerator()
    fg.title(meta.title)
    fg.link(href=meta.link, rel="alternate")
    if meta.feed_url:
        fg.link(href=meta.feed_url, rel="self")
    fg.description(meta.description)
    fg.lastBuildDate(meta.generated_at)
    fg.generator(f"aggregator {VERSION}")
    document: bytes = fg.rss_str(pretty=False)
    text = document.decode("utf-8")
    end = text.rindex("</channel>")
    return text[:end] + "\n", text[end:] + "\n"


def item_element(entry: Entry) -> etree._Element:
    fe = FeedEntry()
    fe.title(entry.title)
    if entry.url:
        fe.link(href=entry.url, rel="alternate")
    fe.guid(entry.id, permalink=False)
    fe.pubDate(entry.published or entry.first_seen_at)
    fe.description(entry.content_with_sources())
    for tag in entry.tags:
        fe.category(term=tag)
    first = entry.sources[0] if entry.sources else None
    if first is not None and first.feed_url:
        fe.source(url=first.feed_url, title=first.name)
    element: etree._Element = fe.rss_entry()
    if entry.author:  # RSS <author> must be an e-mail address: use dc:creator
        creator = etree.SubElement(element, f"{{{DC}}}creator", nsmap={"dc": DC})
        creator.text = entry.author
    return element


def render(entries: Iterable[Entry], meta: FeedMeta) -> Iterator[str]:
    head, tail = _head(meta)
    yield head
    for entry in entries:
        yield etree.tostring(item_element(entry), encoding="unicode") + "\n"
    yield tail
