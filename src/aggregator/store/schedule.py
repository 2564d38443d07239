"""Where the polling schedule stands: how many enabled feeds are due now, in error
backoff, held by a Retry-After, retired or waiting for their next check, and when the
next poll is. One aggregate query (whatever the number of feeds, nothing per feed leaves
the database); the daemon logs it when it starts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StoreError
from .faults import short as _short
from .store import Store
from .tables import feeds


@dataclass(frozen=True)
class PollSchedule:
    due: int = 0  # next check reached (or never polled)
    backoff: int = 0  # failed last time, waiting for the backoff to end
    held: int = 0  # every feed of its host held by a Retry-After
    retired: int = 0  # HTTP 410: never polled again
    waiting: int = 0  # polled fine, waiting for the next check
    next_poll_at: datetime | None = None  # the soonest check after now (None: none due later)

    @property
    def feeds(self) -> int:
        return self.due + self.backoff + self.held + self.retired + self.waiting


def poll_schedule(store: Store, now: datetime) -> PollSchedule:
    """The schedule of the enabled feeds of the config (``feeds list`` shows each)."""
    retired = feeds.c.disabled_reason.is_not(None)
    held = and_(feeds.c.hold_until.is_not(None), feeds.c.hold_until > now)
    due = or_(feeds.c.next_check_at.is_(None), feeds.c.next_check_at <= now)
    state = case(
        (retired, "retired"),
        (held, "held"),
        (due, "due"),
        (feeds.c.error_count > 0, "backoff"),
        else_="waiting",
    ).label("state")
    query = (
        select(
            state,
            func.count().label("n"),
            func.min(feeds.c.next_check_at).label("next_check"),
            func.min(feeds.c.hold_until).label("hold_end"),
        )
        .where(feeds.c.removed_at.is_(None), feeds.c.enabled.is_(True))
        .group_by(state)
    )
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(query).all()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read the feeds' schedule: {_short(exc)}") from None
    counts = {row.state: int(row.n) for row in rows}
    soonest = [
        row.hold_end if row.state == "held" else row.next_check
        for row in rows
        if row.state in ("held", "backoff", "waiting")
    ]
    known = [when for when in soonest if when is not None]
    return PollSchedule(
        due=counts.get("due", 0),
        backoff=counts.get("backoff", 0),
        held=counts.get("held", 0),
        retired=counts.get("retired", 0),
        waiting=counts.get("waiting", 0),
        next_poll_at=min(known) if known else None,
    )
