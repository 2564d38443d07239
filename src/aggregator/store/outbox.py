"""The delivery side of the outbox: subscriptions, claims, results, and the operator's
``aggregator events list|retry|purge`` (docs/push.md).

``store/events.py`` writes events and their deliveries inside the save path; this module
is everything after: the webhook sender claims due deliveries with a lease (PostgreSQL:
``FOR UPDATE SKIP LOCKED``, as feeds are claimed, so several workers never send one
delivery at the same time), records each attempt's result, and the operator lists,
retries and purges. What to do after a failure (backoff, when a delivery is dead) is the
sender's decision; this module only writes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, exists, func, insert, or_, select, update

from ..records import WebhookSpec
from .batches import chunks as _chunks
from .eventtables import event_deliveries, events, webhooks

Tx = Callable[[], AbstractContextManager[Connection]]
STATES = ("pending", "delivered", "dead")


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery: one event for one webhook."""

    id: int
    event_id: int
    event_key: str
    type: str
    version: int
    created_at: datetime
    data: str  # the event's data, JSON text
    webhook_url: str
    attempts: int  # made before this one
    retry_since: datetime  # the start of its retry window (creation or `events retry`)


@dataclass(frozen=True)
class EventRow:
    """An event, with one of its deliveries (or none), as ``events list`` shows it."""

    id: int
    event_key: str
    type: str
    created_at: datetime
    data: str
    webhook_url: str | None
    state: str | None  # None: no webhook wanted it
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status: int | None
    last_error: str | None


class Outbox:
    """The outbox's statements, each in a short transaction of the store's."""

    def __init__(self, write: Tx, read: Tx, dialect: str) -> None:
        self._write = write  # a write transaction (the store's writer lock held)
        self._read = read
        self.dialect = dialect

    # ---- subscriptions ----------------------------------------------------------------
    def sync_webhooks(self, specs: Sequence[WebhookSpec], now: datetime) -> None:
        """Make the webhooks table match the config: new subscriptions added, changed
        ones updated, those no longer listed marked removed (their pending deliveries
        wait: listed again, they go out)."""
        with self._write() as conn:
            rows = {r.url: r for r in conn.execute(select(webhooks))}
            for spec in specs:
                values: dict[str, Any] = {
                    "events": list(spec.events),
                    "sources_reached": spec.sources_reached,
                    "tags": list(spec.tags),
                    "feeds": list(spec.feeds),
                    "removed_at": None,
                }
                row = rows.get(spec.url)
                if row is None:
                    conn.execute(insert(webhooks).values(url=spec.url, created_at=now, **values))
                elif any(getattr(row, k) != v for k, v in values.items()):
                    conn.execute(update(webhooks).where(webhooks.c.id == row.id).values(**values))
            wanted = {spec.url for spec in specs}
            gone = [r.id for url, r in rows.items() if url not in wanted and r.removed_at is None]
            if gone:
                conn.execute(update(webhooks).where(webhooks.c.id.in_(gone)).values(removed_at=now))

    # ---- the sender -------------------------------------------------------------------
    def claim(
        self,
        owner: str,
        now: datetime,
        *,
        limit: int,
        lease_seconds: float,
        force: bool = False,
        attempted_before: datetime | None = None,
    ) -> list[Delivery]:
        """Lease up to ``limit`` pending deliveries of active webhooks that are due (with
        ``force``, due or not: ``run --once``) and not leased by a live worker, in ONE
        statement (PostgreSQL: ``FOR UPDATE SKIP LOCKED``). ``attempted_before``: only
        those not attempted since then (a run does not retry what it tried already)."""
        d = event_deliveries
        conditions = [
            d.c.state == "pending",
            d.c.webhook_id.in_(select(webhooks.c.id).where(webhooks.c.removed_at.is_(None))),
            or_(d.c.lease_expires_at.is_(None), d.c.lease_expires_at <= now),
        ]
        if not force:
            conditions.append(d.c.next_attempt_at <= now)
        if attempted_before is not None:
            conditions.append(
                or_(d.c.last_attempt_at.is_(None), d.c.last_attempt_at < attempted_before)
            )
        due = select(d.c.id).where(*conditions).order_by(d.c.next_attempt_at, d.c.id).limit(limit)
        if self.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        statement = (
            update(d)
            .where(d.c.id.in_(due.scalar_subquery()))
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds))
            .returning(d.c.id)
        )
        with self._write() as conn:
            ids = list(conn.execute(statement).scalars())
            return _deliveries(conn, ids)

    def finish(
        self,
        delivery: Delivery,
        now: datetime,
        *,
        state: str,
        next_attempt_at: datetime,
        status: int | None,
        error: str | None,
    ) -> None:
        """Record an attempt: ``state`` delivered, pending (retried at
        ``next_attempt_at``) or dead. A delivery already delivered stays so."""
        assert state in STATES
        d = event_deliveries
        values: dict[str, Any] = {
            "state": state,
            "attempts": d.c.attempts + 1,
            "last_attempt_at": now,
            "last_status": status,
            "last_error": error[:1000] if error else None,
            "next_attempt_at": next_attempt_at,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        if state == "delivered":
            values["delivered_at"] = now
        with self._write() as conn:
            conn.execute(
                update(d).where(d.c.id == delivery.id, d.c.state == "pending").values(**values)
            )

    def release(self, owner: str, ids: Sequence[int] | None = None) -> None:
        """Give back leases (a worker stopping, attempts abandoned at a deadline)."""
        d = event_deliveries
        query = update(d).where(d.c.lease_owner == owner)
        with self._write() as conn:
            if ids is None:
                conn.execute(query.values(lease_owner=None, lease_expires_at=None))
                return
            for chunk in _chunks(sorted(set(ids))):
                conn.execute(
                    query.where(d.c.id.in_(chunk)).values(lease_owner=None, lease_expires_at=None)
                )

    def lease_owners(self) -> list[str]:
        d = event_deliveries
        with self._read() as conn:
            rows = conn.execute(
                select(d.c.lease_owner).where(d.c.lease_owner.is_not(None)).distinct()
            )
            return [str(r[0]) for r in rows]

    def next_due(self) -> datetime | None:
        """When the earliest pending delivery of an active webhook is due (None: none
        is pending). A cheap read: the sender asks it before it claims."""
        d = event_deliveries
        with self._read() as conn:
            found: datetime | None = conn.execute(
                select(func.min(d.c.next_attempt_at)).where(
                    d.c.state == "pending",
                    d.c.webhook_id.in_(
                        select(webhooks.c.id).where(webhooks.c.removed_at.is_(None))
                    ),
                )
            ).scalar_one_or_none()
            return found

    # ---- the operator -----------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Deliveries by state; ``none``: events no webhook wanted."""
        d = event_deliveries
        with self._read() as conn:
            found = {state: 0 for state in (*STATES, "none")}
            for state, n in conn.execute(select(d.c.state, func.count()).group_by(d.c.state)):
                found[state] = int(n)
            found["none"] = int(
                conn.execute(
                    select(func.count())
                    .select_from(events)
                    .where(~exists().where(d.c.event_id == events.c.id))
                ).scalar_one()
            )
            return found

    def list(
        self, *, state: str | None = None, limit: int = 100, event: str | None = None
    ) -> list[EventRow]:
        """The latest events with their deliveries, newest first; ``state``: only
        deliveries in it (``none``: events no webhook wanted); ``event``: one event by
        id or key."""
        d = event_deliveries
        query = (
            select(
                events.c.id,
                events.c.event_key,
                events.c.type,
                events.c.created_at,
                events.c.data,
                webhooks.c.url.label("webhook_url"),
                d.c.state,
                func.coalesce(d.c.attempts, 0).label("attempts"),
                d.c.next_attempt_at,
                d.c.delivered_at,
                d.c.last_status,
                d.c.last_error,
            )
            .select_from(
                events.outerjoin(d, d.c.event_id == events.c.id).outerjoin(
                    webhooks, webhooks.c.id == d.c.webhook_id
                )
            )
            .order_by(events.c.id.desc(), d.c.id)
            .limit(limit)
        )
        if state == "none":
            query = query.where(d.c.id.is_(None))
        elif state is not None:
            query = query.where(d.c.state == state)
        if event is not None:
            query = query.where(_event_is(event))
        with self._read() as conn:
            return [EventRow(**row._mapping) for row in conn.execute(query)]

    def retry(self, now: datetime, *, event: str | None = None) -> int:
        """Make dead and waiting deliveries (of one event, or all) due now, with a new
        retry window; returns how many."""
        d = event_deliveries
        query = update(d).where(d.c.state.in_(("pending", "dead")))
        if event is not None:
            query = query.where(d.c.event_id.in_(select(events.c.id).where(_event_is(event))))
        with self._write() as conn:
            result = conn.execute(
                query.values(
                    state="pending",
                    next_attempt_at=now,
                    retry_since=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            return int(result.rowcount)

    def purge(self, before: datetime, *, pending: bool = False, batch: int = 1000) -> int:
        """Delete events created before ``before`` whose deliveries are all finished
        (delivered or dead; with ``pending``, whatever their state), with their
        deliveries, in transactions of ``batch`` events; returns how many."""
        d = event_deliveries
        removed = 0
        while True:
            candidates = select(events.c.id).where(events.c.created_at < before)
            if not pending:
                candidates = candidates.where(
                    ~exists().where(d.c.event_id == events.c.id, d.c.state == "pending")
                )
            with self._write() as conn:
                ids = list(conn.execute(candidates.order_by(events.c.id).limit(batch)).scalars())
                if ids:
                    conn.execute(delete(d).where(d.c.event_id.in_(ids)))
                    conn.execute(delete(events).where(events.c.id.in_(ids)))
            removed += len(ids)
            if len(ids) < batch:
                return removed


def _event_is(event: str) -> Any:
    if event.isdigit():
        return events.c.id == int(event)
    return events.c.event_key == event


def _deliveries(conn: Connection, ids: Sequence[int]) -> list[Delivery]:
    d = event_deliveries
    found: list[Delivery] = []
    for chunk in _chunks(sorted(ids)):
        rows = conn.execute(
            select(
                d.c.id,
                d.c.event_id,
                events.c.event_key,
                events.c.type,
                events.c.version,
                events.c.created_at,
                events.c.data,
                webhooks.c.url.label("webhook_url"),
                d.c.attempts,
                d.c.retry_since,
            )
            .select_from(
                d.join(events, events.c.id == d.c.event_id).join(
                    webhooks, webhooks.c.id == d.c.webhook_id
                )
            )
            .where(d.c.id.in_(chunk))
            .order_by(d.c.event_id, d.c.id)
        )
        found.extend(Delivery(**row._mapping) for row in rows)
    return found
