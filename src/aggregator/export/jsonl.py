"""JSON Lines: one object per item, keys as in ``rows.COLUMNS``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from ..store.queries import ItemRecord
from .rows import row

MEDIA_TYPE = "application/x-ndjson; charset=utf-8"


def render(items: Iterable[ItemRecord]) -> Iterator[str]:
    for item in items:
        yield json.dumps(row(item), ensure_ascii=False) + "\n"
