"""JSON Feed 1.1 (https://jsonfeed.org/version/1.1), streamed item by item.

Each item carries the extension object ``_aggregator``: the kind (story or item), the
story and item ids, the source count and every source (feed name, feed URL, the
feed's link to the story, when the aggregator first saw it there).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from .model import Entry, FeedMeta

MEDIA_TYPE = "application/feed+json; charset=utf-8"
VERSION_URL = "https://jsonfeed.org/version/1.1"


def _date(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def item_object(entry: Entry) -> dict[str, Any]:
    item: dict[str, Any] = {"id": entry.id}
    if entry.url:
        item["url"] = entry.url
    item["title"] = entry.title
    item["content_html"] = entry.content_with_sources()
    if entry.text:
        item["content_text"] = entry.text
    if entry.teaser:
        item["summary"] = entry.teaser
    item["date_published"] = _date(entry.published or entry.first_seen_at)
    item["date_modified"] = _date(entry.updated)
    if entry.author:
        item["authors"] = [{"name": entry.author}]
    if entry.tags:
        item["tags"] = list(entry.tags)
    if entry.language:
        item["language"] = entry.language
    item["_aggregator"] = {
        "kind": entry.kind,
        "story_id": entry.story_id,
        "item_id": entry.item_id,
        "first_seen_at": _date(entry.first_seen_at),
        "source_count": entry.source_count,
        "sources": [
            {
                "feed": s.name,
                "feed_url": s.feed_url,
                "url": s.url,
                "first_seen_at": _date(s.first_seen_at),
            }
            for s in entry.sources
        ],
    }
    return item


def render(entries: Iterable[Entry], meta: FeedMeta) -> Iterator[str]:
    head: dict[str, Any] = {
        "version": VERSION_URL,
        "title": meta.title,
        "home_page_url": meta.link,
        "description": meta.description,
    }
    if meta.feed_url:
        head["feed_url"] = meta.feed_url
    text = json.dumps(head, ensure_ascii=False)
    yield text[:-1] + ', "items": [\n'
    first = True
    for entry in entries:
        prefix = "" if first else ",\n"
        first = False
        yield prefix + json.dumps(item_object(entry), ensure_ascii=False)
    yield "\n]}\n"
