"""``aggregator run`` with the store's lease calls timed (used by ``run.py``).

    python benchmarks/scaling/worker.py run --config feeds.yaml --database URL

runs the unmodified daemon (``aggregator.cli.main``) after wrapping a few calls with a
stopwatch: the store's lease calls (``claim_feeds``, ``renew_leases``, ``release_leases``,
``lease_owners``) and ``sync_feeds``; the PostgreSQL save path, ``DirectSaver.save_now``
(recorded as ``save_poll``: a poll's whole transaction, retries included) and, inside it,
``store.index.lock`` (recorded as ``advisory_lock``: the statement that takes the poll's
advisory locks on its band keys, sites and URLs, i.e. the time a save waits for another
daemon's save of the same site or story). For each call it records the wall time, and for
the lease calls the part spent waiting for the store's in-process write lock
(``Store.write_lock``). On exit the figures go to the JSON file named by
``$SCALING_STATS``. The wrappers cost two ``perf_counter`` calls each.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from aggregator.cli import main
from aggregator.ingest import direct as direct_module
from aggregator.store import index as index_module
from aggregator.store import store as store_module

LEASE_CALLS = ("claim_feeds", "renew_leases", "release_leases", "lease_owners")
OTHER_CALLS = ("sync_feeds",)
SAVE_CALLS = ("save_poll", "record_poll", "advisory_lock")  # record_poll: kept at 0
_guard = threading.Lock()
_local = threading.local()
STATS: dict[str, dict[str, float]] = {
    name: {"calls": 0, "seconds": 0.0, "lock_wait": 0.0, "rows": 0}
    for name in LEASE_CALLS + OTHER_CALLS + SAVE_CALLS
}
# every claim: (wall clock at its end, rows, seconds, of which waiting for the write lock)
CLAIMS: list[tuple[float, int, float, float]] = []


class TimedLock:
    """The store's own ``write_lock`` (SQLite: the machine-wide writer turn; PostgreSQL: a
    no-op), with the time spent entering it added to the call being timed in this thread.
    It must wrap, not replace, that lock: a real lock here would serialize a PostgreSQL
    daemon's saves, which the daemon itself does not do."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __enter__(self) -> object:
        started = time.perf_counter()
        got = self._inner.__enter__()
        if getattr(_local, "call", None) is not None:
            _local.wait += time.perf_counter() - started
        return got

    def __exit__(self, *exc: Any) -> Any:
        return self._inner.__exit__(*exc)


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        outer = getattr(_local, "call", None), getattr(_local, "wait", 0.0)
        _local.call, _local.wait = name, 0.0
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - started
            wait = _local.wait
            _local.call, _local.wait = outer
        rows = len(result) if isinstance(result, list) else 0
        with _guard:
            s = STATS[name]
            s["calls"] += 1
            s["seconds"] += elapsed
            s["lock_wait"] += wait
            s["rows"] += rows
            if name == "claim_feeds":
                CLAIMS.append((time.time(), rows, elapsed, wait))
        return result

    return wrapper


def _instrument() -> None:
    store_cls = store_module.Store
    original_init = store_cls.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.write_lock = TimedLock(self.write_lock)

    store_cls.__init__ = init  # type: ignore[method-assign]
    for name in LEASE_CALLS + OTHER_CALLS:
        setattr(store_cls, name, _timed(name, getattr(store_cls, name)))
    saver = direct_module.DirectSaver
    saver.save_now = _timed("save_poll", saver.save_now)  # type: ignore[method-assign]
    index_module.lock = _timed("advisory_lock", index_module.lock)


def _dump() -> None:
    path = os.environ.get("SCALING_STATS")
    if path:
        with _guard:
            data = {"pid": os.getpid(), "stats": STATS, "claims": CLAIMS}
        with open(path, "w") as fh:
            json.dump(data, fh)


if __name__ == "__main__":
    _instrument()
    atexit.register(_dump)
    sys.argv = ["aggregator", *sys.argv[1:]]
    main()
