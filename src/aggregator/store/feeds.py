"""Feeds: the table that mirrors ``feeds.yaml`` and holds each feed's polling state
(``FeedsMixin`` of ``Store``).

``due`` is the one rule of "may this feed be polled now" in SQL, shared by the claims
(``leases``) and ``feed_states``: configured and enabled, not retired, no unexpired
Retry-After hold, and (unless forced, as ``run --once`` is) its next check has come.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, insert, or_, select, text, update

from ..records import FeedSpec, FeedState, url_host
from . import blocked
from .database import Database
from .tables import feeds, items

SYNC_LOCK_ID = 7_246_312  # pg_advisory_xact_lock key for syncing feeds.yaml into the table


@dataclass(frozen=True)
class FeedRow:
    """A feed as the CLI shows it."""

    id: int
    url: str
    name: str | None
    enabled: bool
    removed: bool
    last_polled_at: datetime | None
    last_status: int | None
    last_error: str | None
    error_count: int
    next_check_at: datetime | None
    disabled_reason: str | None
    hold_until: datetime | None
    item_count: int
    not_found_since: datetime | None = None


class FeedsMixin(Database):
    def sync_feeds(self, specs: Sequence[FeedSpec], now: datetime) -> None:
        """Make the feeds table match the config: add new feeds, update settings, mark
        removed ones (their items are kept). A retired feed that was removed and added
        again is re-enabled."""
        with self.write_lock, self.tx() as conn:
            if self.dialect == "postgresql":
                # several workers starting at once sync the same config: one at a time
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SYNC_LOCK_ID})
            rows = conn.execute(select(feeds.c.id, *_SYNC_READ)).all()
            by_conf = {r.configured_url or r.url: r for r in rows}
            by_url = {r.url: r for r in rows}
            wanted = {s.url for s in specs}
            new_rows: list[dict[str, Any]] = []
            changes: list[tuple[int, dict[str, Any]]] = []
            for spec in specs:
                values: dict[str, Any] = {
                    "name": spec.name,
                    "type": spec.type,
                    "tags": list(spec.tags),
                    "enabled": spec.enabled,
                    "full_text": spec.full_text,
                    "interval_seconds": spec.interval,
                }
                row = by_conf.get(spec.url)
                if row is None and spec.url in by_url:
                    # the operator now lists the URL a confirmed redirect moved the feed to
                    row = by_url[spec.url]
                    values["configured_url"] = spec.url
                    wanted.add(row.configured_url or row.url)
                if row is None:
                    new_rows.append(
                        {
                            "url": spec.url,
                            "configured_url": spec.url,
                            "host": url_host(spec.url),
                            "created_at": now,
                            "next_check_at": now,
                            "error_count": 0,
                            "redirect_count": 0,
                            **values,
                        }
                    )
                    continue
                # only what differs: a restart with an unchanged config writes nothing
                changed = {k: v for k, v in values.items() if getattr(row, k) != v}
                if row.removed_at is not None:
                    changed.update(removed_at=None, next_check_at=now)
                    if row.disabled_reason:
                        changed.update(disabled_reason=None, error_count=0, last_error=None)
                if changed:
                    changes.append((row.id, changed))
            if new_rows:
                conn.execute(insert(feeds), new_rows)
            for feed_id, changed in changes:
                conn.execute(update(feeds).where(feeds.c.id == feed_id).values(**changed))
            for conf, row in by_conf.items():
                if conf not in wanted and row.removed_at is None:
                    conn.execute(update(feeds).where(feeds.c.id == row.id).values(removed_at=now))
            # entry filters: a feed whose rules changed gets its whole document on its next
            # poll, which evaluates its blocked entries again (store/blocked.py)
            blocked.rules_changed(
                conn, {s.url: s.filters.fingerprint if s.filters else "" for s in specs}
            )

    def enable_feed(self, url: str, now: datetime) -> bool:
        """Clear a retirement (HTTP 410) or any disable reason; returns False if unknown."""
        with self.write_lock, self.tx() as conn:
            result = conn.execute(
                update(feeds)
                .where(or_(feeds.c.url == url, feeds.c.configured_url == url))
                .values(
                    disabled_reason=None,
                    error_count=0,
                    last_error=None,
                    next_check_at=now,
                    hold_until=None,
                    not_found_since=None,
                )
            )
            return bool(result.rowcount)

    def feed_states(
        self, now: datetime, *, due_only: bool = True, limit: int | None = None
    ) -> list[FeedState]:
        """Enabled, configured feeds; with ``due_only`` those whose next check has come."""
        query = select(feeds).where(*(due(now) if due_only else _ENABLED))
        query = query.order_by(feeds.c.next_check_at, feeds.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self.read() as conn:
            return [feed_state_of(row) for row in conn.execute(query).mappings()]

    def count_enabled_feeds(self) -> int:
        """How many feeds ``feed_states(due_only=False)`` would return."""
        with self.read() as conn:
            return int(conn.execute(select(func.count()).where(*_ENABLED)).scalar_one())

    def list_feeds(self) -> list[FeedRow]:
        counts = (
            select(items.c.feed_id, func.count().label("n")).group_by(items.c.feed_id).subquery()
        )
        query = (
            select(feeds, func.coalesce(counts.c.n, 0).label("item_count"))
            .select_from(feeds.outerjoin(counts, counts.c.feed_id == feeds.c.id))
            .order_by(feeds.c.id)
        )
        with self.read() as conn:
            return [
                FeedRow(
                    id=r.id,
                    url=r.url,
                    name=r.name,
                    enabled=r.enabled,
                    removed=r.removed_at is not None,
                    last_polled_at=r.last_polled_at,
                    last_status=r.last_status,
                    last_error=r.last_error,
                    error_count=r.error_count,
                    next_check_at=r.next_check_at,
                    disabled_reason=r.disabled_reason,
                    hold_until=r.hold_until,
                    item_count=r.item_count,
                    not_found_since=r.not_found_since,
                )
                for r in conn.execute(query)
            ]


def feed_state_of(row: Any) -> FeedState:
    return FeedState(
        id=row["id"],
        url=row["url"],
        configured_url=row["configured_url"],
        etag=row["etag"],
        last_modified=row["last_modified"],
        error_count=row["error_count"],
        last_status=row["last_status"],
        next_check_at=row["next_check_at"],
        disabled_reason=row["disabled_reason"],
        hold_until=row["hold_until"],
        interval_seconds=row["adaptive_interval_seconds"],
        redirect_url=row["redirect_url"],
        redirect_count=row["redirect_count"],
        redirect_seen_at=row["redirect_seen_at"],
        not_found_since=row["not_found_since"],
        push_until=row["push_until"],  # WebSub (store/websub.py)
    )


# what sync_feeds compares with the config (and the feed's identity and removal)
_SYNC_READ = (
    feeds.c.url,
    feeds.c.configured_url,
    feeds.c.removed_at,
    feeds.c.disabled_reason,
    feeds.c.name,
    feeds.c.type,
    feeds.c.tags,
    feeds.c.enabled,
    feeds.c.full_text,
    feeds.c.interval_seconds,
)

_ENABLED = (feeds.c.removed_at.is_(None), feeds.c.enabled.is_(True))  # configured, enabled


def due(now: datetime, *, force: bool = False) -> list[ColumnElement[bool]]:
    """May a feed be polled at ``now``? Configured, enabled, not retired, no unexpired
    Retry-After hold and, unless ``force`` (``run --once``), its next check has come."""
    conditions = [
        *_ENABLED,
        feeds.c.disabled_reason.is_(None),
        or_(feeds.c.hold_until.is_(None), feeds.c.hold_until <= now),
    ]
    if not force:
        conditions.append(or_(feeds.c.next_check_at.is_(None), feeds.c.next_check_at <= now))
    return conditions
