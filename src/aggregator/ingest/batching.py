"""``BatchingSaver``: SQLite's save path, polls written in groups by one writer thread.

SQLite writes one transaction at a time, and in WAL mode every page a transaction touches
is written whole to the log; the dedup index is keyed by hash, so one poll's rows land on
pages all over it. The group writer (``groupwrite``) writes the polls waiting for it in
ONE transaction, a savepoint each, so they share those page writes. A caller's future
resolves once its group is committed; a failure is remembered for its feed (``faults``).

``submit_all`` takes several polls at once (the writer process's batches): those without
entries share one job, one executemany per shape of feed row.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING

from ..records import PollToSave, SavePlan, SaveResult
from ..store import Store
from ..store.database import db_errors
from ..store.search import BATCH, INDEX_EVERY
from .direct import DEDUP_WINDOW, index_for_search
from .feedsave import save_feed_rows
from .groupwrite import GroupWriter, settle
from .plan import ahead, plan_url

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from .journal import Journal


class BatchingSaver:
    def __init__(
        self,
        store: Store,
        *,
        window: float = DEDUP_WINDOW,
        max_jobs: int = 64,
        max_seconds: float = 1.0,
        planner: Executor | None = None,
        journal: bool = False,
    ) -> None:
        self.store = store
        self.window = window
        # story decisions planned in ``planner`` (a process pool) against a snapshot,
        # checked by the writer against its journal (``plan``)
        self.planner = planner
        self.plan_url = plan_url(store)
        # the writer's journal, which plans are checked against (made with the first
        # save): with a planner, or when plans come from elsewhere (the writer process)
        self.keeps_journal = journal or (planner is not None and self.plan_url is not None)
        self.journal: Journal | None = None
        self.writer = GroupWriter(
            store.locked_tx,
            db_errors,
            max_jobs=max_jobs,
            max_seconds=max_seconds,
            after_commit=self._after_commit,
            after_failure=self._after_failure,
        )
        self._indexed_at = time.monotonic()
        self._unindexed = 0  # items saved since the last indexing pass (about)

    async def save(self, poll: PollToSave) -> SaveResult:
        plan = await ahead(self.planner, self.plan_url, poll, self.window)
        return await asyncio.wrap_future(self.submit(poll, plan))

    def submit(self, poll: PollToSave, plan: SavePlan | None = None) -> Future[SaveResult]:
        """Queue ``poll`` for the next group: a future of its result once committed;
        ``plan``: its decisions, taken ahead (``plan``), if the journal accepts them."""
        future = self.writer.submit(functools.partial(_save, poll, plan, self.window, self))
        self._watch(future, [poll])
        future.add_done_callback(functools.partial(_count, self))
        return future

    def submit_all(
        self, polls: Sequence[PollToSave], plans: Sequence[SavePlan | None] | None = None
    ) -> list[Future[SaveResult]]:
        """Queue several polls; those without entries as one job (one savepoint)."""
        futures: dict[int, Future[SaveResult]] = {}
        feed_only = [(n, p) for n, p in enumerate(polls) if p.feed_only]
        for number, poll in enumerate(polls):
            if not poll.feed_only:
                futures[number] = self.submit(poll, plans[number] if plans else None)
        if feed_only:
            rows = self.writer.submit(functools.partial(_save_feed_rows, [p for _, p in feed_only]))
            self._watch(rows, [p for _, p in feed_only])
            for number, _poll in feed_only:
                futures[number] = _fan_out(rows)
        return [futures[n] for n in range(len(polls))]

    def _watch(self, future: Future[SaveResult], polls: Sequence[PollToSave]) -> None:
        # before the caller's own callbacks: a failure is known when its poll ends
        for poll in polls:
            future.add_done_callback(
                functools.partial(self.store.failures.watch, poll.feed_id, poll.update.polled_at)
            )

    def close(self) -> None:
        """Write what is queued, stop the writer thread, then index what is left for
        search."""
        self.writer.close()
        index_for_search(self.store, everything=True)

    def _after_commit(self) -> None:
        """The writer's upkeep after a commit: the write-ahead log kept small, and the
        new items indexed for search every ``INDEX_EVERY`` seconds (or once a batch is
        waiting), in transactions of their own."""
        self.store.keep_wal_small()
        due = time.monotonic() - self._indexed_at >= INDEX_EVERY
        if due or self._unindexed >= BATCH:
            self._indexed_at = time.monotonic()
            self._unindexed = 0
            index_for_search(self.store)

    def _after_failure(self) -> None:
        """The writer's: a save or a group rolled back, so the journal may hold what was
        never committed (``ingest.journal``)."""
        if self.journal is not None:
            self.journal.reset()

    @property
    def plans(self) -> tuple[int, int]:
        """Plans (``ingest.plan``) the writer took, and refused (deciding itself)."""
        journal = self.journal
        return (0, 0) if journal is None else (journal.accepted, journal.refused)

    @property
    def cpu_seconds(self) -> float:
        return self.writer.cpu_seconds


def _save(
    poll: PollToSave, plan: SavePlan | None, window: float, saver: BatchingSaver, conn: Connection
) -> SaveResult:
    if poll.feed_only:
        save_feed_rows(conn, [poll])
        return SaveResult()
    from . import journal  # dedup (and numpy) load with the first poll that has entries
    from . import poll as saving

    if saver.journal is None and saver.keeps_journal:
        saver.journal = journal.Journal()
    return saving.save_poll(conn, poll, window, plan, saver.journal)


def _count(saver: BatchingSaver, future: Future[SaveResult]) -> None:
    if not future.cancelled() and future.exception() is None:
        saver._unindexed += future.result().new_items


def _save_feed_rows(polls: Sequence[PollToSave], conn: Connection) -> SaveResult:
    save_feed_rows(conn, polls)
    return SaveResult()


def _fan_out(shared: Future[SaveResult]) -> Future[SaveResult]:
    """A future of its own for each poll of a shared job."""
    own: Future[SaveResult] = Future()
    shared.add_done_callback(
        lambda done: settle(own, None if done.exception() else done.result(), done.exception())
    )
    return own
