"""Atom 1.0 (RFC 4287), generated with feedgen one entry at a time.

feedgen builds the feed head and each ``<entry>``; the entries are serialized and
written as they come, so a feed of a million stories never sits in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from feedgen.entry import FeedEntry
from feedgen.feed import FeedGenerator
from lxml import etree

from ..config import VERSION
from .model import Entry, FeedMeta

MEDIA_TYPE = "application/atom+xml; charset=utf-8"


def _head(meta: FeedMeta) -> tuple[str, str]:
    fg = FeedGenerator()
    fg.id(meta.feed_url or meta.link)
    fg.title(meta.title)
    fg.subtitle(meta.description)
    fg.updated(meta.generated_at)
    fg.link(href=meta.link, rel="alternate")
    if meta.feed_url:
        fg.link(href=meta.feed_url, rel="self")
    fg.generator("aggregator", version=VERSION)
    # RFC 4287 4.1.1: a feed names an author unless every entry does (many have none)
    fg.author(name="aggregator")
    document: bytes = fg.atom_str(pretty=False)
    text = document.decode("utf-8")
    end = text.rindex("</feed>")
    return text[:end] + "\n", text[end:] + "\n"


def entry_element(entry: Entry) -> etree._Element:
    fe = FeedEntry()
    fe.id(entry.id)
    fe.title(entry.title)
    fe.updated(entry.updated)
    if entry.published is not None:
        fe.published(entry.published)
    if entry.author:
        fe.author(name=entry.author)
    for tag in entry.tags:
        fe.category(term=tag)
    if entry.teaser:
        fe.summary(entry.teaser)
    fe.content(entry.content_with_sources(), type="html")
    element: etree._Element = fe.atom_entry()
    # Links are added here: feedgen 1.0 drops every attribute of an entry's <link> but
    # href (its loop rebinds the dict to the new element before reading rel/title).
    if entry.url:
        etree.SubElement(element, "link", rel="alternate", type="text/html", href=entry.url)
    for source in entry.sources:
        href = source.url or source.feed_url
        if href:
            etree.SubElement(element, "link", rel="via", href=href, title=source.name)
    return element


def render(entries: Iterable[Entry], meta: FeedMeta) -> Iterator[str]:
    head, tail = _head(meta)
    yield head
    for entry in entries:
        yield etree.tostring(entry_element(entry), encoding="unicode") + "\n"
    yield tail
