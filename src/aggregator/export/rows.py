"""The one row shape shared by the JSONL and CSV dumps (and ``GET /items``).

Column names are a public contract (docs/exports.md): add columns at the end, never
rename or reorder them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..store.queries import ItemRecord
from .clean import clean_line, clean_text

COLUMNS = (
    "item_id",
    "story_id",
    "feed_id",
    "feed_name",
    "feed_url",
    "url",
    "canonical_url",
    "guid",
    "title",
    "author",
    "published_at",
    "first_seen_at",
    "updated_at",
    "language",
    "image_url",
    "text",
)


def _date(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def row(item: ItemRecord) -> dict[str, Any]:
    """One item as a flat mapping with the documented columns (text cleaned of
    control characters; everything else as stored)."""
    return {
        "item_id": item.id,
        "story_id": item.story_id,
        "feed_id": item.feed_id,
        "feed_name": clean_line(item.feed_label),
        "feed_url": item.feed_url,
        "url": item.url,
        "canonical_url": item.canonical_url,
        "guid": item.guid,
        "title": clean_line(item.title) or None,
        "author": clean_line(item.author) or None,
        "published_at": _date(item.published_at),
        "first_seen_at": _date(item.first_seen_at),
        "updated_at": _date(item.updated_at),
        "language": item.language,
        "image_url": item.image_url,
        "text": clean_text(item.text) or None,
    }
