"""Queries and transactions. Rows never leave this module: it returns records."""

from __future__ import annotations

import ast
import functools
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.sql.dml import Update

from ..errors import StoreError
from ..records import (
    CleanEntry,
    FeedSpec,
    FeedState,
    FeedUpdate,
    KnownEntry,
    SaveResult,
    StoryCandidate,
    StoryDecision,
)
from . import events as event_outbox
from . import fingerprints, rebuild
from . import stories as story_queries
from .fingerprints import StoryRow
from .groupwrite import GroupWriter
from .outbox import Outbox
from .stories import StoryExplanation
from .tables import feeds, items, stories
from .writerlock import WriterLock, writer_lock_path
from .writerproc import WriterProcess

T = TypeVar("T")
Decide = Callable[[CleanEntry, Sequence[StoryCandidate], frozenset[int]], StoryDecision]
DEDUP_WINDOW = 14 * 86400.0  # seconds; the `dedup_window` setting
MIGRATION_LOCK_ID = 7_246_311  # pg_advisory_lock key for `db upgrade`
MIGRATION_TIMEOUT = 3600.0  # seconds a child process may take to migrate (upgrade_in_child)
# the child of ``upgrade_in_child``: the URL comes on stdin (it may hold a password), a
# StoreError's message goes to stderr as the last line
_CHILD_UPGRADE = """
import sys
from aggregator.errors import StoreError
from aggregator.store import open_store
try:
    store = open_store(sys.stdin.read())
    store.upgrade()
    store.close()
except StoreError as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)
"""
SYNC_LOCK_ID = 7_246_312  # pg_advisory_xact_lock key for syncing feeds.yaml into the table


def _migrations_dir() -> Path:
    packaged = Path(__file__).resolve().parent.parent / "_migrations"
    if (packaged / "env.py").exists():
        return packaged
    source = Path(__file__).resolve().parents[3] / "migrations"
    if (source / "env.py").exists():
        return source
    raise StoreError("the Alembic migrations folder is missing from this installation")


def _head_revisions() -> set[str] | None:
    """The migrations' head revision ids, read from the files (without importing Alembic,
    which costs ~40 MB and a few hundred ms at every start when nothing is to be done);
    None when a file cannot be read that way (Alembic then decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (_migrations_dir() / "versions").glob("*.py"):
        found: dict[str, object] = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            else:
                continue
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                try:
                    found[target.id] = ast.literal_eval(value)
                except ValueError:
                    return None
        revision, parent = found.get("revision"), found.get("down_revision")
        if not isinstance(revision, str):
            return None
        revisions.add(revision)
        if isinstance(parent, str):
            parents.add(parent)
        elif isinstance(parent, tuple | list):
            parents.update(str(p) for p in parent)
        elif parent is not None:
            return None
    heads = revisions - parents
    return heads if len(heads) == 1 else None


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


@dataclass(frozen=True)
class FeedRow:
    """A feed as the CLI shows it."""

    id: int
    url: str
    name: str | None
    enabled: bool
    removed: bool
    last_polled_at: datetime | None
    last_status: int | None
    last_error: str | None
    error_count: int
    next_check_at: datetime | None
    disabled_reason: str | None
    hold_until: datetime | None
    item_count: int
    not_found_since: datetime | None = None


class Store:
    """A handle on one database; thread-safe (one engine, short transactions)."""

    def __init__(self, engine: Engine, write_engine: Engine | None = None) -> None:
        self.engine = engine  # reads (and writes, unless write_engine is given)
        self._write_engine = write_engine or engine
        self.dialect = engine.dialect.name
        # SQLite has one writer: queue this process's threads and the machine's processes
        # here, in turn, rather than on the busy timeout (see writerlock). PostgreSQL takes
        # concurrent writers (row locks, advisory locks).
        self._writer: WriterLock | None = (
            WriterLock(writer_lock_path(engine.url.database)) if self.dialect == "sqlite" else None
        )
        self._write_lock: AbstractContextManager[object] = self._writer or nullcontext()
        # SQLite: polls are saved in groups, one transaction each (see groupwrite)
        self._group = GroupWriter(self._locked_tx, _db_errors) if self.dialect == "sqlite" else None
        self._remote: WriterProcess | None = None  # see start_writer_process

    def start_writer_process(self) -> bool:
        """SQLite database file: from now on, polls are saved by a group writer in a child
        process (see ``writerproc``); False where there is none to start (PostgreSQL, an
        in-memory or URI database)."""
        if self._group is None or writer_lock_path(self.engine.url.database) is None:
            return False
        if self._remote is None:
            self._remote = WriterProcess(self.engine.url.render_as_string(hide_password=False))
            # what this process still writes (claims, leases, feed settings) is small: its
            # writing connection gets a reader's page cache, not the group writer's
            if self._write_engine is not self.engine:
                self._write_engine.dispose()
                event.listen(self._write_engine, "connect", _small_cache)
        return True

    @property
    def writer_pid(self) -> int | None:
        """The writer process's pid, if one was started (tests, diagnostics)."""
        return self._remote.pid if self._remote is not None else None

    # ---- lifecycle -----------------------------------------------------------------
    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()
            self._remote = None
        if self._group is not None:
            self._group.close()
        if self._writer is not None:
            self._writer.close()
        self.dispose()

    def dispose(self) -> None:
        """Close the engines' pooled connections."""
        self.engine.dispose()
        if self._write_engine is not self.engine:
            self._write_engine.dispose()

    def upgrade(self, revision: str = "head") -> None:
        """Apply every Alembic migration up to ``revision`` (safe when several workers
        start at once)."""
        if revision == "head" and self._at_head():
            return
        self._migrate("upgrade", revision)

    def upgrade_in_child(self) -> None:
        """``upgrade``, run by a child process when there is anything to do: Alembic,
        Mako and Pygments (~14 MB) then never load into a daemon that runs for months.
        In-memory and URI SQLite databases are migrated in this process (a child would
        see another database)."""
        if self._at_head():
            return
        if self.dialect == "sqlite" and writer_lock_path(self.engine.url.database) is None:
            self._migrate("upgrade", "head")
            return
        url = self.engine.url.render_as_string(hide_password=False)
        try:
            done = subprocess.run(
                [sys.executable, "-c", _CHILD_UPGRADE],
                input=url,
                capture_output=True,
                text=True,
                timeout=MIGRATION_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StoreError(f"cannot migrate the database: {exc}") from None
        if done.returncode != 0:
            # the child's StoreError message, or an unexpected error's traceback's last line
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            raise StoreError(lines[-1])

    def downgrade(self, revision: str) -> None:
        """Undo the migrations after ``revision`` (for tests and rollbacks)."""
        self._migrate("downgrade", revision)

    def _at_head(self) -> bool:
        """Is the database at the migrations' head already?"""
        try:
            with self.engine.connect() as conn:
                current = {
                    r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))
                }
        except SQLAlchemyError:
            return False  # no version table yet (a new database) or unreadable: migrate
        heads = _head_revisions()
        return heads is not None and bool(current) and current == heads

    def _migrate(self, direction: str, revision: str) -> None:
        from alembic import command
        from alembic.config import Config as AlembicConfig
        from alembic.util.exc import CommandError

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(_migrations_dir()))
        # ConfigParser interpolation: a literal % must be doubled
        url = self.engine.url.render_as_string(hide_password=False).replace("%", "%%")
        cfg.set_main_option("sqlalchemy.url", url)
        try:
            # SQLite: one migrating process at a time, holding the write lock from its first
            # read of alembic_version (a deferred transaction that read first could not
            # write after another process's commit: "database is locked" at once)
            with self._write_lock, self._write_engine.connect() as conn:
                conn.execution_options(sqlite_immediate=True)
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_ID})
                    conn.commit()
                try:
                    cfg.attributes["connection"] = conn
                    getattr(command, direction)(cfg, revision)
                    conn.commit()
                finally:
                    if self.dialect == "postgresql":
                        conn.execute(
                            text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_ID}
                        )
                        conn.commit()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot migrate the database: {_short(exc)}") from None
        except CommandError as exc:  # e.g. a revision this version does not know (newer)
            raise StoreError(f"cannot migrate the database: {exc}") from None

    def ping(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise StoreError(f"the database does not answer: {_short(exc)}") from None

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        # On SQLite the write lock is taken up front (BEGIN IMMEDIATE, see open_store):
        # two writers queue on busy_timeout instead of failing on a stale snapshot.
        with _db_errors(), self._write_engine.connect() as conn:
            conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _locked_tx(self) -> Iterator[Connection]:
        with self._write_lock, self._tx() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with _db_errors(), self.engine.connect() as conn:
            yield conn

    # ---- feeds ---------------------------------------------------------------------
    def sync_feeds(self, specs: Sequence[FeedSpec], now: datetime) -> None:
        """Make the feeds table match the config: add new feeds, update settings, mark
        removed ones (their items are kept). A retired feed that was removed and added
        again is re-enabled."""
        with self._write_lock, self._tx() as conn:
            if self.dialect == "postgresql":
                # several workers starting at once sync the same config: one at a time
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SYNC_LOCK_ID})
            rows = conn.execute(select(feeds.c.id, *_SYNC_READ)).all()
            by_conf = {r.configured_url or r.url: r for r in rows}
            by_url = {r.url: r for r in rows}
            wanted = {s.url for s in specs}
            new_rows: list[dict[str, Any]] = []
            changes: list[tuple[int, dict[str, Any]]] = []
            for spec in specs:
                values: dict[str, Any] = {
                    "name": spec.name,
                    "type": spec.type,
                    "tags": list(spec.tags),
                    "enabled": spec.enabled,
                    "full_text": spec.full_text,
                    "interval_seconds": spec.interval,
                }
                row = by_conf.get(spec.url)
                if row is None and spec.url in by_url:
                    # the operator now lists the URL a confirmed redirect moved the feed to
                    row = by_url[spec.url]
                    values["configured_url"] = spec.url
                    wanted.add(row.configured_url or row.url)
                if row is None:
                    new_rows.append(
                        {
                            "url": spec.url,
                            "configured_url": spec.url,
                            "host": _host(spec.url),
                            "created_at": now,
                            "next_check_at": now,
                            "error_count": 0,
                            "redirect_count": 0,
                            **values,
                        }
                    )
                    continue
                # only what differs: a restart with an unchanged config writes nothing
                changed = {k: v for k, v in values.items() if getattr(row, k) != v}
                if row.removed_at is not None:
                    changed.update(removed_at=None, next_check_at=now)
                    if row.disabled_reason:
                        changed.update(disabled_reason=None, error_count=0, last_error=None)
                if changed:
                    changes.append((row.id, changed))
            if new_rows:
                conn.execute(insert(feeds), new_rows)
            for feed_id, changed in changes:
                conn.execute(update(feeds).where(feeds.c.id == feed_id).values(**changed))
            for conf, row in by_conf.items():
                if conf not in wanted and row.removed_at is None:
                    conn.execute(update(feeds).where(feeds.c.id == row.id).values(removed_at=now))

    def enable_feed(self, url: str, now: datetime) -> bool:
        """Clear a retirement (HTTP 410) or any disable reason; returns False if unknown."""
        with self._write_lock, self._tx() as conn:
            result = conn.execute(
                update(feeds)
                .where(or_(feeds.c.url == url, feeds.c.configured_url == url))
                .values(
                    disabled_reason=None,
                    error_count=0,
                    last_error=None,
                    next_check_at=now,
                    hold_until=None,
                    not_found_since=None,
                )
            )
            return bool(result.rowcount)

    def feed_states(
        self, now: datetime, *, due_only: bool = True, limit: int | None = None
    ) -> list[FeedState]:
        """Enabled, configured feeds; with ``due_only`` those whose next check has come."""
        query = select(feeds).where(*_ENABLED)
        if due_only:
            query = query.where(
                feeds.c.disabled_reason.is_(None),
                or_(feeds.c.next_check_at.is_(None), feeds.c.next_check_at <= now),
                or_(feeds.c.hold_until.is_(None), feeds.c.hold_until <= now),
            )
        query = query.order_by(feeds.c.next_check_at, feeds.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            return [_state(row) for row in conn.execute(query).mappings()]

    def count_enabled_feeds(self) -> int:
        """How many feeds ``feed_states(due_only=False)`` would return."""
        with self._read() as conn:
            return int(conn.execute(select(func.count()).where(*_ENABLED)).scalar_one())

    # ---- leases: several workers share one database -----------------------------------
    def claim_feeds(
        self,
        owner: str,
        now: datetime,
        *,
        limit: int,
        lease_seconds: float,
        force: bool = False,
        polled_before: datetime | None = None,
    ) -> list[FeedState]:
        """Claim up to ``limit`` due feeds for ``owner`` in ONE statement and lease them.

        PostgreSQL: ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING …``,
        so concurrent workers never claim the same feed. SQLite: the same statement inside
        ``BEGIN IMMEDIATE`` (one writer at a time). A lease that expired (its worker died)
        is claimable again. ``force`` (run --once) ignores next_check_at but never a
        retirement, a Retry-After hold or another worker's live lease. More than
        ``CLAIM_CHUNK`` feeds are claimed in several such statements, one after the
        other: SQLite holds every row an ``UPDATE … RETURNING`` returns in memory before
        the first (10 000 feeds at once: +37 MB for the process, for good).
        ``polled_before``: only feeds not polled since then (``run --once`` claiming as
        it goes does not take back the feeds it has polled already).
        """
        states: list[FeedState] = []
        while len(states) < limit:
            want = min(CLAIM_CHUNK, limit - len(states))
            chunk = self._claim(owner, now, want, lease_seconds, force, polled_before)
            states.extend(chunk)
            if len(chunk) < want:
                break
        states.sort(key=lambda s: (s.next_check_at or now, s.id))
        return states

    def _claim(
        self,
        owner: str,
        now: datetime,
        limit: int,
        lease_seconds: float,
        force: bool,
        polled_before: datetime | None = None,
    ) -> list[FeedState]:
        conditions = [
            feeds.c.removed_at.is_(None),
            feeds.c.enabled.is_(True),
            feeds.c.disabled_reason.is_(None),
            or_(feeds.c.hold_until.is_(None), feeds.c.hold_until <= now),
            or_(feeds.c.lease_expires_at.is_(None), feeds.c.lease_expires_at <= now),
        ]
        if not force:
            conditions.append(or_(feeds.c.next_check_at.is_(None), feeds.c.next_check_at <= now))
        if polled_before is not None:
            conditions.append(
                or_(feeds.c.last_polled_at.is_(None), feeds.c.last_polled_at < polled_before)
            )
        due = (
            select(feeds.c.id)
            .where(*conditions)
            .order_by(feeds.c.next_check_at.asc().nulls_first(), feeds.c.id)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        statement = (
            update(feeds)
            .where(feeds.c.id.in_(due.scalar_subquery()))
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds))
            .returning(*feeds.c)
        )
        with self._write_lock, self._tx() as conn:
            return [_state(row) for row in conn.execute(statement).mappings()]

    def renew_leases(
        self, owner: str, feed_ids: Sequence[int], now: datetime, lease_seconds: float
    ) -> int:
        """Extend this worker's leases on the feeds it is still polling."""
        if not feed_ids:
            return 0
        renewed = 0
        with self._write_lock, self._tx() as conn:
            for chunk in _id_chunks(feed_ids):
                result = conn.execute(
                    update(feeds)
                    .where(feeds.c.id.in_(chunk), feeds.c.lease_owner == owner)
                    .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
                )
                renewed += int(result.rowcount)
        return renewed

    def lease_owners(self) -> list[str]:
        with self._read() as conn:
            rows = conn.execute(
                select(feeds.c.lease_owner).where(feeds.c.lease_owner.is_not(None)).distinct()
            )
            return [str(r[0]) for r in rows]

    def release_leases(self, owner: str, feed_ids: Sequence[int] | None = None) -> None:
        """Give feeds back (a worker stopping, or polls abandoned) so others take them now."""
        query = update(feeds).where(feeds.c.lease_owner == owner)
        with self._write_lock, self._tx() as conn:
            if feed_ids is None:
                conn.execute(query.values(lease_owner=None, lease_expires_at=None))
                return
            for chunk in _id_chunks(feed_ids):
                conn.execute(
                    query.where(feeds.c.id.in_(chunk)).values(
                        lease_owner=None, lease_expires_at=None
                    )
                )

    def list_feeds(self) -> list[FeedRow]:
        counts = (
            select(items.c.feed_id, func.count().label("n")).group_by(items.c.feed_id).subquery()
        )
        query = (
            select(feeds, func.coalesce(counts.c.n, 0).label("item_count"))
            .select_from(feeds.outerjoin(counts, counts.c.feed_id == feeds.c.id))
            .order_by(feeds.c.id)
        )
        with self._read() as conn:
            return [
                FeedRow(
                    id=r.id,
                    url=r.url,
                    name=r.name,
                    enabled=r.enabled,
                    removed=r.removed_at is not None,
                    last_polled_at=r.last_polled_at,
                    last_status=r.last_status,
                    last_error=r.last_error,
                    error_count=r.error_count,
                    next_check_at=r.next_check_at,
                    disabled_reason=r.disabled_reason,
                    hold_until=r.hold_until,
                    item_count=r.item_count,
                    not_found_since=r.not_found_since,
                )
                for r in conn.execute(query)
            ]

    # ---- items ---------------------------------------------------------------------
    def known_entries(self, feed_id: int, keys: Sequence[str]) -> dict[str, KnownEntry]:
        found: dict[str, KnownEntry] = {}
        with self._read() as conn:
            for chunk in fingerprints._chunks(keys):
                rows = conn.execute(
                    select(items.c.entry_key, items.c.id, items.c.content_hash).where(
                        items.c.feed_id == feed_id, items.c.entry_key.in_(list(chunk))
                    )
                )
                for row in rows:
                    found[row.entry_key] = KnownEntry(row.id, row.content_hash)
        return found

    def save_poll(
        self,
        feed_id: int,
        update_: FeedUpdate,
        new: Sequence[CleanEntry] = (),
        changed: Sequence[tuple[int, CleanEntry]] = (),
        decide: Decide | None = None,
        *,
        dedup_window: float = DEDUP_WINDOW,
    ) -> SaveResult:
        """Write a poll (see ``_save_poll``). SQLite: in the group writer's next transaction
        (see ``groupwrite``). PostgreSQL: in a transaction of its own; one aborted as a
        deadlock or serialization victim is retried at once, up to three times."""
        queued = self.queue_save_poll(
            feed_id, update_, new, changed, decide, dedup_window=dedup_window
        )
        if queued is not None:
            return queued.result()
        args = _save_args(feed_id, update_, new, changed, decide, dedup_window)
        for attempt in range(3):
            try:
                with self._tx() as conn:
                    return self._save_poll(conn, **args)
            except StoreError as exc:
                cause = getattr(exc.__cause__, "orig", None)
                if getattr(cause, "sqlstate", None) not in ("40P01", "40001") or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _save_poll(
        self,
        conn: Connection,
        feed_id: int,
        update_: FeedUpdate,
        new: Sequence[CleanEntry] = (),
        changed: Sequence[tuple[int, CleanEntry]] = (),
        decide: Decide | None = None,
        *,
        dedup_window: float = DEDUP_WINDOW,
    ) -> SaveResult:
        """Write a poll's items and the feed's new state in ONE transaction.

        Each new item's story is decided against candidates first seen within
        ``dedup_window`` seconds (see ``fingerprints``)."""
        window = timedelta(seconds=dedup_window)
        new_items = new_stories = merged = 0
        now = update_.polled_at
        if new:
            fingerprints.lock(conn, new)
            feed_url = conn.execute(
                select(feeds.c.url).where(feeds.c.id == feed_id)
            ).scalar_one_or_none()
            keys = [c.entry.key for c in new]
            existing = {
                r.entry_key
                for r in conn.execute(
                    select(items.c.entry_key).where(
                        items.c.feed_id == feed_id, items.c.entry_key.in_(keys)
                    )
                )
            }
            todo: list[CleanEntry] = []
            for clean in new:
                if clean.entry.key in existing:
                    continue  # another worker stored it meanwhile
                existing.add(clean.entry.key)
                todo.append(clean)
            # Entries that share no URL and no LSH band with any stored item, nor with
            # an earlier entry of this poll, can have no candidate: they are new stories
            # for certain and are written in bulk. The others go through the full
            # per-item decision below, after the bulk rows before them are written.
            sites = [fingerprints.site_key(c.entry.link or feed_url) for c in todo]
            prefetch = fingerprints.Prefetch(todo, now - window, feed_id).load(conn, sites)
            batch = fingerprints.BatchIndex()  # every earlier entry of this poll
            unwritten = fingerprints.BatchIndex()  # those of them still in `pending`
            pending: list[tuple[CleanEntry, int | None]] = []
            merges = 0  # stories merged by this poll so far
            for index, clean in enumerate(todo):
                site = sites[index]
                if index not in prefetch.hits and not batch.matches(clean):
                    pending.append((clean, site))
                    prefetch.count(clean, site)
                    batch.add(clean)
                    unwritten.add(clean)
                    continue
                # an unwritten entry could be its candidate (or, when the database is
                # asked, have anchor counts not written yet): write them first
                if unwritten.matches(clean, anchors=merges > 0):
                    self._write_new_stories(conn, feed_id, pending, now, prefetch)
                    new_items += len(pending)
                    new_stories += len(pending)
                    pending = []
                    unwritten = fingerprints.BatchIndex()
                if merges:  # items moved between stories: ask the database
                    candidates = self._candidates(conn, clean, now - window, feed_id)
                    common = (
                        fingerprints.common_anchors(conn, clean, candidates, site)
                        if candidates
                        else frozenset()
                    )
                else:
                    candidates = prefetch.candidates(clean)
                    common = prefetch.common_anchors(clean, candidates, site)
                batch.add(clean)
                decision = (
                    decide(clean, candidates, common)
                    if decide is not None and candidates
                    else StoryDecision(None, 0.0, "new")
                )
                story_id = decision.story_id
                if decision.url_refusal and decision.url_refusal != clean.url_refusal:
                    clean = replace(clean, url_refusal=decision.url_refusal)
                if story_id is None:
                    # a new story after all: written in bulk like the certain ones
                    pending.append((clean, site))
                    prefetch.count(clean, site)
                    unwritten.add(clean)
                    continue
                merged += 1
                item_id = conn.execute(
                    insert(items)
                    .values(
                        feed_id=feed_id,
                        story_id=story_id,
                        dedup_reason=decision.reason,
                        dedup_score=decision.score,
                        dedup_item_id=decision.item_id,
                        dedup_url_refusal=clean.url_refusal,
                        first_seen_at=now,
                        updated_at=now,
                        **_item_values(clean),
                    )
                    .returning(items.c.id)
                ).scalar_one()
                fingerprints.index_item(conn, item_id, clean, now)
                if decision.merge_story_ids:
                    story_id, _ = fingerprints.merge_stories(conn, decision, item_id, now)
                    merges += 1
                else:
                    fingerprints.refresh_story(conn, story_id)
                prefetch.add(item_id, story_id, clean, now)
                new_items += 1
            if pending:
                self._write_new_stories(conn, feed_id, pending, now, prefetch)
                new_items += len(pending)
                new_stories += len(pending)
        for item_id, clean in changed:
            values = _item_values(clean)
            values.pop("entry_key")
            if values["page_canonical_url"] is None:
                del values["page_canonical_url"]
            if clean.article is None:
                # keep what the page gave (text, author, date, image) unless the feed
                # now says something itself; refresh feed-derived text only
                values = {
                    k: v
                    for k, v in values.items()
                    if k != "language"
                    and not (k in ("author", "published_at", "image_url") and v is None)
                }
                conn.execute(
                    update(items)
                    .where(
                        items.c.id == item_id,
                        or_(items.c.text_source.is_(None), items.c.text_source == "feed"),
                    )
                    .values(updated_at=now, **values)
                )
                values = {k: v for k, v in values.items() if k not in ("text", "text_source")}
            conn.execute(
                update(items).where(items.c.id == item_id).values(updated_at=now, **values)
            )
        self._write_feed(conn, feed_id, update_)
        # OUTBOX HOOK (store/events.py): story.new / story.sources_reached / item.new
        # events of this poll's new items (after the feed row: its title is news too),
        # written in this same transaction
        event_outbox.record_poll(conn, feed_id, [c.entry.key for c in new], now)
        return SaveResult(new_items, len(changed), new_stories, merged)

    def record_poll(self, feed_id: int, update_: FeedUpdate) -> None:
        queued = self.queue_record_poll(feed_id, update_)
        if queued is not None:
            queued.result()
            return
        with self._tx() as conn:
            self._write_feed(conn, feed_id, update_)

    def queue_record_poll(self, feed_id: int, update_: FeedUpdate) -> Future[None] | None:
        """``record_poll`` without blocking (see ``queue_write``)."""
        return self._queue_call("_write_feed", feed_id=feed_id, u=update_)

    def queue_save_poll(
        self,
        feed_id: int,
        update_: FeedUpdate,
        new: Sequence[CleanEntry] = (),
        changed: Sequence[tuple[int, CleanEntry]] = (),
        decide: Decide | None = None,
        *,
        dedup_window: float = DEDUP_WINDOW,
    ) -> Future[SaveResult] | None:
        """``save_poll`` without blocking (see ``queue_write``)."""
        return self._queue_call(
            "_save_poll", **_save_args(feed_id, update_, new, changed, decide, dedup_window)
        )

    def _queue_call(self, method: str, **kwargs: Any) -> Future[Any] | None:
        """``method(conn, **kwargs)`` queued for a group writer: the writer process's
        when one runs (see ``start_writer_process``), else this process's (see
        ``queue_write``)."""
        if self._remote is not None:
            remote = self._remote.submit(method, **kwargs)
            if remote is not None:
                return remote
        return self.queue_write(functools.partial(getattr(self, method), **kwargs))

    def queue_write(self, job: Callable[[Connection], T]) -> Future[T] | None:
        """SQLite: ``job`` queued for the group writer's next transaction, as a future that
        resolves once that transaction committed; callers on an event loop wait on it
        without holding a thread. None when there is no writer queue (PostgreSQL): call the
        blocking method instead."""
        if self._group is None:
            return None
        return self._group.submit(job)

    def _write_feed(self, conn: Connection, feed_id: int, u: FeedUpdate) -> None:
        self._write_feeds(conn, [(feed_id, u)])

    def _write_feeds(self, conn: Connection, updates: Sequence[tuple[int, FeedUpdate]]) -> None:
        """Several polls' feed rows: those of one shape (the same columns set) in one
        executemany; a poll that moves the feed (a permanent redirect) or holds it (or
        its host) goes on its own, after those rows."""
        # OUTBOX HOOK (store/events.py): feed.failing / recovered / retired / redirected
        # events, computed from the rows' old values (so: before they are updated)
        event_outbox.record_feed_changes(conn, updates)
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        alone: list[tuple[int, FeedUpdate]] = []
        for feed_id, u in updates:
            if u.new_url is not None or u.hold_until is not None:
                alone.append((feed_id, u))
                continue
            values = _feed_values(u)
            shapes.setdefault(tuple(values), []).append(
                {"v_feed_id": feed_id, **{f"v_{k}": v for k, v in values.items()}}
            )
        for columns, rows in shapes.items():
            conn.execute(_feed_update(columns), rows)
        for feed_id, u in alone:
            self._write_one_feed(conn, feed_id, u)

    def _write_one_feed(self, conn: Connection, feed_id: int, u: FeedUpdate) -> None:
        values = _feed_values(u)
        if u.new_url is not None:
            clash = conn.execute(
                select(feeds.c.id).where(feeds.c.url == u.new_url, feeds.c.id != feed_id)
            ).first()
            if clash is None:
                values["url"] = u.new_url
                values["host"] = _host(u.new_url)
                values["redirect_url"] = None
                values["redirect_count"] = 0
                values["redirect_seen_at"] = None
        conn.execute(
            _feed_update(tuple(values)),
            {"v_feed_id": feed_id, **{f"v_{k}": v for k, v in values.items()}},
        )
        if u.hold_until is not None:
            hold = u.hold_until
            host_filter = feeds.c.id == feed_id
            if u.hold_host:
                host_filter = or_(host_filter, feeds.c.host == u.hold_host)
            conn.execute(
                update(feeds)
                .where(host_filter, or_(feeds.c.hold_until.is_(None), feeds.c.hold_until < hold))
                .values(hold_until=hold)
            )
            conn.execute(
                update(feeds)
                .where(
                    host_filter,
                    or_(feeds.c.next_check_at.is_(None), feeds.c.next_check_at < hold),
                )
                .values(next_check_at=hold)
            )

    def _candidates(
        self, conn: Connection, clean: CleanEntry, since: datetime, feed_id: int
    ) -> list[StoryCandidate]:
        return fingerprints.candidates(conn, clean, since, feed_id)

    def _write_new_stories(
        self,
        conn: Connection,
        feed_id: int,
        pending: Sequence[tuple[CleanEntry, int | None]],
        now: datetime,
        prefetch: fingerprints.Prefetch,
    ) -> None:
        """Items that start a story each: stories, items, index rows and anchor counts in
        a handful of executemany statements (what the per-item path does, in bulk)."""
        story_ids = (
            conn.execute(
                insert(stories).returning(stories.c.id, sort_by_parameter_order=True),
                [
                    {
                        "title": clean.entry.title,
                        "url": clean.entry.link,
                        "canonical_url": clean.canonical_url,
                        "first_seen_at": now,
                        "last_seen_at": now,
                        "item_count": 1,
                    }
                    for clean, _site in pending
                ],
            )
            .scalars()
            .all()
        )
        # a plain executemany, then the ids by the (feed, entry key) unique index: cheaper
        # than SQLAlchemy's multi-row INSERT … RETURNING for rows this wide
        conn.execute(
            insert(items),
            [
                {
                    "feed_id": feed_id,
                    "story_id": story_id,
                    "dedup_reason": "new",
                    "dedup_score": 0.0,
                    "dedup_item_id": None,
                    "dedup_url_refusal": clean.url_refusal,
                    "first_seen_at": now,
                    "updated_at": now,
                    **_item_values(clean),
                }
                for (clean, _site), story_id in zip(pending, story_ids, strict=True)
            ],
        )
        keys = [clean.entry.key for clean, _site in pending]
        by_key: dict[str, int] = {}
        for chunk in fingerprints._chunks(keys):
            rows = conn.execute(
                select(items.c.entry_key, items.c.id).where(
                    items.c.feed_id == feed_id, items.c.entry_key.in_(chunk)
                )
            )
            by_key.update((key, item_id) for key, item_id in rows)
        item_ids = [by_key[key] for key in keys]
        fingerprints.index_items(
            conn,
            [(item_id, clean) for (clean, _s), item_id in zip(pending, item_ids, strict=True)],
            now,
        )
        conn.execute(
            update(stories)
            .where(stories.c.id == bindparam("b_story"))
            .values(representative_item_id=bindparam("b_item")),
            [
                {"b_story": story_id, "b_item": item_id}
                for story_id, item_id in zip(story_ids, item_ids, strict=True)
            ],
        )
        fingerprints.count_anchors_many(conn, pending, now)
        for (clean, _site), story_id, item_id in zip(pending, story_ids, item_ids, strict=True):
            prefetch.add(item_id, story_id, clean, now)

    def outbox(self) -> Outbox:
        """Webhook subscriptions, deliveries and the ``events`` commands
        (``store/outbox.py``), in this store's transactions."""
        return Outbox(self._locked_tx, self._read, self.dialect)

    # ---- reporting -----------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self._read() as conn:
            return {
                "feeds": int(conn.execute(select(func.count()).select_from(feeds)).scalar_one()),
                "items": int(conn.execute(select(func.count()).select_from(items)).scalar_one()),
                "stories": int(
                    conn.execute(select(func.count()).select_from(stories)).scalar_one()
                ),
            }

    def count_stories_since(self, since: datetime) -> int:
        with self._read() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(stories)
                    .where(and_(stories.c.first_seen_at >= since))
                ).scalar_one()
            )

    # ---- stories (dedup) -------------------------------------------------------------
    def list_stories(
        self, since: datetime, *, min_sources: int = 1, limit: int = 200
    ) -> list[StoryRow]:
        """Stories first seen since ``since`` with at least ``min_sources`` feeds."""
        with self._read() as conn:
            return story_queries.list_stories(conn, since, min_sources, limit)

    def explain_story(self, story_id: int) -> StoryExplanation | None:
        """A story with each item's decision and the merges it went through; a story
        that was merged away is followed to the story it is part of now."""
        with self._read() as conn:
            return story_queries.explain_story(conn, story_id)

    def rebuild_stories(self, **kwargs: Any) -> rebuild.RebuildResult:
        """Re-decide the stories of stored items, in short transactions (see
        ``store/rebuild.py`` for the arguments)."""
        return rebuild.rebuild(self._locked_tx, self._read, **kwargs)

    def prune_dedup(self, before: datetime, *, batch: int = 1000) -> int:
        """Drop dedup index rows older than ``before`` (now - dedup_window): band rows
        of items first seen before it, anchor counts not refreshed since. In short
        transactions (``batch`` items' band rows, or one site's counts, each), so the
        writers of new polls wait for one of them at most; returns the rows removed."""
        removed = 0
        with self._read() as conn:
            span = fingerprints.band_items_to_prune(conn, before)
        if span is not None:
            for first in range(span[0], span[1] + 1, batch):
                last = min(first + batch - 1, span[1])
                with self._write_lock, self._tx() as conn:
                    removed += fingerprints.prune_bands(conn, first, last, before)
        site: int | None = None
        while True:
            with self._read() as conn:
                site = fingerprints.next_anchor_site(conn, site)
            if site is None:
                return removed
            with self._write_lock, self._tx() as conn:
                removed += fingerprints.prune_anchors(conn, site, before)


def _save_args(
    feed_id: int,
    update_: FeedUpdate,
    new: Sequence[CleanEntry],
    changed: Sequence[tuple[int, CleanEntry]],
    decide: Decide | None,
    dedup_window: float,
) -> dict[str, Any]:
    """``Store._save_poll``'s keyword arguments (also sent to the writer process)."""
    return {
        "feed_id": feed_id,
        "update_": update_,
        "new": new,
        "changed": changed,
        "decide": decide,
        "dedup_window": dedup_window,
    }


def _state(row: Any) -> FeedState:
    return FeedState(
        id=row["id"],
        url=row["url"],
        configured_url=row["configured_url"],
        etag=row["etag"],
        last_modified=row["last_modified"],
        error_count=row["error_count"],
        last_status=row["last_status"],
        next_check_at=row["next_check_at"],
        disabled_reason=row["disabled_reason"],
        hold_until=row["hold_until"],
        interval_seconds=row["adaptive_interval_seconds"],
        redirect_url=row["redirect_url"],
        redirect_count=row["redirect_count"],
        redirect_seen_at=row["redirect_seen_at"],
        not_found_since=row["not_found_since"],
    )


def _item_values(clean: CleanEntry) -> dict[str, Any]:
    entry = clean.entry
    article = clean.article
    return {
        "entry_key": entry.key,
        "guid": entry.guid,
        "url": entry.link,
        "canonical_url": clean.canonical_url,
        "page_canonical_url": clean.page_canonical_url,
        "title": entry.title,
        "author": entry.author or (article.author if article else None),
        "published_at": entry.published or (article.published if article else None),
        "summary": clean.summary,
        "content": clean.content,
        "text": clean.text,
        "text_source": "article" if article is not None else "feed",
        "language": article.language if article else None,
        "image_url": entry.image or (article.image if article else None),
        "content_hash": clean.content_hash,
        # the shingles of THIS text (None when it changed and was not fingerprinted again:
        # dedup then recomputes them from the text)
        "shingles": (clean.fingerprint.shingles if clean.fingerprint else None),
    }


def redact_url(url: str) -> str:
    """The database URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


@contextmanager
def _db_errors() -> Iterator[None]:
    """Connection-level failures become StoreError (an expected failure: the daemon retries);
    constraint violations and programming errors stay bugs."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise StoreError(f"database unavailable: {_short(exc)}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreError(f"database connection lost: {_short(exc)}") from exc
        raise


def _short(exc: BaseException) -> str:
    message = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return message[0] if message else type(exc).__name__


@functools.lru_cache(maxsize=64)
def _feed_update(columns: tuple[str, ...]) -> Update:
    """UPDATE feeds SET the columns WHERE id = :v_feed_id, built once per column set: every
    poll ends with one, and building and keying a new statement each time cost more than
    running it (warm polls of 2000 feeds, docs/performance.md)."""
    return (
        update(feeds)
        .where(feeds.c.id == bindparam("v_feed_id"))
        .values({c: bindparam(f"v_{c}", type_=feeds.c[c].type) for c in columns})
    )


def _feed_values(u: FeedUpdate) -> dict[str, Any]:
    """The feed row's columns a poll sets (which ones depends on the poll)."""
    values: dict[str, Any] = {
        "last_polled_at": u.polled_at,
        "last_status": u.status,
        "last_error": u.error,
        "error_count": u.error_count,
        "next_check_at": u.next_check_at,
        "redirect_url": u.redirect_url,
        "redirect_count": u.redirect_count,
        "redirect_seen_at": u.redirect_seen_at,
        "not_found_since": u.not_found_since,
        "lease_owner": None,  # the poll is done: release the lease
        "lease_expires_at": None,
    }
    if u.ok:
        values["last_success_at"] = u.polled_at
    if not u.keep_validators:
        values["etag"] = u.etag
        values["last_modified"] = u.last_modified
    if u.disabled_reason is not None:
        values["disabled_reason"] = u.disabled_reason
    if u.interval_seconds is not None:
        values["adaptive_interval_seconds"] = u.interval_seconds
    if u.title is not None:
        values["title"] = u.title
    return values


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


# what sync_feeds compares with the config (and the feed's identity and removal)
_SYNC_READ = (
    feeds.c.url,
    feeds.c.configured_url,
    feeds.c.removed_at,
    feeds.c.disabled_reason,
    feeds.c.name,
    feeds.c.type,
    feeds.c.tags,
    feeds.c.enabled,
    feeds.c.full_text,
    feeds.c.interval_seconds,
)

_ENABLED = (feeds.c.removed_at.is_(None), feeds.c.enabled.is_(True))  # configured, enabled
CLAIM_CHUNK = 500  # feeds claimed per statement (see claim_feeds)
ID_CHUNK = 256  # ids per "id IN (...)" of the lease statements (see _id_chunks)
READ_CACHE_KIB = 1024  # SQLite page cache of each reading connection
WRITE_CACHE_KIB = 8192  # and of the one writing connection


def _small_cache(dbapi_conn: Any, _record: Any) -> None:
    """After ``_sqlite_connections``' own: a reader's page cache (see
    ``start_writer_process``)."""
    dbapi_conn.execute(f"PRAGMA cache_size=-{READ_CACHE_KIB}")


def _sqlite_connections(engine: Engine, *, cache_kib: int) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        _wal_mode(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA cache_size=-{int(cache_kib)}")  # KiB (SQLite's default: 2 MiB)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def open_store(url: str, *, pool_size: int = 5) -> Store:
    """Open (not migrate) the database at ``url``; SQLite folders are created."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"invalid database URL {url!r}") from None
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            folder = Path(database).expanduser().resolve().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the database folder {folder}: {exc}") from None
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    elif parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs.update(pool_size=pool_size, max_overflow=pool_size)
    try:
        engine = create_engine(parsed, **kwargs)
        write_engine = None
        if engine.dialect.name == "sqlite":
            # SQLite writes one at a time (see writerlock): one connection for them, with a
            # larger page cache that stays warm from one group to the next; readers get
            # small caches (each pooled connection holds its own)
            on_disk = writer_lock_path(parsed.database) is not None  # not :memory: nor a URI
            _sqlite_connections(engine, cache_kib=READ_CACHE_KIB if on_disk else WRITE_CACHE_KIB)
            if on_disk:
                write_engine = create_engine(parsed, **kwargs, pool_size=1, max_overflow=0)
                _sqlite_connections(write_engine, cache_kib=WRITE_CACHE_KIB)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"cannot open database {url!r}: {exc}") from None
    store = Store(engine, write_engine)
    try:
        store.ping()
    except StoreError:
        store.dispose()
        raise
    except OperationalError as exc:
        store.dispose()
        raise StoreError(f"cannot open database {url!r}: {_short(exc)}") from None
    return store


def _id_chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    """``ids`` in lists of exactly ``ID_CHUNK`` (the last one padded by repeating an id).

    An ``IN`` list is rendered with one placeholder per value, and each distinct statement
    stays prepared in the connection's statement cache (128 per connection). Lease
    renewals over every feed a worker holds, with a different count each time, kept up to
    128 statements of thousands of variables each: memory that grew with the number of
    feeds. One shape is prepared once."""
    for chunk in fingerprints._chunks(sorted(set(ids)), ID_CHUNK):
        yield [*chunk, *[chunk[-1]] * (ID_CHUNK - len(chunk))]
