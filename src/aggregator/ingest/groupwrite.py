"""Group commit for SQLite: polls saved while another group is being written are written
together, in ONE transaction with a savepoint each.

Why: SQLite in WAL mode writes every page a transaction touched, whole, to the log. The
dedup index is keyed by hash (LSH bands, anchor shingles), so one poll's rows land on
hundreds of pages spread over the whole index, and one transaction per poll wrote the same
pages again and again: 2.7 GB written for a 155 MB database at 300 farm feeds
(docs/performance.md). Polls grouped into one transaction share those page writes.

What does not change: each poll is still all-or-nothing (its savepoint is rolled back
when it fails, and only its caller sees the error); a caller returns only once its
group is committed, so nothing is reported saved that a crash could lose; a failed commit
fails every poll of the group (none of them is saved: their feeds are polled again). A
group stops taking polls after ``max_jobs`` or ``max_seconds`` of writing, which bounds
how long other writers (lease renewals, other processes) wait for the database.

A transaction SQLite rolled back by itself: on some errors (a full disk, an I/O error,
out of memory) SQLite rolls back the whole transaction, not only the failed statement;
the savepoints of the polls written before in the group are gone with it ("no such
savepoint"). The group then ends there: nothing of it is committed, and its polls are
written again one by one, each in a transaction of its own (the failed one last), so a
poll is reported saved only once its own commit succeeded. The first of them that fails
for a database reason fails the others with the same error (the disk is still full:
their feeds are polled again later).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, InvalidStateError
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import StoreError
from ..store.database import in_transaction

if TYPE_CHECKING:
    from sqlalchemy import Connection

log = logging.getLogger(__name__)
T = TypeVar("T")
Job = tuple["Callable[[Connection], Any]", "Future[Any]"]


class _TransactionLost(Exception):
    """SQLite rolled the group's transaction back by itself (see the module's doc)."""


class GroupWriter:
    def __init__(
        self,
        transaction: Callable[[], AbstractContextManager[Connection]],
        wrap_errors: Callable[[], AbstractContextManager[None]],
        *,
        max_jobs: int = 64,
        max_seconds: float = 1.0,
        after_commit: Callable[[], None] | None = None,
        after_failure: Callable[[], None] | None = None,
    ) -> None:
        self._transaction = transaction  # a write transaction (the store's lock held)
        self._wrap_errors = wrap_errors  # database errors -> StoreError
        self._after_commit = after_commit  # run by the writer after each committed group
        self._after_failure = after_failure  # run by the writer when something rolled back
        self.max_jobs = max_jobs
        self.max_seconds = max_seconds
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.groups = 0  # transactions committed (tests and metrics)
        self.jobs = 0  # polls written in them
        self.lost = 0  # groups whose transaction SQLite rolled back (see the module's doc)
        self.cpu_seconds = 0.0  # CPU time of the writer thread

    def run(self, job: Callable[[Connection], T]) -> T:
        """Run ``job`` inside the next group's transaction; its result once committed."""
        return self.submit(job).result()

    def submit(self, job: Callable[[Connection], T]) -> Future[T]:
        """Queue ``job`` for the next group; the future resolves once the group committed
        (callers on an event loop wait on it without holding a thread)."""
        future: Future[T] = Future()
        self._queue.put((job, future))
        self._ensure_thread()
        return future

    def close(self) -> None:
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()
            log.debug(
                "store writer: %d polls in %d transactions, %.2f s CPU",
                self.jobs,
                self.groups,
                self.cpu_seconds,
                extra={"event": "store_writer"},
            )

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="aggregator-store-writer", daemon=True
                )
                self._thread.start()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            started = time.thread_time()
            keep_running = self._write_group(first)
            self.cpu_seconds += time.thread_time() - started
            if not keep_running:
                return

    def _write_group(self, first: Job) -> bool:
        """Write ``first`` and whatever else is queued; False when asked to stop."""
        done: list[tuple[Job, Any, BaseException | None]] = []
        todo = [first]
        keep_running = True
        try:
            with self._transaction() as conn:
                started = time.monotonic()
                for job in _drain(todo):
                    try:
                        with self._wrap_errors():
                            done.append((job, _in_savepoint(conn, job[0]), None))
                    except Exception as exc:
                        # handed to its caller: only its savepoint is rolled back, unless
                        # SQLite rolled back the whole transaction
                        self._failed()
                        if not in_transaction(conn):
                            raise _TransactionLost from exc
                        done.append((job, None, exc))
                    if len(done) >= self.max_jobs or time.monotonic() - started > self.max_seconds:
                        break
                    try:
                        queued = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if queued is None:
                        keep_running = False
                        break
                    todo.append(queued)
        except _TransactionLost as lost:
            self._failed()
            self.lost += 1
            cause = lost.__cause__ or lost
            failed = todo[len(done)]
            # the polls that had failed alone keep their errors; the others are written
            # again, one transaction each, the one that failed last
            again = [job for job, _result, error in done if error is None]
            for (_job, future), _result, error in done:
                if error is not None:
                    settle(future, None, error)
            self._write_alone([*again, failed], cause)
            return keep_running
        except BaseException as exc:  # noqa: BLE001  (handed to every caller: nothing of the group is saved)
            self._failed()
            for (_job, future), _result, _error in done:
                settle(future, None, exc)
            for _job, future in todo[len(done) :]:
                settle(future, None, exc)
            return keep_running
        self.groups += 1
        self.jobs += len(done)
        for (_job, future), result, error in done:
            settle(future, result, error)
        self._committed()
        return keep_running

    def _write_alone(self, jobs: list[Job], cause: BaseException) -> None:
        """Each of ``jobs`` in a transaction of its own, after the group's was lost to
        ``cause``; once one fails for a database reason, the rest fail with it."""
        stop: BaseException | None = None
        for job, future in jobs:
            if stop is not None:
                settle(future, None, stop)
                continue
            try:
                with self._wrap_errors(), self._transaction() as conn:
                    result = job(conn)
            except Exception as exc:  # noqa: BLE001  (handed to its caller)
                self._failed()
                settle(future, None, exc)
                if isinstance(exc, StoreError):
                    stop = exc
                continue
            self.groups += 1
            self.jobs += 1
            settle(future, result, None)
        if stop is None:
            self._committed()
        log.debug(
            "store writer: a group's transaction was rolled back by SQLite (%s); its %d "
            "polls were written one by one",
            cause,
            len(jobs),
            extra={"event": "store_group_lost"},
        )

    def _failed(self) -> None:
        if self._after_failure is not None:
            self._after_failure()

    def _committed(self) -> None:
        if self._after_commit is None:
            return
        try:
            self._after_commit()
        except Exception:  # upkeep after a commit must not stop the writer
            log.exception("store writer: upkeep after a commit failed")


def _in_savepoint(conn: Connection, job: Callable[[Connection], T]) -> T:
    """``job(conn)`` inside a savepoint, rolled back if it fails, unless SQLite rolled
    back the whole transaction (the savepoint is gone then: the caller sees the job's
    own error, not "no such savepoint")."""
    savepoint = conn.begin_nested()
    try:
        result = job(conn)
    except BaseException:
        if in_transaction(conn):
            savepoint.rollback()
        raise
    savepoint.commit()
    return result


def settle(future: Future[Any], result: Any, error: BaseException | None) -> None:
    """Hand ``future`` its result or error, unless its caller gave up on it (a poll
    cancelled at shutdown cancels the future it awaited): the writer must not die of
    that."""
    with contextlib.suppress(InvalidStateError):
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def _drain(todo: list[Job]) -> Iterator[Job]:
    """The jobs of ``todo``, including those appended while iterating."""
    index = 0
    while index < len(todo):
        yield todo[index]
        index += 1
