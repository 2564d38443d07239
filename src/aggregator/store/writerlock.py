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
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType

_QUEUE, _TURN = 0, 1  # the bytes of the lock file locked (POSIX record locks)


class WriterLock:
    """A context manager: this process's threads, then the machine's processes, in turn."""

    def __init__(self, path: Path | None) -> None:
        self._thread_lock = threading.Lock()
        self._path = path
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        self._thread_lock.acquire()
        try:
            fd = self._file()
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
            if self._fd is not None:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, _TURN)
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        with self._thread_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _file(self) -> int | None:
        if self._fd is None and self._path is not None:
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError:
                # a folder we cannot create files in: SQLite's busy timeout alone orders writers
                self._path = None
        return self._fd


def writer_lock_path(database: str | None) -> Path | None:
    """The lock file for an SQLite database path; None for in-memory and URI databases."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve().with_name(Path(database).name + "-writer")
