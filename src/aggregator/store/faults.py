"""Storage faults: what a database error means, and the polls it cost.

A write can fail for reasons of the storage, not of the data: the disk is full, an I/O
error, a read-only file or mount. ``store_error`` names the cause in the StoreError it
raises (``StorageFailure``: "disk full: …"; ``DatabaseReadOnly``, a permanent error: the
daemon stops rather than retry what can never work).

A poll whose write failed has nothing committed; its feed still holds this worker's
lease, and nothing on the feed says what happened. ``FailedPolls`` keeps such polls until
they can be recorded on their feeds (error count, last error, ``last_polled_at``, the
lease released, the next check ``RETRY_AFTER`` seconds after the failure): the store
writes them before its next claim, so feeds are polled again soon after the database
takes writes again, not after their lease expires. Recording is itself a write, and
fails while the disk is still full: the polls are then kept for the next attempt.

Logged once: the first failure of a run of them, with its cause (each poll's own line
says "database error: disk full: …" too); the run ends, with one line, at the first
write that works ``QUIET_SECONDS`` after the last failure (near a full disk small writes
work and large ones fail, turn by turn: that is one run, not hundreds).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, or_, update

from ..errors import StoreError
from .tables import feeds

log = logging.getLogger("aggregator.store")

RETRY_AFTER = 60.0  # seconds from a poll that could not be saved to the next try
QUIET_SECONDS = 60.0  # writes that work this long after the last failure end a run of them

# SQLite's primary result codes (an extended code's low byte) and PostgreSQL's SQLSTATEs
_SQLITE_CAUSES = {
    sqlite3.SQLITE_FULL: "disk full",
    sqlite3.SQLITE_IOERR: "I/O error",
    sqlite3.SQLITE_READONLY: "read-only",
    sqlite3.SQLITE_CORRUPT: "database file corrupt",
    sqlite3.SQLITE_NOTADB: "not a database file",
}
_PG_CAUSES = {"53100": "disk full", "58030": "I/O error"}
_STORAGE = ("disk full", "I/O error", "database file corrupt", "not a database file")


class StorageFailure(StoreError):
    """The storage refused a write (disk full, I/O error): an expected failure; the polls
    it cost are recorded on their feeds and polled again."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause = cause
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:  # travels from the writer process
        return (type(self), (self.cause, self.detail))


class DatabaseReadOnly(StoreError):
    """The database cannot be written at all (a read-only file, folder or mount): a
    permanent error, which retrying cannot cure."""


def short(exc: BaseException) -> str:
    """The first line of a database error's own message."""
    message = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return message[0] if message else type(exc).__name__


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the driver's error under it, and what it was raised from or during."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nested in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(nested, BaseException):
                todo.append(nested)


def _own_cause(error: BaseException) -> str | None:
    """The storage cause ``error`` itself carries (a driver's error code), if any."""
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _SQLITE_CAUSES:
        return _SQLITE_CAUSES[code & 0xFF]
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str):
        return _PG_CAUSES.get(sqlstate)
    return None


def cause_of(exc: BaseException) -> str | None:
    """ "disk full", "I/O error", "read-only", … when the storage caused ``exc``."""
    for error in _chain(exc):
        cause = _own_cause(error)
        if cause is not None:
            return cause
    return None


def _storage_error(exc: BaseException) -> BaseException:
    """The error that names the storage's cause in ``exc``'s chain (a savepoint that is
    gone after SQLite rolled the transaction back hides the disk-full error under it)."""
    for error in _chain(exc):
        if _own_cause(error) is not None:
            return error
    return exc


def store_error(exc: BaseException, what: str) -> StoreError:
    """The StoreError for a database error ``exc`` (``what``: "database unavailable", …)."""
    cause = cause_of(exc)
    detail = short(_storage_error(exc))
    if cause == "read-only":
        return DatabaseReadOnly(f"the database cannot be written (read-only): {detail}")
    if cause in _STORAGE:
        return StorageFailure(cause, detail)
    return StoreError(f"{what}: {detail}")


def is_permanent(exc: BaseException) -> bool:
    """Retrying cannot cure ``exc``: the daemon should stop (exit status 3)."""
    return isinstance(exc, DatabaseReadOnly)


@dataclass(frozen=True)
class FailedPoll:
    feed_id: int
    failed_at: datetime  # the poll's time (FeedUpdate.polled_at)
    error: str


class FailedPolls:
    """Polls whose writes failed, until they are recorded on their feeds (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, FailedPoll] = {}
        self._failing = False  # in a run of failures: its cause was logged
        self._last_failure = 0.0  # time.monotonic() of the latest failure

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def watch(self, feed_id: int, polled_at: datetime, future: Future[Any]) -> None:
        """A done callback for a queued write of ``feed_id``'s poll."""
        if future.cancelled():
            return
        error = future.exception()
        if isinstance(error, StoreError):
            self.failed(feed_id, polled_at, error)
        elif error is None:
            self.succeeded()

    def failed(self, feed_id: int, polled_at: datetime, error: StoreError) -> None:
        with self._lock:
            self._pending[feed_id] = FailedPoll(feed_id, polled_at, f"database error: {error}")
            first, self._failing = not self._failing, True
            self._last_failure = time.monotonic()
        if first:
            cause = error.cause if isinstance(error, StorageFailure) else "database error"
            log.error(
                "cannot write to the database: %s; polls are not saved, their feeds are "
                "polled again once the database takes writes",
                error,
                extra={"event": "store_write_failed", "cause": cause, "error": str(error)},
            )

    def succeeded(self) -> None:
        if not self._failing:  # the usual case: no lock taken
            return
        with self._lock:
            was = self._failing and time.monotonic() - self._last_failure >= QUIET_SECONDS
            if was:
                self._failing = False
        if was:
            log.warning("the database takes writes again", extra={"event": "store_write_recovered"})

    def take(self) -> list[FailedPoll]:
        with self._lock:
            polls = list(self._pending.values())
            self._pending = {}
        return polls

    def put_back(self, polls: Sequence[FailedPoll]) -> None:
        with self._lock:
            for poll in polls:
                self._pending.setdefault(poll.feed_id, poll)


_AT = bindparam("f_at", type_=feeds.c.last_polled_at.type)
_RECORD = (
    update(feeds)
    .where(
        feeds.c.id == bindparam("f_id"),
        # a later poll of the feed that succeeded wins
        or_(feeds.c.last_polled_at.is_(None), feeds.c.last_polled_at <= _AT),
    )
    .values(
        error_count=feeds.c.error_count + 1,
        last_error=bindparam("f_error", type_=feeds.c.last_error.type),
        last_polled_at=_AT,
        next_check_at=bindparam("f_next", type_=feeds.c.next_check_at.type),
        lease_owner=None,
        lease_expires_at=None,
    )
)


def record(conn: Connection, polls: Sequence[FailedPoll]) -> None:
    """Write ``polls`` on their feeds: counted as errors, the lease released, polled
    again ``RETRY_AFTER`` seconds after the failure (at once if that has passed)."""
    conn.execute(
        _RECORD,
        [
            {
                "f_id": p.feed_id,
                "f_at": p.failed_at,
                "f_error": p.error[:1000],
                "f_next": p.failed_at + timedelta(seconds=RETRY_AFTER),
            }
            for p in polls
        ],
    )
