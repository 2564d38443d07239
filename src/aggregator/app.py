"""The composition root: settings in, the parts that poll out.

``build`` wires one process's fetcher (with its limits and, in the daemon, metrics), its
process pool, its save path and the pipeline over them. The save path is chosen here, once:

- PostgreSQL: ``DirectSaver``, a transaction per poll in a thread (several writers at once);
- SQLite, ``aggregator run``: ``ProcessSaver``, polls written in groups by a writer process
  (one writer, on a core of its own);
- SQLite otherwise (tests, a URI or in-memory database): ``BatchingSaver``, the same groups
  by a thread of this process.

Nothing else in the code knows which one runs: the pipeline awaits ``save(poll)``.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from . import pooljobs
from .config import Config
from .fetch import Fetcher, FetchLimits
from .ingest.batching import BatchingSaver
from .ingest.direct import DirectSaver
from .ingest.process import ProcessSaver
from .pipeline import FetchPort, Pipeline, PipelineSettings, SavePort
from .records import FetchResult, HttpOptions
from .store import Store

if TYPE_CHECKING:
    from .metrics import Metrics


class Saver(SavePort, Protocol):
    """A save path: ``save(poll)`` (the pipeline's port), and ``close`` once done."""

    def close(self) -> None: ...


def pool_size(config: Config) -> int:
    return config.settings.workers or max(1, os.cpu_count() or 1)


def make_pool(size: int) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("forkserver")
    # the pool's jobs and initializer come from the light ``pooljobs``: the heavy modules
    # (parsing, extraction) load in the workers only
    return ProcessPoolExecutor(
        max_workers=size, mp_context=context, initializer=pooljobs.warm, initargs=(os.getpid(),)
    )


def fetch_limits(config: Config) -> FetchLimits:
    s = config.settings
    return FetchLimits(
        user_agent=s.effective_user_agent(),
        connect_timeout=s.connect_timeout,
        read_timeout=s.read_timeout,
        total_timeout=s.timeout,
        max_body_bytes=s.max_body_bytes,
        max_redirects=s.max_redirects,
        concurrency=s.concurrency,
        per_host_concurrency=s.per_host_concurrency,
        per_host_delay=s.per_host_delay,
        allow_private_networks=s.allow_private_networks,
        transport=s.http_transport,
        ca_bundle=s.ca_bundle,
        proxy=config.http_proxy,
    )


def pipeline_settings(config: Config) -> PipelineSettings:
    s = config.settings
    return PipelineSettings(
        default_interval=s.default_interval,
        min_interval=s.min_interval,
        max_interval=s.max_interval,
        max_entries_per_feed=s.max_entries_per_feed,
        article_budget=s.article_budget,
        # enough parsed polls to keep every pool worker and the store writer busy: a
        # place is held until the poll's commit, so the writer's groups come from them
        # (600 farm feeds cold, 2 workers: 8 places 79.7 s, 16 places 53-54 s, more the
        # same; docs/performance.md "Fifth round")
        max_processing=max(8, 8 * pool_size(config)),
        push_poll_interval=push_poll_interval(config),
    )


def push_poll_interval(config: Config) -> float:
    """Polling while a WebSub subscription is live; 0 (as usual) with WebSub off: no
    pushes are received then, whatever leases the hubs still hold."""
    websub = config.settings.websub
    return websub.poll_interval if websub is not None else 0.0


def make_saver(
    store: Store,
    config: Config,
    *,
    threads: ThreadPoolExecutor,
    writer_process: bool,
    planner: Executor | None = None,
) -> Saver:
    """The save path for ``store`` (see the module's table); on SQLite, ``planner`` (the
    process pool) takes the story decisions ahead of the writer with the
    ``plan_decisions`` setting (``ingest.plan``)."""
    window = config.settings.dedup_window
    if not config.settings.plan_decisions:
        # off by default: on a 2-core machine the pool has no room for the plans (2,000
        # farm feeds cold: the same wall time, 37 % more CPU, a writer process of 180 MB
        # instead of 97; docs/performance.md, "Decisions off the writer")
        planner = None
    if not store.one_writer:
        return DirectSaver(store, window=window, executor=threads)
    if writer_process and store.file_path is not None:
        return ProcessSaver(store, window=window, planner=planner)
    return BatchingSaver(store, window=window, planner=planner)


class MeteredFetcher:
    """The pipeline's fetch port, counting latency and bytes for ``/metrics``."""

    def __init__(self, inner: FetchPort, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        page: bool = False,
        options: HttpOptions | None = None,
    ) -> FetchResult:
        if options is None:
            result = await self.inner.fetch(url, etag=etag, last_modified=last_modified, page=page)
        else:
            result = await self.inner.fetch(
                url, etag=etag, last_modified=last_modified, page=page, options=options
            )
        self.metrics.observe_fetch(result, page=page)
        return result


@dataclass
class App:
    """One process's polling parts (``build``); ``close`` stops what it owns."""

    pipeline: Pipeline
    own_saver: Saver | None  # None: the caller's
    pool: Executor
    store_threads: ThreadPoolExecutor
    own_fetcher: Fetcher | None  # None: the caller's fetch component
    own_pool: bool

    async def close(self) -> None:
        if self.own_fetcher is not None:
            await self.own_fetcher.aclose()
        # the saver writes what it was given first (the writer process within its grace)
        if self.own_saver is not None:
            self.own_saver.close()
        self.store_threads.shutdown(wait=False)
        if self.own_pool:
            self.pool.shutdown(wait=False, cancel_futures=True)


def build(
    config: Config,
    store: Store,
    *,
    pool: Executor | None = None,
    metrics: Metrics | None = None,
    fetcher: FetchPort | None = None,
    saver: Saver | None = None,
    writer_process: bool = False,
) -> App:
    """Wire the parts that poll ``config``'s feeds into ``store``. ``pool``, ``fetcher``
    and ``saver``: the caller's, else this process's own (``close`` stops those);
    ``writer_process``: an SQLite file is written by a process of its own (``aggregator
    run``)."""
    own_fetcher: Fetcher | None = None
    port: FetchPort
    if fetcher is None:
        port = own_fetcher = Fetcher(fetch_limits(config))
    else:
        port = fetcher
    if metrics is not None:
        port = MeteredFetcher(port, metrics)
    threads = ThreadPoolExecutor(
        max_workers=config.settings.concurrency + 2, thread_name_prefix="store"
    )
    own_saver = None
    processes = pool or make_pool(pool_size(config))
    if saver is None:
        own_saver = make_saver(
            store, config, threads=threads, writer_process=writer_process, planner=processes
        )
        saver = own_saver
    pipeline = Pipeline(
        port, store, saver, processes, pipeline_settings(config), store_threads=threads
    )
    return App(pipeline, own_saver, processes, threads, own_fetcher, own_pool=pool is None)
