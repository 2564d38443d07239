"""Running polls: one-shot runs and the daemon (APScheduler 3.x).

The daemon runs one tick job that asks the store which feeds are due and starts a
poll for each (within the concurrency limits), a config-reload job, and the
scheduled exports. Feed state lives in the database, so a restart picks up exactly
where things were.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import app, pooljobs
from .config import Config, ExportModel, cron_trigger, load_config
from .errors import AggregatorError, ConfigError, StoreError
from .fetch import Fetcher
from .pipeline import FetchPort, crash_sentence
from .records import FeedSpec, FeedState, PollOutcome
from .store import Store, is_permanent
from .store.queries import Queries
from .store.schedule import poll_schedule
from .webhooks import Sender
from .websub.subscriber import PostPort, Subscriber

if TYPE_CHECKING:
    # imported where used: a one-shot run needs neither APScheduler nor prometheus_client,
    # and the HTTP server and the exports load only when configured
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.cron import CronTrigger

    from .ingest.prune import PruneReport
    from .metrics import Metrics
    from .server import EmbeddedServer

T = TypeVar("T")
log = logging.getLogger("aggregator.daemon")
PRUNE_INTERVAL = 6 * 3600.0  # seconds between prunes of the dedup index
PRUNE_DELAY = 600.0  # the first, after start-up's catch-up polls
SHUTDOWN_GRACE = 7.0  # seconds in-flight polls get to finish after SIGTERM


RUN_ONCE_CHUNK = 500  # feeds run --once claims at a time (see Runner.run_once)


def utcnow() -> datetime:
    return datetime.now(UTC)


def log_crash(state: FeedState, exc: BaseException) -> None:
    """A bug that got past a poll's own error boundary: critical, with its traceback."""
    log.critical(
        "poll of %s crashed (a bug): %s: %s",
        state.url,
        type(exc).__name__,
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"event": "poll_crashed", "feed": state.url, "feed_id": state.id},
    )


def worker_id() -> str:
    """Names this process in feed leases: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class RunSummary:
    feeds: int = 0
    polled: int = 0
    not_modified: int = 0
    failed: int = 0
    skipped: int = 0
    new_items: int = 0
    updated_items: int = 0
    new_stories: int = 0
    merged_items: int = 0
    duration: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def add(self, outcome: PollOutcome) -> None:
        self.polled += 1
        if not outcome.ok:
            self.failed += 1
            self.failures.append((outcome.feed_url, outcome.error or "failed"))
        elif outcome.not_modified:
            self.not_modified += 1
        self.new_items += outcome.new_items
        self.updated_items += outcome.updated_items
        self.new_stories += outcome.new_stories
        self.merged_items += outcome.merged_items


class Runner:
    """Owns the fetcher, the process pool and the pipeline for one process."""

    def __init__(
        self,
        config: Config,
        store: Store,
        pool: Executor | None = None,
        metrics: Metrics | None = None,
        fetcher: FetchPort | None = None,
        writer_process: bool = False,
        saver: app.Saver | None = None,
    ):
        self.config = config
        self.store = store
        self.metrics = metrics
        # ``fetcher``: another fetch component (the caller owns it); else our own Fetcher
        self.app = app.build(
            config,
            store,
            pool=pool,
            metrics=metrics,
            fetcher=fetcher,
            saver=saver,
            writer_process=writer_process,
        )
        self.pipeline = self.app.pipeline
        self.specs = {spec.url: spec for spec in config.feeds}
        self._slots = asyncio.Semaphore(config.settings.concurrency)
        self.owner = worker_id()
        self._lease_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leases")
        self.active: set[int] = set()  # feeds this worker holds a lease on and is polling
        # WebSub: the hub requests go through our fetcher (the address guard), or, when
        # another fetch component was given that cannot POST, through one of our own
        self._fetcher: FetchPort | None = fetcher or self.app.own_fetcher
        self._hub_fetcher: Fetcher | None = None
        self._subscriber: Subscriber | None = None

    def apply_config(self, config: Config) -> None:
        self.config = config
        self.specs = {spec.url: spec for spec in config.feeds}
        self.pipeline.settings = replace(
            self.pipeline.settings, push_poll_interval=app.push_poll_interval(config)
        )

    @property
    def subscriber(self) -> Subscriber:
        """The WebSub subscriber of this worker (made on first use)."""
        if self._subscriber is None:
            poster = self._fetcher
            if not isinstance(poster, PostPort):
                self._hub_fetcher = Fetcher(app.fetch_limits(self.config))
                poster = self._hub_fetcher
            self._subscriber = Subscriber(
                self.store, poster, lambda: self.config.settings.websub, self.owner
            )
        return self._subscriber

    async def websub_pass(self, *, reconcile: bool = False) -> None:
        """Send the WebSub requests that are due (``reconcile``: first end the
        subscriptions of feeds that left the config, restart those of feeds back in it).
        A database failure is logged; the next pass retries."""
        if self.config.settings.websub is None:
            return
        try:
            if reconcile:
                await self.subscriber.reconcile()
            await self.subscriber.run_due()
        except StoreError as exc:
            log.warning(
                "WebSub subscriptions not handled: %s",
                exc,
                extra={"event": "websub_error", "error": str(exc)},
            )

    def spec_for(self, state: FeedState) -> FeedSpec | None:
        return self.specs.get(state.configured_url or state.url)

    async def poll(self, state: FeedState) -> PollOutcome | None:
        spec = self.spec_for(state)
        if spec is None:
            return None
        self.active.add(state.id)
        try:
            async with self._slots:
                outcome = await self.pipeline.poll(spec, state, utcnow())
        except Exception as exc:  # noqa: BLE001 - logged as critical, with its traceback
            # the pipeline records a bug on its feed; this is a bug in that recording
            log_crash(state, exc)
            outcome = PollOutcome(state.url, None, ok=False, error=crash_sentence(exc))
        finally:
            self.active.discard(state.id)
        if self.metrics is not None:
            self.metrics.observe_poll(outcome)
        if outcome.push_hub and outcome.push_topic and self.config.settings.websub is not None:
            await self.subscriber.discovered(state.id, outcome.push_hub, outcome.push_topic)
        return outcome

    @property
    def lease_seconds(self) -> float:
        return self.config.settings.lease_seconds

    async def _lease_call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # lease statements get a thread of their own: they must not queue behind saves in
        # the default executor (a renewal that waits can let a lease lapse mid-poll)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._lease_thread, partial(fn, *args, **kwargs))

    async def claim(
        self, limit: int, *, force: bool = False, polled_before: datetime | None = None
    ) -> list[FeedState]:
        return await self._lease_call(
            self.store.claim_feeds,
            self.owner,
            utcnow(),
            limit=limit,
            lease_seconds=self.lease_seconds,
            force=force,
            polled_before=polled_before,
        )

    async def keep_leases(self) -> None:
        """Renew this worker's leases while it polls (runs until cancelled)."""
        while True:
            await asyncio.sleep(max(1.0, self.lease_seconds / 3))
            if not self.active:
                continue
            try:
                await self._lease_call(
                    self.store.renew_leases,
                    self.owner,
                    list(self.active),  # the store orders and chunks them
                    utcnow(),
                    self.lease_seconds,
                )
            except StoreError as exc:
                log.warning("could not renew leases: %s", exc, extra={"event": "lease_error"})

    async def reclaim_dead_leases(self) -> None:
        """Release leases held by dead workers of THIS host (a crashed or killed earlier run),
        so a restart resumes at once instead of waiting for the leases to expire. Workers on
        other hosts cannot be checked: their leases expire after lease_seconds."""
        host = socket.gethostname()
        for owner in await asyncio.to_thread(self.store.lease_owners):
            name, _, rest = owner.partition(":")
            pid_text = rest.partition(":")[0]
            if name != host or not pid_text.isdigit() or pooljobs.process_exists(int(pid_text)):
                continue
            log.warning(
                "releasing the leases of dead worker %s",
                owner,
                extra={"event": "lease_reclaimed", "owner": owner},
            )
            await asyncio.to_thread(self.store.release_leases, owner)

    async def release(self) -> None:
        """Give back every lease this worker still holds (polls abandoned on shutdown)."""
        try:
            await asyncio.to_thread(self.store.release_leases, self.owner)
        except StoreError as exc:
            log.warning("could not release leases: %s", exc, extra={"event": "lease_error"})

    async def close(self) -> None:
        self._lease_thread.shutdown(wait=False)
        if self._hub_fetcher is not None:
            await self._hub_fetcher.aclose()
        await self.app.close()

    async def run_once(
        self,
        on_start: Callable[[int], None] | None = None,
        on_done: Callable[[PollOutcome], None] | None = None,
    ) -> RunSummary:
        """Poll every enabled feed now, ignoring interval and error backoff, but not a
        retirement (410) nor an unexpired Retry-After hold on its host."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        since = utcnow()
        await self.reclaim_dead_leases()
        enabled = await asyncio.to_thread(self.store.count_enabled_feeds)
        summary = RunSummary(feeds=enabled)
        if on_start:
            on_start(enabled)
        # Feeds are claimed as the polls get to them, RUN_ONCE_CHUNK at a time, not all at
        # the start: what the run holds (states, leases to renew) stays the same whatever
        # the number of feeds. Each claim takes enabled feeds not polled since the run
        # began (force: due or not; other workers' live leases, retirements and
        # Retry-After holds are left alone, see Store.claim_feeds).
        waiting: collections.deque[FeedState] = collections.deque()
        claiming = asyncio.Lock()
        exhausted = False
        started_polls = 0

        async def next_state() -> FeedState | None:
            nonlocal exhausted, started_polls
            async with claiming:
                while not waiting and not exhausted:
                    claimed = await self.claim(RUN_ONCE_CHUNK, force=True, polled_before=since)
                    exhausted = len(claimed) < RUN_ONCE_CHUNK
                    todo = [s for s in claimed if self.spec_for(s) is not None]
                    # claimed feeds count as active at once: their leases are renewed
                    # while they wait for their turn
                    self.active.update(state.id for state in todo)
                    waiting.extend(todo)
                if not waiting:
                    return None
                started_polls += 1
                return waiting.popleft()

        renewer = asyncio.create_task(self.keep_leases())

        # as many polling coroutines as polls may run at once: a task per feed would hold
        # a coroutine for each of them (memory that grows with the number of feeds)
        async def worker() -> None:
            while (state := await next_state()) is not None:
                outcome = await self.poll(state)
                if outcome is not None:
                    summary.add(outcome)
                    if on_done:
                        on_done(outcome)

        try:
            workers = max(1, min(enabled, self.config.settings.concurrency))
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            renewer.cancel()
            await self.release()
        # retired, held, leased by another worker, or enabled but not in the config
        summary.skipped = max(0, enabled - started_polls)
        # WebSub requests due now (for a cron set-up whose `aggregator serve` answers
        # the hubs' verifications and receives their deliveries)
        await self.websub_pass(reconcile=True)
        summary.duration = loop.time() - started
        return summary


async def run_once(
    config: Config,
    store: Store,
    on_start: Callable[[int], None] | None = None,
    on_done: Callable[[PollOutcome], None] | None = None,
    *,
    fetcher: FetchPort | None = None,
    writer_process: bool = False,
    saver: app.Saver | None = None,
) -> RunSummary:
    """``aggregator run --once``: make the feeds table match the config, then poll every
    enabled feed once (see ``Runner.run_once``), then deliver the pending webhook events
    (this run's and earlier ones; at most ``webhook_wait``: what fails stays pending).
    ``writer_process``: see ``app.build``."""
    # the runner first: its writer process (SQLite) starts, imports and opens the store
    # while this process syncs the tables
    runner = Runner(config, store, fetcher=fetcher, writer_process=writer_process, saver=saver)
    try:
        await asyncio.to_thread(store.sync_feeds, config.feeds, utcnow())
        await asyncio.to_thread(store.outbox().sync_webhooks, config.webhooks, utcnow())
        summary = await runner.run_once(on_start, on_done)
    finally:
        await runner.close()
    await deliver_pending(config, store, runner.owner)
    return summary


async def deliver_pending(config: Config, store: Store, owner: str) -> None:
    """``run --once``'s webhook deliveries (see ``Sender.drain``), then what the daemon
    does every 6 hours: finished events older than ``events_retention`` are deleted.
    Logged, never fatal."""
    before = utcnow() - timedelta(seconds=config.settings.events_retention)
    try:
        if config.webhooks:
            sender = Sender(store.outbox(), lambda: config, owner)
            done = await sender.drain(config.settings.webhook_wait)
        await asyncio.to_thread(store.outbox().purge, before)
    except StoreError as exc:
        log.warning("webhook deliveries not made: %s", exc, extra={"event": "webhook_error"})
        return
    if not config.webhooks:
        return
    log.info(
        "webhooks: %d delivered, %d failed, %d dead; %d pending",
        done.delivered,
        done.failed,
        done.dead,
        done.pending,
        extra={
            "event": "webhooks_drained",
            "delivered": done.delivered,
            "failed": done.failed,
            "dead": done.dead,
            "pending": done.pending,
        },
    )


class Daemon:
    """``aggregator run``: polls due feeds until SIGTERM/SIGINT."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        config_path: Path | None,
        database_override: str | None,
        metrics: Metrics | None = None,
        fetcher: FetchPort | None = None,
        writer_process: bool = False,
    ) -> None:
        from .metrics import Metrics

        self._writer_process = writer_process  # see app.build
        self.config = config
        self.store = store
        self.metrics = metrics or Metrics()
        self.queries = Queries(store)
        self.scheduler: AsyncIOScheduler | None = None
        self.http: EmbeddedServer | None = None
        self.config_path = config_path
        self.database_override = database_override
        self.stop_event = asyncio.Event()
        self.inflight: dict[int, asyncio.Task[PollOutcome | None]] = {}
        self._mtime = self._config_mtime()
        self._bad_config: str | None = None
        self.runner: Runner | None = None
        self._db_failures = 0
        self._db_retry_at = 0.0
        self.fatal: StoreError | None = None  # a permanent database error: run() raises it
        self._tick_lock = asyncio.Lock()
        self._refill_pending = False
        self._background: set[asyncio.Task[None]] = set()
        self._tick_started = 0.0  # when the running (or last) tick took the lock
        self._skipped_ticks = 0  # ticks skipped since the last "tick still running" line
        self._skip_logged_at: float | None = None
        self._fetcher = fetcher  # another fetch component for the runner (tests); else its own
        self._websub_started = False  # the first WebSub pass reconciles with the config

    def _config_mtime(self) -> float | None:
        if self.config_path is None:
            return None
        try:
            return self.config_path.stat().st_mtime
        except OSError:
            return None

    async def tick(self) -> None:
        if self.stop_event.is_set() or self.runner is None or self._tick_lock.locked():
            return
        async with self._tick_lock:
            self._tick_started = time.monotonic()
            await self._tick()

    def _refill(self) -> None:
        """A poll finished: claim more work soon instead of waiting for the next tick
        (completions within 50 ms share one claim)."""
        if self._refill_pending or self.stop_event.is_set():
            return
        self._refill_pending = True

        def run() -> None:
            self._refill_pending = False
            task = asyncio.ensure_future(self.tick())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        asyncio.get_running_loop().call_later(0.05, run)

    async def _tick(self) -> None:
        if self.runner is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._db_retry_at:
            return
        # claim no more than there are free poll slots: what this worker leases, it polls
        # now, and the rest stays claimable by other workers
        free = self.config.settings.concurrency - len(self.inflight)
        if free <= 0:
            return
        try:
            states = await self.runner.claim(free)
        except StoreError as exc:
            if is_permanent(exc):  # a read-only database: retrying cannot help
                log.error(
                    "stopping: %s", exc, extra={"event": "database_read_only", "error": str(exc)}
                )
                self.fatal = exc
                self.stop_event.set()
                return
            # the database went away: say so once, retry with backoff, carry on when back
            self._db_failures += 1
            delay = min(60.0, 2.0 ** min(self._db_failures, 6))
            self._db_retry_at = loop.time() + delay
            if self._db_failures == 1:
                log.error(
                    "database unavailable, retrying with backoff: %s",
                    exc,
                    extra={"event": "database_unavailable", "error": str(exc)},
                )
            return
        if self._db_failures:
            log.warning(
                "database back after %d failed attempts",
                self._db_failures,
                extra={"event": "database_recovered"},
            )
            self._db_failures = 0
            self._db_retry_at = 0.0
        for state in states:
            if state.id in self.inflight or self.stop_event.is_set():
                continue
            task = asyncio.create_task(self.runner.poll(state))
            self.inflight[state.id] = task
            task.add_done_callback(self._forget(state))

    def _forget(self, state: FeedState) -> Callable[[asyncio.Task[PollOutcome | None]], None]:
        def done(task: asyncio.Task[PollOutcome | None]) -> None:
            self.inflight.pop(state.id, None)
            # a poll records its own failures and bugs (Pipeline.poll, Runner.poll): an
            # exception here got past both; it is logged, never dropped, and the daemon
            # goes on
            if not task.cancelled() and (exc := task.exception()) is not None:
                log_crash(state, exc)
            self._refill()

        return done

    async def reload(self, *, force: bool = False) -> None:
        mtime = self._config_mtime()
        if not force and mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            config = load_config(self.config_path, self.database_override)
        except ConfigError as exc:
            message = str(exc)
            if message != self._bad_config:
                log.error(
                    "config not reloaded, still running on the last good one: %s",
                    message,
                    extra={"event": "config_error", "error": message},
                )
                self._bad_config = message
            return
        self._bad_config = None
        await asyncio.to_thread(self.store.sync_feeds, config.feeds, utcnow())
        await asyncio.to_thread(self.store.outbox().sync_webhooks, config.webhooks, utcnow())
        self.config = config
        if self.runner is not None:
            self.runner.apply_config(config)
            # feeds that left the config are unsubscribed at their WebSub hubs
            await self.runner.websub_pass(reconcile=True)
        if self.scheduler is not None:
            self.schedule_exports(self.scheduler)
        log.info(
            "config reloaded: %d feeds",
            len(config.feeds),
            extra={"event": "config_reloaded", "feeds": len(config.feeds)},
        )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        with contextlib.suppress(NotImplementedError, AttributeError):
            loop.add_signal_handler(
                signal.SIGHUP, lambda: asyncio.ensure_future(self.reload(force=True))
            )
        await asyncio.to_thread(self.store.sync_feeds, self.config.feeds, utcnow())
        await asyncio.to_thread(self.store.outbox().sync_webhooks, self.config.webhooks, utcnow())
        self.runner = Runner(
            self.config,
            self.store,
            metrics=self.metrics,
            fetcher=self._fetcher,
            writer_process=self._writer_process,
        )
        await self.runner.reclaim_dead_leases()
        # webhook deliveries: a task of their own beside the polls (webhooks.Sender)
        sender = Sender(
            self.store.outbox(),
            lambda: self.config,
            self.runner.owner,
            on_result=self.metrics.observe_delivery,
        )
        sender_stop = asyncio.Event()
        sending = asyncio.create_task(sender.run(sender_stop))
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        scheduler = AsyncIOScheduler(timezone=UTC, event_loop=loop)
        self.scheduler = scheduler
        settings = self.config.settings
        later = utcnow() + timedelta(seconds=PRUNE_DELAY)

        def every(
            job: Callable[[], Any], seconds: float, name: str, first: datetime | None
        ) -> None:
            # one instance at a time, missed runs coalesced; first run at ``first``, or one
            # interval from now (APScheduler reads next_run_time=None as "paused")
            start = {} if first is None else {"next_run_time": first}
            scheduler.add_job(
                job,
                IntervalTrigger(seconds=seconds),
                id=name,
                max_instances=1,
                coalesce=True,
                **start,
            )

        every(self.scheduled_tick, settings.tick, "tick", utcnow())
        if settings.reload_interval > 0:
            every(self.reload, settings.reload_interval, "reload", None)
        every(self.prune_dedup, PRUNE_INTERVAL, "prune_dedup", later)
        every(self.websub_job, settings.tick, "websub", utcnow())
        every(self.prune_events, PRUNE_INTERVAL, "prune_events", later)
        every(self.apply_retention, settings.retention_interval, "retention", later)
        self.schedule_exports(scheduler)
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES

        scheduler.add_listener(self._run_skipped, EVENT_JOB_MAX_INSTANCES)
        scheduler.start()
        renewer = asyncio.create_task(self.runner.keep_leases())
        try:
            self.http = await self._start_http()
            await self._log_started()
            await self.stop_event.wait()
        finally:
            scheduler.shutdown(wait=False)
            if self.http is not None:
                await self.http.stop()
            sender_stop.set()
            await self._drain()
            await sending
            renewer.cancel()
            await self.runner.release()
            await self.runner.close()
            log.info("daemon stopped", extra={"event": "stopped"})
        if self.fatal is not None:
            raise self.fatal  # the command exits with status 3

    async def websub_job(self) -> None:
        """WebSub requests due (subscribe, renew, unsubscribe); the first pass also
        reconciles the subscriptions with the config (as each reload does)."""
        if self.runner is None:
            return
        first = not self._websub_started
        self._websub_started = True
        await self.runner.websub_pass(reconcile=first)

    async def _log_started(self) -> None:
        """The start line: the feeds and where their schedule stands (after a restart:
        how many are due at once, in backoff, held; when the next poll is)."""
        database = self.store.engine.url.render_as_string(hide_password=True)
        now = utcnow()
        try:
            plan = await asyncio.to_thread(poll_schedule, self.store, now)
        except StoreError:
            plan = None
        if plan is None:
            log.info(
                "daemon started: %d feeds, database %s",
                len(self.config.feeds),
                database,
                extra={"event": "started"},
            )
            return
        if plan.due:
            next_poll = "polling the due feeds now"
        elif plan.next_poll_at is not None:
            wait = max(0, round((plan.next_poll_at - now).total_seconds()))
            next_poll = f"next poll at {plan.next_poll_at:%Y-%m-%d %H:%M:%S} UTC (in {wait} s)"
        else:
            next_poll = "nothing to poll"
        log.info(
            "daemon started: %d feeds: %d due, %d in backoff, %d held by Retry-After, "
            "%d retired, %d waiting; %s; database %s",
            len(self.config.feeds),
            plan.due,
            plan.backoff,
            plan.held,
            plan.retired,
            plan.waiting,
            next_poll,
            database,
            extra={
                "event": "started",
                "feeds": len(self.config.feeds),
                "due": plan.due,
                "backoff": plan.backoff,
                "held": plan.held,
                "retired": plan.retired,
                "waiting": plan.waiting,
                "next_poll_at": plan.next_poll_at.isoformat() if plan.next_poll_at else None,
            },
        )

    async def scheduled_tick(self) -> None:
        """The tick job: a tick, unless one (this job's last run, or one started when a
        poll finished) is still running; said when that one has run a tick period."""
        if self._tick_lock.locked():
            overrun = time.monotonic() - self._tick_started >= self.config.settings.tick
            if overrun and not self.stop_event.is_set():
                self._tick_skipped()
            return
        await self.tick()

    def _run_skipped(self, event: Any) -> None:
        """APScheduler did not start a job because its last run is still going (it would
        log "maximum number of running instances reached"; logs.py drops that line)."""
        if event.job_id == "tick":
            self._tick_skipped()
            return
        log.info(
            "job %s is still running; its next run was skipped",
            event.job_id,
            extra={"event": "job_still_running", "job": event.job_id},
        )

    def _tick_skipped(self) -> None:
        """A tick came while the last one is still running: said once a minute at most."""
        self._skipped_ticks += 1
        now = time.monotonic()
        if self._skip_logged_at is not None and now - self._skip_logged_at < 60:
            return
        log.info(
            "a tick is still running; %d polls in flight (%d ticks skipped)",
            len(self.inflight),
            self._skipped_ticks,
            extra={
                "event": "tick_still_running",
                "inflight": len(self.inflight),
                "skipped": self._skipped_ticks,
            },
        )
        self._skip_logged_at = now
        self._skipped_ticks = 0

    async def prune_dedup(self) -> int | None:
        """Drop the dedup index rows older than ``dedup_window`` (they can never be
        candidates again; items and stories are kept): the index stays the size of the
        window, not of the daemon's lifetime. Logged; a failure is retried next time."""
        before = utcnow() - timedelta(seconds=self.config.settings.dedup_window)
        started = time.monotonic()
        try:
            removed = await asyncio.to_thread(self.store.prune_dedup, before)
        except StoreError as exc:
            log.warning(
                "could not prune the dedup index: %s",
                exc,
                extra={"event": "dedup_prune_error", "error": str(exc)},
            )
            return None
        log.info(
            "dedup index pruned: %d rows older than %s",
            removed,
            before.isoformat(timespec="seconds"),
            extra={
                "event": "dedup_pruned",
                "rows": removed,
                "duration_ms": round(1000 * (time.monotonic() - started)),
            },
        )
        return removed

    async def prune_events(self) -> int | None:
        """Delete finished events (every delivery delivered or dead, or none wanted)
        older than ``events_retention``; a failure is retried next time."""
        before = utcnow() - timedelta(seconds=self.config.settings.events_retention)
        try:
            removed = await asyncio.to_thread(self.store.outbox().purge, before)
        except StoreError as exc:
            log.warning("could not prune events: %s", exc, extra={"event": "events_prune_error"})
            return None
        log.info("events pruned: %d", removed, extra={"event": "events_pruned", "rows": removed})
        return removed

    async def apply_retention(self, now: datetime | None = None) -> PruneReport | None:
        """Retention (``settings.retention`` and the feeds' own, see ``retention.py``):
        items deleted, texts dropped, tombstones forgotten, in short transactions; the
        space given back (SQLite). Logged, counted in ``/metrics``; a failure is
        retried next time."""
        from .ingest.prune import prune_config

        config = self.config
        try:
            report = await asyncio.to_thread(
                prune_config,
                self.store,
                config.feeds,
                config.retention,
                now or utcnow(),
                on_batch=self.metrics.observe_prune,
            )
        except StoreError as exc:
            log.warning(
                "could not apply retention: %s",
                exc,
                extra={"event": "retention_error", "error": str(exc)},
            )
            return None
        total = report.total
        log.info(
            "retention: %d items deleted (%d stories), %d texts dropped, %d tombstones "
            "forgotten, %d bytes of item data; %d kept (still in their feed)",
            total.items,
            total.stories,
            total.texts,
            total.tombstones_pruned,
            total.bytes,
            total.kept_in_feed,
            extra={
                "event": "retention_pruned",
                "items": total.items,
                "stories": total.stories,
                "texts": total.texts,
                "tombstones": total.tombstones_pruned,
                "bytes": total.bytes,
                "kept_in_feed": total.kept_in_feed,
                "reclaimed_bytes": report.reclaimed_bytes,
                "duration_ms": round(1000 * report.seconds),
            },
        )
        return report

    # ---- scheduled exports ---------------------------------------------------------
    def export_triggers(self) -> dict[str, tuple[ExportModel, CronTrigger]]:
        """Every configured export with its cron trigger (validated by the config)."""
        return {e.name: (e, cron_trigger(e.schedule, e.timezone)) for e in self.config.exports}

    def schedule_exports(self, scheduler: AsyncIOScheduler) -> None:
        """(Re)register one cron job per configured export."""
        for job in scheduler.get_jobs():
            if job.id.startswith("export:"):
                job.remove()
        for name, (_export, trigger) in self.export_triggers().items():
            scheduler.add_job(
                self.run_export,
                trigger,
                args=[name],
                id=f"export:{name}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=3600,
            )

    async def run_export(self, name: str, now: datetime | None = None) -> bool:
        """Run one scheduled export now (``now``: the time it stands for). A failure is
        logged and counted; the next run retries; the daemon goes on."""
        found = next((e for e in self.config.exports if e.name == name), None)
        if found is None:
            return False
        from . import export  # only a daemon with scheduled exports loads the formats

        when = now or utcnow()
        started = time.monotonic()
        try:
            size = await asyncio.to_thread(
                export.run_scheduled, self.queries, self.config, found, when
            )
        except (AggregatorError, OSError, ValueError) as exc:
            self.metrics.observe_export(name, ok=False)
            log.error(
                "export %s failed: %s",
                name,
                exc,
                extra={
                    "event": "export_failed",
                    "export": name,
                    "path": found.path,
                    "error": str(exc),
                },
            )
            return False
        except Exception:  # a bug: logged loudly, but one export never stops the daemon
            self.metrics.observe_export(name, ok=False)
            log.critical(
                "export %s crashed",
                name,
                exc_info=True,
                extra={"event": "export_failed", "export": name, "path": found.path},
            )
            return False
        self.metrics.observe_export(name, ok=True)
        log.info(
            "export %s written to %s",
            name,
            found.path,
            extra={
                "event": "export",
                "export": name,
                "path": found.path,
                "bytes": size,
                "duration_ms": round((time.monotonic() - started) * 1000),
            },
        )
        return True

    # ---- HTTP from the daemon process ----------------------------------------------
    async def _start_http(self) -> EmbeddedServer | None:
        http = self.config.settings.http
        if http is None:
            return None
        from .server import EmbeddedServer, create_app
        from .websub.receiver import Receiver

        assert self.runner is not None
        # the WebSub callback is served whether settings.websub is set now or not (it
        # answers 404 while it is not): a reload may switch it on or off
        receiver = Receiver(self.store, self.runner.pipeline, lambda: self.config)
        app = create_app(self.store, lambda: self.config, metrics=self.metrics, websub=receiver)
        server = EmbeddedServer(app, http.host, http.port)
        await server.start()
        return server

    async def _drain(self) -> None:
        tasks = list(self.inflight.values())
        if not tasks:
            return
        log.info(
            "stopping: waiting up to %.0f s for %d polls",
            SHUTDOWN_GRACE,
            len(tasks),
            extra={"event": "stopping", "inflight": len(tasks)},
        )
        _done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
