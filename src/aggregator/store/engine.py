"""Opening a database: the URL, the engines, and the settings of each SQLite connection.

URLs: ``sqlite:///path/to.db`` and ``postgresql://user@host/db`` (``postgres://``, the
form most hosting services hand out, is read as PostgreSQL); anything else is refused
with the right form in the message, not with a driver's import error.

SQLite, written (``aggregator run``, ``db upgrade``): the folder is created; the file is
refused at once, as read-only, when its mount or its permissions forbid writing. One
connection writes (a larger page cache); the write-ahead log is kept small (see
``checkpoint``). SQLite, read (``serve``, ``export``, ``stories``, ``feeds list``): the file
must exist (a mistyped path is an error, not a new empty database), and is opened
read-only (``mode=ro``); on a read-only mount where SQLite cannot open the log's index
(``-shm``), immutable (``immutable=1``: nothing can write it there).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from ..errors import StoreError
from .faults import DatabaseReadOnly
from .writerlock import ReaderGate, writer_lock_path

FORMS = "sqlite:///path/to.db or postgresql://user@host/db"
READ_CACHE_KIB = 1024  # SQLite page cache of each reading connection
WRITE_CACHE_KIB = 8192  # and of the one writing connection
BUSY_TIMEOUT_MS = 30000  # how long a connection waits for a lock
# The write-ahead log: SQLite checkpoints it after a commit that leaves more than
# WAL_AUTOCHECKPOINT pages in it (passively: as far as readers allow); once it is larger
# than WAL_LIMIT bytes the store checkpoints it fully and truncates it (``checkpoint``),
# and SQLite cuts a log it restarts back to WAL_LIMIT (journal_size_limit).
WAL_AUTOCHECKPOINT = 4096  # pages (16 MiB of 4 KiB pages; SQLite's default is 1000)
WAL_LIMIT = 64 * 1024 * 1024
_SQLITE_DRIVERS = ("sqlite", "sqlite+pysqlite")
_POSTGRES_DRIVERS = ("postgresql", "postgresql+psycopg", "postgres")


def redact_url(url: str) -> str:
    """The database URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def parse_url(url: str) -> URL:
    """``url`` as SQLAlchemy takes it (``postgres://`` and ``postgresql://`` on psycopg 3);
    a StoreError naming the right form for a bare path or a scheme we do not support."""
    text = url.strip()
    if "://" not in text:
        raise StoreError(
            f"{text!r} is not a database URL: for an SQLite file write sqlite:///{text} "
            "(sqlite:///relative/path.db, sqlite:////absolute/path.db), for PostgreSQL "
            "postgresql://user@host/db"
        )
    try:
        parsed = make_url(text)
    except ArgumentError:
        raise StoreError(f"invalid database URL {redact_url(text)!r}: use {FORMS}") from None
    if parsed.drivername in _SQLITE_DRIVERS:
        return parsed
    if parsed.drivername in _POSTGRES_DRIVERS:
        return parsed.set(drivername="postgresql+psycopg")
    raise StoreError(
        f"unsupported database URL scheme {parsed.drivername + '://'!r} in "
        f"{redact_url(text)!r}: aggregator stores in SQLite or PostgreSQL ({FORMS})"
    )


def sqlite_file(parsed: URL) -> Path | None:
    """The file of an SQLite URL; None for in-memory and ``file:`` URI databases."""
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database:
        return None
    if database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve()


@dataclass(frozen=True)
class Engines:
    engine: Engine  # reads (and writes, unless ``write`` is set)
    write: Engine | None  # SQLite file opened for writing: its one writing connection
    read_only: bool
    gate: ReaderGate | None = None  # SQLite file: its read transactions pass it


def open_engines(url: str, *, pool_size: int = 5, read_only: bool = False) -> Engines:
    """The engines for ``url`` (nothing is connected yet, but for a read-only SQLite file,
    which is probed once to choose how to open it)."""
    parsed = parse_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    path = sqlite_file(parsed)
    try:
        if parsed.get_backend_name() == "postgresql":
            kwargs.update(pool_size=pool_size, max_overflow=pool_size)
            return Engines(create_engine(parsed, **kwargs), None, read_only)
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        if path is None:  # in memory, or a URI the operator wrote: as given
            engine = create_engine(parsed, **kwargs)
            sqlite_connections(engine, cache_kib=WRITE_CACHE_KIB, wal=True)
            return Engines(engine, None, read_only)
        if read_only:
            uri = _read_only_uri(path)
            kwargs["creator"] = lambda: sqlite3.connect(
                uri, uri=True, timeout=30, check_same_thread=False
            )
            del kwargs["connect_args"]
            engine = create_engine(parsed, **kwargs)
            gate = ReaderGate(writer_lock_path(str(path)))
            sqlite_connections(engine, cache_kib=READ_CACHE_KIB, wal=False, gate=gate)
            return Engines(engine, None, True, gate)
        _check_writable(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the database folder {path.parent}: {exc}") from None
        # SQLite writes one at a time (see writerlock): one connection for them, with a
        # larger page cache that stays warm from one group to the next; readers get
        # small caches (each pooled connection holds its own)
        gate = ReaderGate(writer_lock_path(str(path)))
        engine = create_engine(parsed, **kwargs)
        sqlite_connections(engine, cache_kib=READ_CACHE_KIB, wal=True, gate=gate)
        write = create_engine(parsed, **kwargs, pool_size=1, max_overflow=0)
        sqlite_connections(write, cache_kib=WRITE_CACHE_KIB, wal=True, gate=gate)
        return Engines(engine, write, False, gate)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"cannot open database {redact_url(url)!r}: {exc}") from None


def no_database(path: Path) -> StoreError:
    return StoreError(
        f"no database at {path} (run `aggregator db upgrade` or `aggregator run` first)"
    )


def _read_only_uri(path: Path) -> str:
    """How to open ``path`` for reading: ``mode=ro``, or ``immutable=1`` where the file
    cannot change (a read-only mount or folder) and SQLite cannot open it otherwise (a
    WAL database whose ``-shm`` index is missing there and cannot be created), unless its
    ``-wal`` holds changes (immutable would not read them: refused with the reason)."""
    if not path.is_file():
        raise no_database(path)
    base = "file:" + quote(str(path), safe="/")
    uri = base + "?mode=ro"
    try:
        probe = sqlite3.connect(uri, uri=True, timeout=30)
        try:
            probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return uri
        finally:
            probe.close()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_CANTOPEN:
            raise StoreError(f"cannot read the database {path}: {exc}") from None
        if not _unchangeable(path):
            raise StoreError(f"cannot read the database {path}: {exc}") from None
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        # immutable would read the file without its log: silently missing what is in it
        raise StoreError(
            f"cannot read the database {path}: its write-ahead log {wal.name} holds changes "
            f"not yet in the file, and SQLite cannot open its index ({path.name}-shm) in this "
            "read-only place; open it once where it can be written (aggregator db upgrade) "
            "so that SQLite folds the log in"
        )
    return base + "?immutable=1"


def _unchangeable(path: Path) -> bool:
    """Nothing can write ``path``: its file system is mounted read-only, or its folder
    takes no new files (a WAL writer needs its ``-wal`` and ``-shm`` there)."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    return not os.access(path.parent, os.W_OK)


def _check_writable(path: Path) -> None:
    """Refuse, as a permanent error, a database file that cannot be written: on a
    read-only mount, without write permission, or in a folder that takes no new files."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # a new file: its folder (or the first that exists)
    try:
        read_only_mount = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except OSError:
        return
    if read_only_mount:
        raise DatabaseReadOnly(
            f"the database {path} is on a read-only file system: `aggregator run` and "
            "`db upgrade` must write it (serve, export, stories and feeds list can read it)"
        )
    if not path.exists():
        return  # created by the first connection
    if not os.access(path, os.W_OK):
        raise DatabaseReadOnly(
            f"the database file {path} is not writable by this user: `aggregator run` and "
            "`db upgrade` must write it (serve, export, stories and feeds list can read it)"
        )
    if not os.access(path.parent, os.W_OK):
        raise DatabaseReadOnly(
            f"the folder {path.parent} is not writable by this user: SQLite writes "
            f"{path.name}-wal and {path.name}-shm beside the database"
        )


def sqlite_connections(
    engine: Engine, *, cache_kib: int, wal: bool, gate: ReaderGate | None = None
) -> None:
    """Every connection of ``engine``: our own BEGINs, a busy timeout, foreign keys, the
    page cache; ``wal``: the file switched to WAL, and the log's limits (a read-only
    connection leaves the file as it is); ``gate``: passed by each read transaction as it
    begins (see ``writerlock.ReaderGate``)."""

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if wal:
            # a new file: freed pages can be given back (retention, store/retention.py);
            # an existing file keeps its mode until a VACUUM (its first retention pass)
            if cursor.execute("PRAGMA page_count").fetchone()[0] == 0:
                cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
            _wal_mode(cursor)
            cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
            cursor.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        else:
            cursor.execute("PRAGMA query_only=1")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA cache_size=-{int(cache_kib)}")  # KiB (SQLite's default: 2 MiB)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        if conn.get_execution_options().get("sqlite_immediate"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        if gate is not None:
            gate.pass_()
        conn.exec_driver_sql("BEGIN")


def probe_write(conn: Connection) -> None:
    """Raise (``DatabaseReadOnly`` once wrapped) if SQLite refuses to write through
    ``conn``; nothing is changed (the user version is set to itself, then rolled back)."""
    conn.execution_options(sqlite_immediate=True)
    transaction = conn.begin()
    try:
        version = conn.exec_driver_sql("PRAGMA user_version").scalar_one()
        conn.exec_driver_sql(f"PRAGMA user_version={int(version)}")
    finally:
        transaction.rollback()


def small_cache(dbapi_conn: Any, _record: Any) -> None:
    """After ``sqlite_connections``' own: a reader's page cache (see
    ``Store.start_writer_process``)."""
    dbapi_conn.execute(f"PRAGMA cache_size=-{READ_CACHE_KIB}")


def _wal_mode(cursor: Any, attempts: int = 600) -> None:
    """Switch a new database file to WAL (persistent: later connections find it set).
    Switching takes the file exclusively, and SQLite answers "database is locked" at once,
    without its busy handler, while other processes are connecting to the same new file
    (workers started together): retry for up to 30 s."""
    for attempt in range(attempts):
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)
