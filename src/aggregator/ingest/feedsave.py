"""Saving the polls that bring no entries (failures, 304s, documents with nothing new).

Apart from ``poll`` on purpose: that module brings the dedup rules and numpy, which a
writer that has only feed rows to write (a warm run, a daemon between new entries) never
needs to load.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..records import PollToSave
from ..store import feedrows, retention

if TYPE_CHECKING:
    from sqlalchemy import Connection


def save_feed_rows(conn: Connection, polls: Sequence[PollToSave]) -> None:
    """The polls' feed rows, one statement per shape, and the documents read
    (``retention``)."""
    feedrows.write_feeds(conn, [(p.feed_id, p.update) for p in polls])
    retention.record_documents(
        conn, [(p.feed_id, p.document, p.update.polled_at) for p in polls if p.document is not None]
    )
