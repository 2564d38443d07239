"""Keeping SQLite's write-ahead log small while readers read.

SQLite appends every commit to the log (``<database>-wal``) and copies it back into the
database at checkpoints. Its automatic checkpoint is passive: it copies only what no
reader still needs, and the log starts again from its beginning only once everything was
copied and no reader uses it. Under a steady read load (``serve`` answering many clients,
long exports) some reader always holds an older snapshot, so the log only grows: 0 to
372 MB in 33 s in one test, with a 118 MB database, and it stayed at that size.

So after a commit that leaves the log larger than its limit, the writer checkpoints it
fully and truncates it (``PRAGMA wal_checkpoint(TRUNCATE)``): SQLite stops new writers,
waits for the readers of older snapshots to finish (new readers go on), copies the log
and empties it. The wait is bounded: 1 s while the log is under twice its limit, longer
as it grows (5 s, then 30 s), so a checkpoint that readers keep from completing is tried
again a few seconds later, or as soon as the log has grown by another limit (a fast writer
fills a 2 MiB limit ten times over in 5 s), with more patience, and the writer is never
held long while the log is small. ``journal_size_limit`` (set on every connection, see
``engine``) cuts a log SQLite restarted by itself back to the same limit.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from .engine import BUSY_TIMEOUT_MS

log = logging.getLogger("aggregator.store")

RETRY_SECONDS = 5.0  # after a checkpoint that readers kept from completing


class WalKeeper:
    """The write-ahead log of one SQLite database file, checkpointed past ``limit`` bytes."""

    def __init__(self, database: Path, limit: int) -> None:
        self.wal = database.with_name(database.name + "-wal")
        self.limit = limit
        self._retry_at = 0.0
        self._retry_size = 0  # or once the log has grown to this size, if sooner
        self.truncated = 0  # completed checkpoints (tests, diagnostics)
        self.incomplete = 0  # checkpoints readers kept from completing

    def size(self) -> int:
        try:
            return self.wal.stat().st_size
        except OSError:
            return 0

    def due(self) -> bool:
        size = self.size()
        return size > self.limit and (
            time.monotonic() >= self._retry_at or size >= self._retry_size
        )

    def checkpoint(self, conn: Connection, *, wait_ms: int | None = None) -> bool:
        """Copy the log into the database and truncate it; ``conn``: a writing connection
        outside any transaction (the caller holds the writer lock). True if done."""
        size = self.size()
        if wait_ms is None:
            wait_ms = 1000 if size < 2 * self.limit else 5000 if size < 4 * self.limit else 30000
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        try:
            dbapi.execute(f"PRAGMA busy_timeout={int(wait_ms)}")
            try:
                busy, frames, copied = dbapi.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                dbapi.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except (sqlite3.Error, SQLAlchemyError) as exc:
            busy, frames, copied = 1, -1, -1
            log.debug("WAL checkpoint failed: %s", exc, extra={"event": "wal_checkpoint"})
        if busy:
            self.incomplete += 1
            self._retry_at = time.monotonic() + RETRY_SECONDS
            self._retry_size = self.size() + self.limit
            log.debug(
                "WAL checkpoint incomplete (readers): %d of %d frames copied, log %d bytes",
                copied,
                frames,
                self.size(),
                extra={"event": "wal_checkpoint", "wal_bytes": self.size()},
            )
            return False
        self.truncated += 1
        return True


def wal_keeper(database: Path | None, limit: int) -> WalKeeper | None:
    """A keeper for an SQLite file opened for writing (None for anything else)."""
    if database is None or limit <= 0:
        return None
    return WalKeeper(database, limit)
