"""Pure: which stored items retention removes, given the rules and the feed's document.

The rules (``records.Retention``, from ``retention:`` in feeds.yaml):

- ``max_age``: an item first seen longer ago than this is deleted;
- ``max_items_per_feed``: the feed's newest N items (by first seen, then id) are kept,
  the older ones deleted;
- ``drop_text_after``: an item first seen longer ago than this keeps its row and
  metadata (title, link, dates, story), and loses its content, text and shingles.

Above them one rule: an item whose entry is still in its feed's current document (the
last document a poll read) is never deleted: the next poll would only bring it back.
Its text may still be dropped. An item deleted leaves a tombstone (its entry key), so
the feed's next polls know the entry if it comes back; a tombstone goes once its entry
is not in the document and the tombstone is ``TOMBSTONE_GRACE`` old. No I/O, no clock:
``now`` is an argument.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .records import ItemAge, Retention, RetentionDue

TOMBSTONE_GRACE = timedelta(days=7)  # a tombstone outlives its deletion by this at least


@dataclass(frozen=True)
class Cutoffs:
    """A rule at one moment: what a store has to read (``store.retention.candidates``)."""

    delete_before: datetime | None  # items first seen before this are due for deletion
    drop_text_before: datetime | None  # and before this, for their text to be dropped
    keep_newest: int | None  # the feed's newest N are kept by count


def cutoffs(rule: Retention, now: datetime) -> Cutoffs:
    return Cutoffs(
        delete_before=None if rule.max_age is None else now - timedelta(seconds=rule.max_age),
        drop_text_before=(
            None if rule.drop_text_after is None else now - timedelta(seconds=rule.drop_text_after)
        ),
        keep_newest=rule.max_items_per_feed,
    )


def due(
    cut: Cutoffs, candidates: Sequence[ItemAge], current: Collection[str] | None
) -> RetentionDue:
    """What goes of ``candidates`` (items read by ``cut``) when the feed's current
    document holds ``current`` (None: not recorded yet, so nothing is deleted)."""
    delete: list[ItemAge] = []
    drop: list[int] = []
    kept = 0
    for item in candidates:
        by_age = cut.delete_before is not None and item.first_seen_at < cut.delete_before
        if by_age or item.beyond_newest:
            if current is not None and item.entry_key not in current:
                delete.append(item)
                continue
            kept += 1
        dropping = cut.drop_text_before is not None and item.first_seen_at < cut.drop_text_before
        if item.heavy and dropping:
            drop.append(item.item_id)
    return RetentionDue(tuple(delete), tuple(drop), kept)


def stale_tombstones(
    tombstones: Iterable[tuple[str, datetime]], current: Collection[str] | None, now: datetime
) -> list[str]:
    """The tombstones (``(entry key, deleted at)``) to drop: their entry is not in the
    feed's document (None: not recorded, so none is known to have left) and they are
    older than ``TOMBSTONE_GRACE`` (a feed whose document flips between an old and a new
    copy, as some caches serve, brings entries back soon after they left)."""
    if current is None:
        return []
    before = now - TOMBSTONE_GRACE
    return [key for key, at in tombstones if key not in current and at < before]
