"""``DirectSaver``: each poll in a transaction of its own, in a thread.

The save path of PostgreSQL, where several workers write at once (row locks on the
rows of the poll's dedup keys make a copy wait for its original, see ``poll``): a
transaction aborted as a deadlock or serialization victim is tried again at once, up to
three times. The new items are indexed for search (``store.search``) after a save, in a
transaction of their own, every ``INDEX_EVERY`` seconds at most, and when it closes. Also
``save_now``, the same blocking call for commands, tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Executor

from ..errors import StoreError
from ..records import PollToSave, SaveResult
from ..store import Store
from ..store.search import INDEX_EVERY
from .feedsave import save_feed_rows

log = logging.getLogger(__name__)
DEDUP_WINDOW = 14 * 86400.0  # seconds; the `dedup_window` setting's default
RETRIED = ("40P01", "40001")  # PostgreSQL: deadlock detected, serialization failure


class DirectSaver:
    def __init__(
        self, store: Store, *, window: float = DEDUP_WINDOW, executor: Executor | None = None
    ) -> None:
        self.store = store
        self.window = window
        self.executor = executor  # threads that wait on the database (None: the loop's)
        self._indexed_at = -INDEX_EVERY  # monotonic time of the last indexing pass
        self._unindexed = False  # new items saved since the last pass began
        self._indexing = threading.Lock()

    async def save(self, poll: PollToSave) -> SaveResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.save_now, poll)

    def save_now(self, poll: PollToSave) -> SaveResult:
        """Save ``poll`` now, blocking; a failure is remembered for its feed (``faults``)."""
        for attempt in range(3):
            try:
                with self.store.locked_tx() as conn:
                    if poll.feed_only:
                        save_feed_rows(conn, [poll])
                        saved = SaveResult()
                    else:
                        # dedup (and numpy) load with the first poll that has entries
                        from . import poll as saving

                        saved = saving.save_poll(conn, poll, self.window)
                self.store.failures.succeeded()
                if saved.new_items:
                    self._unindexed = True
                    self._index_if_due()
                return saved
            except StoreError as exc:
                cause = getattr(exc.__cause__, "orig", None)
                if getattr(cause, "sqlstate", None) not in RETRIED or attempt == 2:
                    self.store.failures.failed(poll.feed_id, poll.update.polled_at, exc)
                    raise
        raise AssertionError("unreachable")

    def _index_if_due(self) -> None:
        """One indexing pass, unless one ran less than ``INDEX_EVERY`` seconds ago or
        another thread runs one now."""
        if time.monotonic() - self._indexed_at < INDEX_EVERY:
            return
        if not self._indexing.acquire(blocking=False):
            return
        try:
            self._indexed_at = time.monotonic()
            self._unindexed = False
            index_for_search(self.store)
        finally:
            self._indexing.release()

    def close(self) -> None:
        """Index what its saves left queued for search (its threads are the caller's to
        stop)."""
        with self._indexing:
            if self._unindexed:
                self._unindexed = False
                index_for_search(self.store, everything=True)


def index_for_search(store: Store, *, everything: bool = False) -> None:
    """Index the new items for search (``store.search``). The poll is committed whatever
    happens here: a failure leaves them queued for the next pass."""
    try:
        store.index_search(everything=everything)
    except StoreError as exc:
        log.warning(
            "new items not indexed for search yet: %s",
            exc,
            extra={"event": "search_index_error", "error": str(exc)},
        )


def save_now(store: Store, poll: PollToSave, *, window: float = DEDUP_WINDOW) -> SaveResult:
    """Save one poll in a transaction of its own (commands, tests, benchmarks)."""
    return DirectSaver(store, window=window).save_now(poll)
