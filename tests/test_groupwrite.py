"""The SQLite group writer: polls queued while a group is written share one transaction,
each poll stays all-or-nothing, and a failed commit fails every poll of its group."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, event, text

from aggregator.ingest.groupwrite import GroupWriter


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[object]:
    eng = create_engine(f"sqlite:///{tmp_path / 'g.db'}")

    @event.listens_for(eng, "connect")
    def _connect(dbapi_conn: object, _record: object) -> None:
        dbapi_conn.isolation_level = None  # type: ignore[attr-defined]
        dbapi_conn.execute("PRAGMA foreign_keys=ON")  # type: ignore[attr-defined]

    @event.listens_for(eng, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        conn.execute(
            text("CREATE TABLE t (n INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent(id))")
        )
    yield eng
    eng.dispose()


def writer(engine: object) -> GroupWriter:
    @contextmanager
    def transaction() -> Iterator[Connection]:
        with engine.connect() as conn, conn.begin():  # type: ignore[attr-defined]
            yield conn

    return GroupWriter(transaction, nullcontext)


def stored(engine: object) -> set[int]:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        return {r[0] for r in conn.execute(text("SELECT n FROM t"))}


def insert(n: int, *, fail: bool = False, release: threading.Event | None = None) -> object:
    def job(conn: Connection) -> int:
        if release is not None:
            release.wait(10)
        conn.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
        if fail:
            raise ValueError(f"poll {n} failed")
        return n

    return job


def run_all(group: GroupWriter, jobs: list[object]) -> dict[int, object]:
    """Submit every job from a thread of its own (as the daemon's polls do)."""
    results: dict[int, object] = {}

    def submit(i: int, job: object) -> None:
        try:
            results[i] = group.run(job)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001  (the test looks at it)
            results[i] = exc

    threads = [threading.Thread(target=submit, args=(i, j)) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
        time.sleep(0.01)  # the first job is running (and blocked) before the others queue
    return results, threads  # type: ignore[return-value]


def test_queued_polls_share_one_transaction_and_fail_alone(engine: object) -> None:
    group = writer(engine)
    release = threading.Event()
    jobs = [insert(0, release=release)] + [insert(n, fail=n == 7) for n in range(1, 20)]
    results, threads = run_all(group, jobs)  # type: ignore[misc]
    time.sleep(0.2)
    release.set()
    for t in threads:
        t.join(10)
    group.close()
    assert group.groups == 1  # the 19 that queued while the first ran joined its group
    assert isinstance(results[7], ValueError)
    assert all(results[n] == n for n in range(20) if n != 7)
    assert stored(engine) == set(range(20)) - {7}  # the failed poll's savepoint rolled back


def test_a_failed_commit_fails_every_poll_of_the_group(engine: object) -> None:
    group = writer(engine)
    release = threading.Event()

    def dangling(conn: Connection) -> int:  # a foreign key checked only at COMMIT
        conn.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
        conn.execute(text("INSERT INTO t (n, parent) VALUES (100, 999)"))
        return 100

    jobs = [insert(0, release=release), insert(1), dangling, insert(2)]
    results, threads = run_all(group, jobs)  # type: ignore[misc]
    time.sleep(0.2)
    release.set()
    for t in threads:
        t.join(10)
    assert all(isinstance(results[i], Exception) for i in range(4))  # one group, all failed
    assert stored(engine) == set()
    # the writer goes on after a failed group
    assert group.run(insert(5)) == 5  # type: ignore[arg-type]
    group.close()
    assert stored(engine) == {5}
    assert group.groups == 1


def test_a_caller_that_gave_up_does_not_stop_the_writer(engine: object) -> None:
    """A poll cancelled at shutdown cancels the future it awaited; the group is still
    committed and the writer goes on with the next one."""
    group = writer(engine)
    release = threading.Event()
    abandoned = group.submit(insert(1, release=release))  # type: ignore[arg-type]
    time.sleep(0.05)
    assert abandoned.cancel()  # as asyncio.wrap_future does for a cancelled task
    release.set()
    assert group.submit(insert(2)).result(timeout=10) == 2  # type: ignore[arg-type]
    group.close()
    assert stored(engine) == {1, 2}
