"""The database handle: engines, transactions and the write turn (no queries here).

``Database`` is the base of ``Store`` (``store.py``): one reading engine and, for an
SQLite file, one writing connection; ``tx`` is a write transaction (``BEGIN IMMEDIATE``
on SQLite), ``locked_tx`` the same inside the machine-wide write turn (``writerlock``),
``read`` a read transaction. Database errors become ``StoreError`` in one place
(``db_errors``; the storage's cause is named by ``faults``). The aggregate mixins
(``feeds``, ``leases``, ``items``, ``reports``, ``migrate``, ``index``) run their SQL in
these transactions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from ..errors import StoreError
from . import faults
from .checkpoint import wal_keeper
from .engine import WAL_LIMIT, probe_write, small_cache, sqlite_file
from .writerlock import ReaderGate, WriterLock, writer_lock_path


class Database:
    """A handle on one database; thread-safe (one engine, short transactions)."""

    def __init__(
        self,
        engine: Engine,
        write_engine: Engine | None = None,
        *,
        read_only: bool = False,
        wal_limit: int = WAL_LIMIT,
        gate: ReaderGate | None = None,
    ) -> None:
        self.engine = engine  # reads (and writes, unless write_engine is given)
        self.write_engine = write_engine or engine
        self.dialect = engine.dialect.name
        self.read_only = read_only  # opened for reading only (serve, export, …)
        writes_sqlite = self.dialect == "sqlite" and not read_only
        # SQLite has one writer: queue this process's threads and the machine's processes
        # here, in turn, rather than on the busy timeout (see writerlock). PostgreSQL takes
        # concurrent writers (row locks, advisory locks).
        self._writer: WriterLock | None = (
            WriterLock(writer_lock_path(engine.url.database)) if writes_sqlite else None
        )
        self.write_lock: AbstractContextManager[object] = self._writer or nullcontext()
        # SQLite file: the write-ahead log is checkpointed once past wal_limit (checkpoint)
        self._wal = wal_keeper(sqlite_file(engine.url) if writes_sqlite else None, wal_limit)
        self._gate = gate  # read transactions pass it; closed while the log is emptied
        # polls whose writes failed, until recorded on their feeds (see faults)
        self.failures = faults.FailedPolls()

    @property
    def one_writer(self) -> bool:
        """SQLite (one writer at a time): writes are best grouped (see ``ingest``)."""
        return self.dialect == "sqlite" and not self.read_only

    @property
    def file_path(self) -> str | None:
        """The SQLite database file (None: PostgreSQL, in memory, a URI)."""
        if self.dialect != "sqlite" or writer_lock_path(self.engine.url.database) is None:
            return None
        return self.engine.url.database

    def record_failures(self) -> int:
        """Record the polls whose writes failed on their feeds (see ``faults``; before
        each claim); a StoreError keeps them for the next call. Returns how many."""
        polls = self.failures.take()
        if not polls:
            return 0
        try:
            with self.locked_tx() as conn:
                faults.record(conn, polls)
        except StoreError:
            self.failures.put_back(polls)
            raise
        self.failures.succeeded()
        return len(polls)

    def use_small_write_cache(self) -> None:
        """SQLite: this process's writes are few (claims, leases, feed settings: the polls
        are written by another process, see ``ingest.process``): its writing connection
        gets a reader's page cache, not the group writer's."""
        if self.dialect == "sqlite" and self.write_engine is not self.engine:
            self.write_engine.dispose()
            event.listen(self.write_engine, "connect", small_cache)

    # ---- lifecycle -----------------------------------------------------------------
    def close(self, *, truncate_wal: bool = True) -> None:
        """``truncate_wal``: empty the write-ahead log first (see ``keep_wal_small``)."""
        with contextlib.suppress(StoreError):  # logged when they failed
            self.record_failures()
            if truncate_wal and self._wal is not None and self._wal.size() > 0:
                self.keep_wal_small(wait_ms=500)  # even if readers keep the file open
        if self._writer is not None:
            self._writer.close()
        if self._gate is not None:
            self._gate.close()
        self.dispose()

    def keep_wal_small(self, *, wait_ms: int | None = None) -> None:
        """SQLite file: checkpoint and truncate the write-ahead log once it is larger than
        its limit (after each group commit; see ``checkpoint``); ``wait_ms``: now, waiting
        that long for readers."""
        keeper = self._wal
        if keeper is None or (wait_ms is None and not keeper.due()):
            return
        gate = self._gate.closed() if self._gate is not None else nullcontext(False)
        with self.write_lock, gate, db_errors(), self.write_engine.connect() as conn:
            keeper.checkpoint(conn, wait_ms=wait_ms)

    def check_writable(self) -> None:
        """``DatabaseReadOnly`` if the database takes no writes (see ``engine``)."""
        if self.dialect == "sqlite":
            with self.write_lock, db_errors(), self.write_engine.connect() as conn:
                probe_write(conn)

    def dispose(self) -> None:
        """Close the engines' pooled connections."""
        self.engine.dispose()
        if self.write_engine is not self.engine:
            self.write_engine.dispose()

    def ping(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise StoreError(f"the database does not answer: {faults.short(exc)}") from None

    # ---- transactions ----------------------------------------------------------------
    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """A write transaction. On SQLite the write lock is taken up front (BEGIN
        IMMEDIATE, see ``engine``): two writers queue on busy_timeout instead of failing
        on a stale snapshot."""
        with db_errors(), self.write_engine.connect() as conn:
            conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                yield conn

    @contextmanager
    def locked_tx(self) -> Iterator[Connection]:
        """``tx`` inside the machine-wide write turn (SQLite; see ``writerlock``)."""
        with self.write_lock, self.tx() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with db_errors(), self.engine.connect() as conn:
            yield conn


@contextmanager
def db_errors() -> Iterator[None]:
    """Connection-level failures become StoreError (an expected failure: the daemon retries);
    constraint violations and programming errors stay bugs."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise faults.store_error(exc, "database unavailable") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise faults.store_error(exc, "database connection lost") from exc
        raise


def in_transaction(conn: Connection) -> bool:
    """Is the SQLite connection under ``conn`` still inside its transaction? (SQLite rolls
    a whole transaction back by itself on some errors: a full disk, an I/O error.)"""
    dbapi = conn.connection.dbapi_connection
    return bool(getattr(dbapi, "in_transaction", True))
