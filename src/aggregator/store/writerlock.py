"""SQLite's one writer, taken in turn by every thread and every process on the machine.

SQLite lets one connection write at a time. A writer that finds the database locked waits
in SQLite's busy handler, which sleeps and retries, up to 100 ms between tries. A process
that writes again as soon as it committed (the group writer, see groupwrite) takes the lock
back long before such a sleeper looks again, so another worker on the same database could
wait for seconds without a single write: no claim, and no lease renewal either, which would
let its leases lapse mid-poll. Seen in tests/test_workers.py: one of three workers polled
nothing while the other two polled 300 feeds.

So writers take turns through two advisory locks on a file beside the database
(``<database>-writer``), byte 0 the queue and byte 1 the write turn. A writer takes the
queue, then the turn, then lets go of the queue. While one process writes, the next waits
for the turn holding the queue, so when the writer comes back for another transaction it
blocks on the queue and the waiter goes first; the kernel wakes a waiter as soon as a lock
is released, instead of at its next retry. (One lock alone is not enough: the writer takes
it back before the woken waiter runs; tests/test_store.py has the case.) Threads of one
process queue on a ``threading.Lock`` before that (these locks belong to the process).
SQLite's own lock and busy timeout still guard against writers that do not take this turn
(the ``sqlite3`` shell, say).

The same file has a third byte, the readers' gate (``ReaderGate``): every read
transaction passes it (a shared lock taken and dropped at once), and the writer closes it
(exclusively) while it checkpoints the write-ahead log: readers that come then wait the
moment it takes, so that the readers already reading can finish and SQLite can empty the
log. Without it, many readers that overlap (``serve`` under load) always hold some old
snapshot between them, and the log grows without end (see ``checkpoint``).

POSIX record locks belong to a process and a file, not to a file descriptor: closing any
descriptor of the file drops every lock the process holds on it. So a process opens each
lock file once (``_LockFile``), shared by its stores' writer locks and readers' gates,
and closes it when the last of them is closed.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import ClassVar

_QUEUE, _TURN, _GATE = 0, 1, 2  # the bytes of the lock file locked (POSIX record locks)
GATE_RETRY_SECONDS = 10.0  # a reader whose lock file was missing looks for it again


class _LockFile:
    """One process's descriptor of one lock file, with what its threads share: the
    writer's turn and the readers' gate."""

    _open: ClassVar[dict[Path, _LockFile]] = {}
    _registry: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.writable = False
        self.users = 0
        self.turn = threading.Lock()  # this process's writers, in turn
        self.gate = threading.Condition()  # this process's readers and its checkpointer
        self.gate_closed = False
        self._looked_at = 0.0

    @classmethod
    def use(cls, path: Path) -> _LockFile:
        with cls._registry:
            found = cls._open.get(path)
            if found is None:
                found = cls._open[path] = _LockFile(path)
            found.users += 1
            return found

    def release(self) -> None:
        with _LockFile._registry:
            self.users -= 1
            if self.users > 0:
                return
            del _LockFile._open[self.path]
            with self.gate:
                if self.fd is not None:
                    os.close(self.fd)
                    self.fd = None

    def descriptor(self, *, write: bool) -> int | None:
        """The descriptor (created for a writer; a reader takes it as it is, read-only
        where it cannot write it, or None while there is none)."""
        with self.gate:
            if self.fd is not None and (self.writable or not write):
                return self.fd
            if not write and time.monotonic() - self._looked_at < GATE_RETRY_SECONDS:
                return self.fd
            self._looked_at = time.monotonic()
            flags = os.O_CLOEXEC | (os.O_RDWR | os.O_CREAT if write else os.O_RDWR)
            try:
                fd = os.open(self.path, flags, 0o644)
                writable = True
            except OSError:
                if write:
                    return self.fd  # a folder we cannot create files in
                try:
                    fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                    writable = False
                except OSError:
                    return None  # no writer has run yet: nothing to wait for
            if self.fd is not None:
                # a read-only descriptor replaced by a writable one: no lock is held on
                # the old one now (readers pass the gate under this condition's lock)
                os.close(self.fd)
            self.fd, self.writable = fd, writable
            return fd


class WriterLock:
    """A context manager: this process's threads, then the machine's processes, in turn."""

    def __init__(self, path: Path | None) -> None:
        self._file = _LockFile.use(path) if path is not None else None
        self._thread_lock = self._file.turn if self._file is not None else threading.Lock()
        self._closed = False

    def __enter__(self) -> WriterLock:
        self._thread_lock.acquire()
        try:
            fd = self._fd()
            if fd is not None:
                fcntl.lockf(fd, fcntl.LOCK_EX, 1, _QUEUE)
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX, 1, _TURN)
                finally:
                    fcntl.lockf(fd, fcntl.LOCK_UN, 1, _QUEUE)
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        try:
            fd = self._file.fd if self._file is not None else None
            if fd is not None:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, _TURN)
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        with self._thread_lock:
            if self._file is not None and not self._closed:
                self._closed = True
                self._file.release()

    def _fd(self) -> int | None:
        if self._file is None or self._closed:
            return None
        return self._file.descriptor(write=True)


class ReaderGate:
    """Read transactions ``pass_`` it as they begin; the checkpointer ``closes`` it
    while it empties the write-ahead log (see the module's doc)."""

    def __init__(self, path: Path | None) -> None:
        self._file = _LockFile.use(path) if path is not None else None
        self.waits = 0  # reads that found the gate closed (tests, diagnostics)

    def pass_(self) -> None:
        lock_file = self._file
        if lock_file is None:
            return
        with lock_file.gate:
            if lock_file.gate_closed:
                self.waits += 1
                lock_file.gate.wait_for(lambda: not lock_file.gate_closed)
            fd = lock_file.descriptor(write=False)
            if fd is not None:
                # waits while another process's checkpointer holds the gate
                fcntl.lockf(fd, fcntl.LOCK_SH, 1, _GATE)
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, _GATE)

    @contextmanager
    def closed(self, timeout: float = 1.0) -> Iterator[bool]:
        """Readers wait while this is open (the caller holds the writer lock); yields
        whether the gate could be closed within ``timeout`` seconds (readers of other
        processes hold it a moment each)."""
        lock_file = self._file
        if lock_file is None:
            yield False
            return
        with lock_file.gate:
            fd = lock_file.descriptor(write=False)
            if fd is None or not lock_file.writable:
                yield False
                return
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _GATE)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        yield False
                        return
                    time.sleep(0.001)
            lock_file.gate_closed = True
        try:
            yield True
        finally:
            with lock_file.gate:
                if lock_file.fd is not None:
                    fcntl.lockf(lock_file.fd, fcntl.LOCK_UN, 1, _GATE)
                lock_file.gate_closed = False
                lock_file.gate.notify_all()

    def close(self) -> None:
        if self._file is not None:
            self._file.release()
            self._file = None


def writer_lock_path(database: str | None) -> Path | None:
    """The lock file for an SQLite database path; None for in-memory and URI databases."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve().with_name(Path(database).name + "-writer")
