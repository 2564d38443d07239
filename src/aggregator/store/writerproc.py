"""The SQLite group writer in a process of its own (the daemon and ``run --once``).

Why: on SQLite every poll's items, story decisions and index rows are written by one
group writer (see ``groupwrite``). In the daemon's process that thread shares the GIL with
the event loop, the fetches and the unpickling of every parsed poll, and it brings numpy,
the dedup verification and an 8 MiB page cache into the daemon's memory. In a child
process it runs on a core of its own (docs/performance.md, "Fifth round").

How: the parent sends ``(request id, Store method, keyword arguments)`` over a pipe; the
child queues the method on its own ``Store``'s group writer and answers
``(request id, result, error)`` once the group is committed. Both ends send in batches
(``_Outbox``): what was queued while the last batch was being sent goes as one message,
so a burst of polls costs a few pipe writes and wake-ups instead of one each, and the
child writes a batch's feed rows (``record_poll``) with one executemany. Only the writes that go
through the group writer's queue are sent (``save_poll`` and ``record_poll``); every other
statement stays in the parent, and the machine-wide writer lock (``writerlock``) keeps
both processes taking turns.

Failure: if the child dies, every write it had not answered fails with a ``StoreError``
(its feeds are polled again, as after any failed commit), one error line is logged, and
later writes go to the parent's own group writer: nothing stops.
"""

from __future__ import annotations

import functools
import itertools
import logging
import multiprocessing
import pickle
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

from ..errors import AggregatorError, StoreError
from .groupwrite import settle

log = logging.getLogger(__name__)

#: the Store methods a parent may ask for (each queued on the child's group writer; the
#: ``_write_feed`` requests of one batch as one ``_write_feeds`` job)
METHODS = ("_save_poll", "_write_feed")


class WriterProcess:
    """The parent's end: ``submit`` a Store method, get a future for its result."""

    def __init__(self, url: str) -> None:
        context = multiprocessing.get_context("forkserver")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=serve, args=(url, child_conn), name="aggregator-store-writer", daemon=True
        )
        self._process.start()
        child_conn.close()
        self._ids = itertools.count()
        self._pending: dict[int, Future[Any]] = {}
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

    def submit(self, method: str, **kwargs: Any) -> Future[Any] | None:
        """Queue ``method(conn, **kwargs)`` in the child; None once the child is gone (the
        caller writes itself)."""
        future: Future[Any] = Future()
        with self._lock:
            if not self.alive:
                return None
            request = next(self._ids)
            try:
                data = _dumps((request, method, kwargs))
            except Exception:  # noqa: BLE001  (arguments that do not pickle: the caller writes itself)
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
            for request, result, error in batch:
                future = self._pending.pop(request, None)
                if future is not None:
                    settle(future, result, error)
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


def serve(url: str, conn: Connection) -> None:
    """The child: run the parent's writes on this process's group writer until told to
    stop (``None``) or the parent is gone, answering each once its group is committed."""
    from .store import open_store

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
    replies = _Outbox(conn, "aggregator-store-writer-replies")

    def answer(requests: list[int]) -> Callable[[Future[Any]], None]:
        def done(future: Future[Any]) -> None:
            error = future.exception()
            result = None if error else future.result()
            portable = _portable(error)
            for request in requests:
                reply = (request, result, portable)
                try:
                    data = _dumps(reply)
                except Exception as exc:  # noqa: BLE001  (an answer must reach the parent, or its poll waits for good)
                    data = _dumps((request, None, StoreError(f"unsendable result: {exc}")))
                replies.put(data)

        return done

    stop = False
    try:
        while not stop:
            try:
                batch = _loads_batch(conn.recv_bytes())
            except (EOFError, OSError):
                break
            feed_rows: list[int] = []  # requests of this batch that write a feed row only
            feed_updates: list[tuple[int, Any]] = []
            for message in batch:
                if message is None:
                    stop = True
                    break
                request, method, kwargs = message
                if method == "_write_feed":
                    feed_rows.append(request)
                    feed_updates.append((kwargs["feed_id"], kwargs["u"]))
                    continue
                if method not in METHODS:
                    failed: Future[Any] = Future()
                    failed.set_exception(StoreError(f"unknown store writer request {method!r}"))
                    answer([request])(failed)
                    continue
                queued = store.queue_write(functools.partial(getattr(store, method), **kwargs))
                assert queued is not None  # SQLite: the group writer is there
                queued.add_done_callback(answer([request]))
            if feed_rows:  # one job (one savepoint, one executemany) for all of them
                job = functools.partial(store._write_feeds, updates=feed_updates)
                queued = store.queue_write(job)
                assert queued is not None
                queued.add_done_callback(answer(feed_rows))
    finally:
        store.close(truncate_wal=False)  # the group writer finishes its queue first
        replies.close(None)
        conn.close()


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
