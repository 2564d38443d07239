"""OPML subscription lists: read with listparser, write OPML 2.0. Pure; no I/O.

Reading uses `listparser` (the maintained OPML/FOAF/iGoogle list parser by the
feedparser maintainer), always fed bytes so it can never fetch a URL itself. Each
feed outline becomes a :class:`~aggregator.records.Subscription`; its tags are the
folders it sits in (nested folders joined with ``/``) plus its ``category``
attribute. Outlines with only an ``htmlUrl`` are no feeds and are reported apart.

Writing builds an OPML 2.0 document with ``xml.etree`` (which escapes every
attribute): one folder outline per first tag, a ``category`` attribute with every
tag when a feed has more than one, ``type="rss"`` + ``xmlUrl`` for feeds and
``type="link"`` + ``url`` for ``type: html`` sources (OPML 2.0's outline type for a
plain web page). Reading what was written gives back the same feeds and tags.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Any

import listparser

from aggregator.errors import ParseError
from aggregator.records import FeedSpec, Subscription

__all__ = ["OpmlList", "read_opml", "write_opml"]


@dataclass(frozen=True)
class OpmlList:
    title: str | None
    feeds: tuple[Subscription, ...]
    pages: tuple[Subscription, ...] = ()  # outlines with a web page but no feed URL
    problem: str | None = None


def read_opml(data: bytes) -> OpmlList:
    """Parse an OPML document; raise :class:`ParseError` when it holds no subscription list."""
    if not data.strip():
        raise ParseError("the OPML file is empty")
    result: Any = listparser.parse(bytes(data))
    version = str(result.get("version") or "")
    feeds = [_subscription(f) for f in result.get("feeds") or []]
    lists = [_subscription(f) for f in result.get("lists") or []]
    pages = [_subscription(f) for f in result.get("opportunities") or []]
    if not version.startswith("opml") and not feeds:
        raise ParseError("not an OPML subscription list (no <opml> root element)")
    exc = result.get("bozo_exception") if result.get("bozo") else None
    meta = result.get("meta") or {}
    title = str(meta.get("title") or "").strip() or None
    return OpmlList(
        title=title,
        feeds=tuple(s for s in feeds if s is not None),
        # type="link" outlines are web pages (how write_opml stores type: html sources)
        pages=tuple(s for s in [*lists, *pages] if s is not None),
        problem=str(exc) if exc is not None else None,
    )


def _subscription(raw: Any) -> Subscription | None:
    url = str(raw.get("url") or "").strip()
    if not url:
        return None
    tags: list[str] = []
    for path in raw.get("categories") or []:
        tag = "/".join(str(p).strip() for p in path if str(p).strip())
        if tag and tag not in tags:
            tags.append(tag)
    return Subscription(
        url=url, title=str(raw.get("title") or "").strip() or None, tags=tuple(tags)
    )


def write_opml(specs: Sequence[FeedSpec], *, title: str, now: datetime) -> bytes:
    """An OPML 2.0 document for the configured sources (``now`` stamps dateCreated)."""
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = title
    ET.SubElement(head, "dateCreated").text = format_datetime(now, usegmt=now.tzinfo is not None)
    ET.SubElement(head, "docs").text = "https://opml.org/spec2.opml"
    body = ET.SubElement(root, "body")
    folders: dict[str, ET.Element] = {}
    for spec in specs:
        parent = body
        if spec.tags:
            parent = folders.get(spec.tags[0]) or ET.SubElement(
                body, "outline", text=spec.tags[0], title=spec.tags[0]
            )
            folders[spec.tags[0]] = parent
        name = spec.name or spec.url
        attrs = {"text": name, "title": name}
        if spec.type == "html":
            attrs.update(type="link", url=spec.url)
        else:
            attrs.update(type="rss", xmlUrl=spec.url)
        if len(spec.tags) > 1:
            attrs["category"] = ",".join("/" + t for t in spec.tags)
        ET.SubElement(parent, "outline", attrs)
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"
