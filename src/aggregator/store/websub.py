"""WebSub subscriptions (table ``websub_subscriptions``, and ``feeds.push_until``).

Plain functions on a SQLAlchemy ``Connection`` (no threads, no policy: ``websub``
decides), and ``PushStore``, which runs them in the store's transactions. A
subscription's state changes are conditional on what its decider read (its state and
its pending request), so a hub's verification and the subscriber's own bookkeeping
never overwrite each other, whichever commits first.

``feeds.push_until`` is the lease end of the feed's live subscription, kept in the same
transactions: the poll's claim reads it with the feed's row (``FeedState.push_until``)
at no cost.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..records import PushSubscription
from .tables import feeds, websub_subscriptions

subs = websub_subscriptions
ACTIVE = ("pending", "live", "failed")  # the feed wants (or has) a subscription
ENDING = ("unsubscribing", "unsubscribed")
KEEP: Any = object()  # ``change``: leave ``feeds.push_until`` as it is

Transaction = Callable[[], AbstractContextManager[Connection]]

_COLUMNS = (
    subs.c.id,
    subs.c.feed_id,
    subs.c.hub,
    subs.c.topic,
    subs.c.callback_id,
    subs.c.secret,
    subs.c.state,
    subs.c.request_mode,
    subs.c.requested_at,
    subs.c.lease_seconds,
    subs.c.lease_expires_at,
    subs.c.next_attempt_at,
    subs.c.attempts,
    subs.c.last_error,
    feeds.c.url.label("feed_url"),
    feeds.c.configured_url,
    and_(feeds.c.removed_at.is_(None), feeds.c.enabled.is_(True)).label("feed_active"),
)


def _record(row: Any) -> PushSubscription:
    return PushSubscription(
        id=row.id,
        feed_id=row.feed_id,
        hub=row.hub,
        topic=row.topic,
        callback_id=row.callback_id,
        secret=row.secret,
        state=row.state,
        request_mode=row.request_mode,
        requested_at=row.requested_at,
        lease_seconds=row.lease_seconds,
        lease_expires_at=row.lease_expires_at,
        next_attempt_at=row.next_attempt_at,
        attempts=row.attempts,
        last_error=row.last_error,
        feed_url=row.feed_url,
        configured_url=row.configured_url,
        feed_active=bool(row.feed_active),
    )


def _select() -> Any:
    return select(*_COLUMNS).select_from(subs.join(feeds, feeds.c.id == subs.c.feed_id))


def by_callback(conn: Connection, callback_id: str) -> PushSubscription | None:
    row = conn.execute(_select().where(subs.c.callback_id == callback_id)).first()
    return _record(row) if row is not None else None


def by_feed(conn: Connection, feed_id: int) -> PushSubscription | None:
    row = conn.execute(_select().where(subs.c.feed_id == feed_id)).first()
    return _record(row) if row is not None else None


def all_subscriptions(conn: Connection) -> list[PushSubscription]:
    return [_record(r) for r in conn.execute(_select().order_by(subs.c.id))]


def topics(conn: Connection) -> dict[int, tuple[str, str]]:
    """Every subscription's (hub, topic) by feed id."""
    rows = conn.execute(select(subs.c.feed_id, subs.c.hub, subs.c.topic))
    return {r.feed_id: (r.hub, r.topic) for r in rows}


def discovered(
    conn: Connection,
    feed_id: int,
    hub: str,
    topic: str,
    callback_id: str,
    secret: str,
    now: datetime,
) -> bool:
    """A poll found ``hub`` and ``topic`` in the feed's document: a new subscription to
    make (state ``pending``, due now), unless the feed has one for them already. Another
    hub or topic replaces the old one (a new callback and secret: deliveries for the old
    one find no subscription). True when something was written."""
    current = conn.execute(
        select(subs.c.id, subs.c.hub, subs.c.topic).where(subs.c.feed_id == feed_id)
    ).first()
    values = {
        "hub": hub,
        "topic": topic,
        "callback_id": callback_id,
        "secret": secret,
        "state": "pending",
        "request_mode": None,
        "requested_at": None,
        "lease_seconds": None,
        "lease_expires_at": None,
        "next_attempt_at": now,
        "attempts": 0,
        "last_error": None,
        "claim_owner": None,
        "claim_expires_at": None,
        "updated_at": now,
    }
    if current is None:
        # two workers polling the feed at once may both insert: the second does nothing
        dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        inserted = conn.execute(
            dialect_insert(subs)
            .values(feed_id=feed_id, created_at=now, **values)
            .on_conflict_do_nothing(index_elements=[subs.c.feed_id])
            .returning(subs.c.id)
        )
        return inserted.first() is not None
    if (current.hub, current.topic) == (hub, topic):
        return False
    replaced = conn.execute(
        update(subs)
        .where(subs.c.id == current.id, subs.c.hub == current.hub, subs.c.topic == current.topic)
        .values(**values)
    )
    if replaced.rowcount:
        conn.execute(update(feeds).where(feeds.c.id == feed_id).values(push_until=None))
    return bool(replaced.rowcount)


def _due(now: datetime) -> Any:
    return and_(
        subs.c.next_attempt_at <= now,
        or_(subs.c.claim_expires_at.is_(None), subs.c.claim_expires_at <= now),
    )


def any_due(conn: Connection, now: datetime) -> bool:
    """Is any subscription due for the subscriber (a read: no write lock taken)?"""
    return conn.execute(select(subs.c.id).where(_due(now)).limit(1)).first() is not None


def claim_due(
    conn: Connection,
    owner: str,
    now: datetime,
    *,
    limit: int,
    claim_seconds: float,
    skip_locked: bool,
) -> list[PushSubscription]:
    """Claim up to ``limit`` due subscriptions for ``owner`` in one statement (as feeds
    are claimed: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two workers never send one
    subscription's request; an expired claim, of a worker that died, is claimable)."""
    due = (
        select(subs.c.id).where(_due(now)).order_by(subs.c.next_attempt_at, subs.c.id).limit(limit)
    )
    if skip_locked:
        due = due.with_for_update(skip_locked=True)
    claimed = conn.execute(
        update(subs)
        .where(subs.c.id.in_(due.scalar_subquery()))
        .values(claim_owner=owner, claim_expires_at=now + timedelta(seconds=claim_seconds))
        .returning(subs.c.id)
    ).scalars()
    ids = list(claimed)
    if not ids:
        return []
    rows = conn.execute(_select().where(subs.c.id.in_(ids)).order_by(subs.c.id))
    return [_record(r) for r in rows]


def change(
    conn: Connection,
    sub: PushSubscription,
    now: datetime,
    *,
    push_until: datetime | None = KEEP,
    poll_now: bool = False,
    **values: Any,
) -> bool:
    """Set ``values`` on ``sub``'s row if it is still as ``sub`` read it (same state,
    same pending request, same callback); with ``push_until`` the feed's copy of a live
    lease; ``poll_now``: the feed is due now if it was due later (push stopped: polling
    resumes). Releases the subscriber's claim. False when the row had changed meanwhile
    (nothing written)."""
    requested = (
        subs.c.requested_at.is_(None)
        if sub.requested_at is None
        else subs.c.requested_at == sub.requested_at
    )
    result = conn.execute(
        update(subs)
        .where(
            subs.c.id == sub.id,
            subs.c.state == sub.state,
            subs.c.callback_id == sub.callback_id,
            requested,
        )
        .values(updated_at=now, claim_owner=None, claim_expires_at=None, **values)
    )
    if not result.rowcount:
        return False
    feed_values: dict[str, Any] = {}
    if push_until is not KEEP:
        feed_values["push_until"] = push_until
    if poll_now:
        feed_values["next_check_at"] = case(
            (or_(feeds.c.next_check_at.is_(None), feeds.c.next_check_at > now), now),
            else_=feeds.c.next_check_at,
        )
    if feed_values:
        conn.execute(update(feeds).where(feeds.c.id == sub.feed_id).values(**feed_values))
    return True


def went_live(
    conn: Connection,
    sub: PushSubscription,
    now: datetime,
    *,
    lease_seconds: int,
    renew_at: datetime,
    safety_poll_at: datetime,
) -> bool:
    """The hub verified a subscription (or its renewal): live until now + lease; the
    feed's next poll moves out to ``safety_poll_at`` (never sooner than it was)."""
    expires = now + timedelta(seconds=lease_seconds)
    if not change(
        conn,
        sub,
        now,
        push_until=expires,
        state="live",
        request_mode=None,
        requested_at=None,
        lease_seconds=lease_seconds,
        lease_expires_at=expires,
        next_attempt_at=renew_at,
        attempts=0,
        last_error=None,
    ):
        return False
    conn.execute(
        update(feeds)
        .where(
            feeds.c.id == sub.feed_id,
            or_(feeds.c.next_check_at.is_(None), feeds.c.next_check_at < safety_poll_at),
        )
        .values(next_check_at=safety_poll_at)
    )
    return True


def record_push(conn: Connection, feed_id: int, now: datetime) -> None:
    """A delivery of the feed's subscription was stored (in the delivery's transaction)."""
    conn.execute(update(subs).where(subs.c.feed_id == feed_id).values(last_push_at=now))


def to_reconcile(conn: Connection) -> list[PushSubscription]:
    """Subscriptions whose feed left feeds.yaml (or was disabled) while they are active,
    and ended ones whose feed is back."""
    active = and_(feeds.c.removed_at.is_(None), feeds.c.enabled.is_(True))
    rows = conn.execute(
        _select().where(
            or_(
                and_(subs.c.state.in_(ACTIVE), ~active),
                and_(subs.c.state.in_(ENDING), active),
            )
        )
    )
    return [_record(r) for r in rows]


def counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(subs.c.state, func.count()).group_by(subs.c.state))
    return {state: int(n) for state, n in rows}


class PushStore:
    """The functions above, each in a transaction of the store (``Store.websub``)."""

    def __init__(self, write: Transaction, read: Transaction, dialect: str) -> None:
        self._write = write
        self._read = read
        self.dialect = dialect

    def by_callback(self, callback_id: str) -> PushSubscription | None:
        with self._read() as conn:
            return by_callback(conn, callback_id)

    def by_feed(self, feed_id: int) -> PushSubscription | None:
        with self._read() as conn:
            return by_feed(conn, feed_id)

    def all(self) -> list[PushSubscription]:
        with self._read() as conn:
            return all_subscriptions(conn)

    def topics(self) -> dict[int, tuple[str, str]]:
        with self._read() as conn:
            return topics(conn)

    def counts(self) -> dict[str, int]:
        with self._read() as conn:
            return counts(conn)

    def discovered(
        self, feed_id: int, hub: str, topic: str, callback_id: str, secret: str, now: datetime
    ) -> bool:
        with self._write() as conn:
            return discovered(conn, feed_id, hub, topic, callback_id, secret, now)

    def claim_due(
        self, owner: str, now: datetime, *, limit: int, claim_seconds: float
    ) -> list[PushSubscription]:
        with self._read() as conn:
            if not any_due(conn, now):
                return []
        with self._write() as conn:
            return claim_due(
                conn,
                owner,
                now,
                limit=limit,
                claim_seconds=claim_seconds,
                skip_locked=self.dialect == "postgresql",
            )

    def change(self, sub: PushSubscription, now: datetime, **values: Any) -> bool:
        with self._write() as conn:
            return change(conn, sub, now, **values)

    def went_live(
        self,
        sub: PushSubscription,
        now: datetime,
        *,
        lease_seconds: int,
        renew_at: datetime,
        safety_poll_at: datetime,
    ) -> bool:
        with self._write() as conn:
            return went_live(
                conn,
                sub,
                now,
                lease_seconds=lease_seconds,
                renew_at=renew_at,
                safety_poll_at=safety_poll_at,
            )

    def to_reconcile(self) -> list[PushSubscription]:
        with self._read() as conn:
            return to_reconcile(conn)
