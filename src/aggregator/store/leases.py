"""Leases: several workers share one database (``LeasesMixin`` of ``Store``).

A worker claims due feeds in one statement and leases them (``lease_owner``,
``lease_expires_at``); it renews the leases of the feeds it is still polling and gives
them back when it stops. A poll's own write releases its feed's lease (``feedrows``).
PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so two workers never claim one feed; SQLite: the
claim runs in the write turn (one writer at a time).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from ..errors import StoreError
from ..records import FeedState
from .batches import chunks
from .database import Database
from .feeds import due, feed_state_of
from .tables import feeds

CLAIM_CHUNK = 500  # feeds claimed per statement (see claim_feeds)
ID_CHUNK = 256  # ids per "id IN (...)" of the lease statements (see id_chunks)


class LeasesMixin(Database):
    def claim_feeds(
        self,
        owner: str,
        now: datetime,
        *,
        limit: int,
        lease_seconds: float,
        force: bool = False,
        polled_before: datetime | None = None,
        chunk: int = CLAIM_CHUNK,
    ) -> list[FeedState]:
        """Claim up to ``limit`` due feeds for ``owner`` in ONE statement and lease them.

        PostgreSQL: ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING …``,
        so concurrent workers never claim the same feed. SQLite: the same statement inside
        ``BEGIN IMMEDIATE`` (one writer at a time). A lease that expired (its worker died)
        is claimable again. ``force`` (run --once) ignores next_check_at but never a
        retirement, a Retry-After hold or another worker's live lease. More than
        ``chunk`` feeds are claimed in several such statements, one after the
        other: SQLite holds every row an ``UPDATE … RETURNING`` returns in memory before
        the first (10 000 feeds at once: +37 MB for the process, for good).
        ``polled_before``: only feeds not polled since then (``run --once`` claiming as
        it goes does not take back the feeds it has polled already).
        """
        with contextlib.suppress(StoreError):  # kept for the next claim (see faults)
            self.record_failures()
        states: list[FeedState] = []
        while len(states) < limit:
            want = min(chunk, limit - len(states))
            claimed = self._claim(owner, now, want, lease_seconds, force, polled_before)
            states.extend(claimed)
            if len(claimed) < want:
                break
        states.sort(key=lambda s: (s.next_check_at or now, s.id))
        return states

    def _claim(
        self,
        owner: str,
        now: datetime,
        limit: int,
        lease_seconds: float,
        force: bool,
        polled_before: datetime | None = None,
    ) -> list[FeedState]:
        conditions = [
            *due(now, force=force),
            or_(feeds.c.lease_expires_at.is_(None), feeds.c.lease_expires_at <= now),
        ]
        if polled_before is not None:
            conditions.append(
                or_(feeds.c.last_polled_at.is_(None), feeds.c.last_polled_at < polled_before)
            )
        claimable = (
            select(feeds.c.id)
            .where(*conditions)
            .order_by(feeds.c.next_check_at.asc().nulls_first(), feeds.c.id)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            claimable = claimable.with_for_update(skip_locked=True)
        statement = (
            update(feeds)
            .where(feeds.c.id.in_(claimable.scalar_subquery()))
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds))
            .returning(*feeds.c)
        )
        with self.write_lock, self.tx() as conn:
            return [feed_state_of(row) for row in conn.execute(statement).mappings()]

    def renew_leases(
        self, owner: str, feed_ids: Sequence[int], now: datetime, lease_seconds: float
    ) -> int:
        """Extend this worker's leases on the feeds it is still polling."""
        if not feed_ids:
            return 0
        renewed = 0
        with self.write_lock, self.tx() as conn:
            for chunk in id_chunks(feed_ids):
                result = conn.execute(
                    update(feeds)
                    .where(feeds.c.id.in_(chunk), feeds.c.lease_owner == owner)
                    .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
                )
                renewed += int(result.rowcount)
        return renewed

    def lease_owners(self) -> list[str]:
        with self.read() as conn:
            rows = conn.execute(
                select(feeds.c.lease_owner).where(feeds.c.lease_owner.is_not(None)).distinct()
            )
            return [str(r[0]) for r in rows]

    def release_leases(self, owner: str, feed_ids: Sequence[int] | None = None) -> None:
        """Give feeds back (a worker stopping, or polls abandoned) so others take them now."""
        with contextlib.suppress(StoreError):  # kept for the next try; release them anyway
            self.record_failures()
        query = update(feeds).where(feeds.c.lease_owner == owner)
        with self.write_lock, self.tx() as conn:
            if feed_ids is None:
                conn.execute(query.values(lease_owner=None, lease_expires_at=None))
                return
            for chunk in id_chunks(feed_ids):
                conn.execute(
                    query.where(feeds.c.id.in_(chunk)).values(
                        lease_owner=None, lease_expires_at=None
                    )
                )


def id_chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    """``ids`` in lists of exactly ``ID_CHUNK`` (the last one padded by repeating an id).

    An ``IN`` list is rendered with one placeholder per value, and each distinct statement
    stays prepared in the connection's statement cache (128 per connection). Lease
    renewals over every feed a worker holds, with a different count each time, kept up to
    128 statements of thousands of variables each: memory that grew with the number of
    feeds. One shape is prepared once."""
    for chunk in chunks(sorted(set(ids)), ID_CHUNK):
        yield [*chunk, *[chunk[-1]] * (ID_CHUNK - len(chunk))]
