"""``ProcessSaver``: SQLite's group writer in a process of its own (``aggregator run``).

Why: on SQLite every poll's items, story decisions and index rows are written by one group
writer (``batching``). In the daemon's process that thread shares the GIL with the event
loop, the fetches and the unpickling of every parsed poll, and it brings numpy, the dedup
verification and an 8 MiB page cache into the daemon's memory. In a child process it runs
on a core of its own (docs/performance.md, "Fifth round").

How: typed messages over a pipe. The parent sends ``SaveRequest(request id, poll)``; the
child hands each batch to its own ``BatchingSaver`` (the polls without entries of one
batch as one job, one executemany per column shape) and answers ``SaveReply(request id,
result, error)`` once the group is committed. Both ends send in batches (``_Outbox``):
what was queued while the last batch was being sent goes as one message, so a burst of
polls costs a few pipe writes and wake-ups instead of one each. Every other statement
(claims, leases, reads) stays in the parent, and the machine-wide writer lock
(``store.writerlock``) keeps both processes taking turns.

Failure: if the child dies, every write it had not answered fails with a ``StoreError``
(its feeds are polled again, as after any failed commit), one error line is logged, and
later writes go to a group writer in the parent: nothing stops.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import multiprocessing
import pickle
import signal
import threading
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from ..errors import AggregatorError, StoreError
from ..records import PollToSave, SavePlan, SaveResult
from ..store import Store
from .batching import BatchingSaver
from .direct import DEDUP_WINDOW
from .groupwrite import settle
from .plan import ahead, plan_url

log = logging.getLogger(__name__)


class ProcessSaver:
    """Saves polls through a writer process (see the module); once that process is gone,
    through a group writer in this process."""

    def __init__(
        self, store: Store, *, window: float = DEDUP_WINDOW, planner: Executor | None = None
    ) -> None:
        self.store = store
        self.window = window
        self.planner = planner  # the pool that plans story decisions (``plan``)
        self.plan_url = plan_url(store)
        self.process = WriterProcess(
            store.engine.url.render_as_string(hide_password=False),
            window,
            plans=planner is not None and self.plan_url is not None,
        )
        self._local: BatchingSaver | None = None
        # what this process still writes (claims, leases, feed settings) is small: its
        # writing connection gets a reader's page cache, not the group writer's
        store.use_small_write_cache()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def local_writes(self) -> bool:
        """Has this process written polls itself (the writer process gone)?"""
        return self._local is not None

    async def save(self, poll: PollToSave) -> SaveResult:
        plan = await ahead(self.planner, self.plan_url, poll, self.window)
        return await asyncio.wrap_future(self.submit(poll, plan))

    def submit(self, poll: PollToSave, plan: SavePlan | None = None) -> Future[SaveResult]:
        future = self.process.submit(poll, plan)
        if future is None:  # the writer process is gone: write here from now on
            if self._local is None:
                self._local = BatchingSaver(self.store, window=self.window)
            return self._local.submit(poll, plan)
        future.add_done_callback(
            functools.partial(self.store.failures.watch, poll.feed_id, poll.update.polled_at)
        )
        return future

    def close(self, timeout: float = 1.5) -> None:
        """Let the writer process finish what it was sent, then stop it (see
        ``WriterProcess.close``)."""
        self.process.close(timeout)
        if self._local is not None:
            self._local.close()


@dataclass(frozen=True)
class SaveRequest:
    """Parent → child: save ``poll``."""

    request_id: int
    poll: PollToSave
    plan: SavePlan | None = None  # its story decisions, taken ahead in the pool


@dataclass(frozen=True)
class SaveReply:
    """Child → parent: the request's result once committed, or the error that failed it."""

    request_id: int
    result: SaveResult | None
    error: BaseException | None


class WriterProcess:
    """The parent's end: ``submit`` a poll, get a future for its result."""

    def __init__(self, url: str, window: float = DEDUP_WINDOW, *, plans: bool = False) -> None:
        context = multiprocessing.get_context("forkserver")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=serve,
            args=(url, window, child_conn, plans),
            name="aggregator-store-writer",
            daemon=True,
        )
        self._process.start()
        child_conn.close()
        self._ids = itertools.count()
        self._pending: dict[int, Future[SaveResult]] = {}
        self._lock = threading.Lock()  # _pending against the reader's failure
        self._outbox = _Outbox(self._conn, "aggregator-store-writer-requests")
        self.alive = True
        self._closing = False  # close() waits for the child: the reader must not
        self._reader = threading.Thread(
            target=self._read, name="aggregator-store-writer-replies", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def submit(self, poll: PollToSave, plan: SavePlan | None = None) -> Future[SaveResult] | None:
        """Queue ``poll`` in the child; None once the child is gone (the caller writes
        itself)."""
        future: Future[SaveResult] = Future()
        with self._lock:
            if not self.alive:
                return None
            request = next(self._ids)
            try:
                data = _dumps(SaveRequest(request, poll, plan))
            except Exception:  # noqa: BLE001  (a poll that does not pickle: the caller writes itself)
                return None
            self._pending[request] = future
        # a pipe that breaks before this is sent: the reader sees the child gone and
        # fails every unanswered write
        self._outbox.put(data)
        return future

    def close(self, timeout: float = 1.5) -> None:
        """Let the child finish what it was sent, then stop it; after ``timeout`` seconds
        it is killed (its open transaction is rolled back: those polls are not saved, and
        their feeds are polled again), so that shutdown stays within a service manager's
        grace period."""
        self._closing = True
        self._outbox.close(_dumps(None))  # what was submitted goes first, then the stop
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._reader.join(5.0)
        self._conn.close()

    def _read(self) -> None:
        while True:
            try:
                batch = _loads_batch(self._conn.recv_bytes())
            except (EOFError, OSError):
                break
            for reply in batch:
                future = self._pending.pop(reply.request_id, None)
                if future is not None:
                    settle(future, reply.result, reply.error)
        with self._lock:
            self.alive = False
            lost, self._pending = self._pending, {}
        # one thread only may wait for the child (or ask its exit code): two reading its
        # exit status at once leave one of them a false 255 (the forkserver's Popen.poll)
        if self._closing:
            if lost:  # killed after close()'s timeout
                log.error(
                    "the store writer process was stopped with %d writes unanswered: they failed",
                    len(lost),
                    extra={"event": "store_writer_exited", "exitcode": None},
                )
        else:
            self._process.join(5.0)
            if lost or self._process.exitcode not in (0, None):
                log.error(
                    "the store writer process exited (code %s); %d unanswered writes "
                    "failed, this process writes from now on",
                    self._process.exitcode,
                    len(lost),
                    extra={"event": "store_writer_exited", "exitcode": self._process.exitcode},
                )
        for future in lost.values():
            settle(future, None, StoreError("the store writer process exited before the commit"))


def serve(url: str, window: float, conn: Connection, plans: bool = False) -> None:
    """The child: save the parent's polls with this process's group writer until told to
    stop (``None``) or the parent is gone, answering each once its group is committed."""
    from ..store import open_store

    # Ctrl-C reaches the whole process group, and a service manager may signal every
    # process of the service: the parent decides when the writer stops (it finishes what
    # it was sent first); a parent that is gone closes the pipe, which stops it too
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:  # its name in ps, top and /proc (Linux)
        with open("/proc/self/comm", "w") as comm:
            comm.write("aggregator-wr")
    except OSError:
        pass
    store = open_store(url, pool_size=1)
    saver = BatchingSaver(store, window=window, journal=plans)
    replies = _Outbox(conn, "aggregator-store-writer-replies")
    stop = False
    try:
        while not stop:
            try:
                batch = _loads_batch(conn.recv_bytes())
            except (EOFError, OSError):
                break
            requests: list[SaveRequest] = []
            for message in batch:
                if message is None:
                    stop = True
                    break
                requests.append(message)
            futures = saver.submit_all([r.poll for r in requests], [r.plan for r in requests])
            for request, future in zip(requests, futures, strict=True):
                future.add_done_callback(_answer(replies, request.request_id))
    finally:
        saver.close()  # the group writer finishes its queue first
        store.close(truncate_wal=False)
        replies.close(None)
        conn.close()


def _answer(replies: _Outbox, request_id: int) -> Any:
    def done(future: Future[SaveResult]) -> None:
        error = _portable(future.exception())
        reply = SaveReply(request_id, None if error else future.result(), error)
        try:
            data = _dumps(reply)
        except Exception as exc:  # noqa: BLE001  (an answer must reach the parent, or its poll waits for good)
            data = _dumps(SaveReply(request_id, None, StoreError(f"unsendable result: {exc}")))
        replies.put(data)

    return done


class _Outbox:
    """Messages for one end of the pipe, sent by a thread of their own in batches: what
    was put while the previous batch was being written goes as one message (a list)."""

    def __init__(self, conn: Connection, name: str) -> None:
        self._conn = conn
        self._items: list[bytes] = []
        self._last: bytes | None = None  # sent after everything else, by close()
        self._closed = False
        self.sent = 0  # messages (batches) sent
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._send, name=name, daemon=True)
        self._thread.start()

    def put(self, data: bytes) -> None:
        with self._ready:
            self._items.append(data)
            if len(self._items) == 1:
                self._ready.notify()

    def close(self, last: bytes | None) -> None:
        """Send what is queued, then ``last`` (if any), and stop the thread."""
        with self._ready:
            self._last = last
            self._closed = True
            self._ready.notify()
        self._thread.join(5.0)

    def _send(self) -> None:
        while True:
            with self._ready:
                while not self._items and not self._closed:
                    self._ready.wait()
                items, self._items = self._items, []
                closed = self._closed
                if closed and self._last is not None:
                    items.append(self._last)
            try:
                if items:
                    self._conn.send_bytes(_dumps(items))
                    self.sent += 1
            except (OSError, EOFError, ValueError):  # the other end is gone (or closed)
                return
            if closed:
                return


def _loads_batch(data: bytes) -> list[Any]:
    return [pickle.loads(item) for item in pickle.loads(data)]


def _dumps(message: object) -> bytes:
    # plain pickle, not Connection.send's ForkingPickler: that one copies the copyreg
    # dispatch table for every message (a few % of a 304 poll's CPU), for reducers of
    # sockets and file descriptors that never travel here
    return pickle.dumps(message, pickle.HIGHEST_PROTOCOL)


def _portable(error: BaseException | None) -> BaseException | None:
    """``error`` as something that survives pickling to the parent."""
    if error is None or isinstance(error, AggregatorError):
        return error
    return StoreError(f"{type(error).__name__}: {error}")
