"""A poll's article pages: each distinct page fetched once, within the poll's time budget.

The pipeline hands over the links of the entries that want their article page (the new
entries of a ``full_text`` feed, and stored entries whose page is still owed, below).
Each distinct link is fetched once, however many entries share it. The fetches stop when
the poll's ``article_budget`` (seconds; 0 = no limit) is spent: a page not fetched by
then is *cut*. Fetched pages are extracted in the process pool as they arrive,
``ARTICLE_BATCH`` to a job, and at most ``HELD_PAGES`` fetched bodies wait for their
extraction at a time (a fetch waits for a place first), so a poll of thousands of
entries never holds thousands of pages.

Pages owed: an entry whose page was cut is stored with the feed's text, and its
``content_hash`` as :func:`owed_hash` of its hash (``page-pending:`` and the first 51
characters of the hash). The next poll that sees the entry in the document finds its
stored hash to be the owed form of the entry's hash, so it knows the page is still owed
and fetches it then (the entry stays unchanged otherwise; an entry that also changed in
the feed is updated as usual).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .errors import FetchError
from .records import ArticlePage, FetchResult, HttpOptions

ARTICLE_BATCH = 8  # article pages extracted per pool job
HELD_PAGES = 4 * ARTICLE_BATCH  # fetched pages a poll holds while they wait for extraction
PAGE_PENDING = "page-pending:"  # content_hash prefix of a stored entry whose page is owed
_HASH_LENGTH = 64  # items.content_hash is varchar(64)

Extract = Callable[[list[tuple[bytes, str]]], Awaitable[list[ArticlePage | str]]]


class PageFetcher(Protocol):
    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        page: bool = False,
        options: HttpOptions | None = None,
    ) -> FetchResult: ...


def owed_hash(content_hash: str) -> str:
    """The ``content_hash`` stored for an entry whose article page is still owed."""
    return (PAGE_PENDING + content_hash)[:_HASH_LENGTH]


def is_owed(stored_hash: str) -> bool:
    return stored_hash.startswith(PAGE_PENDING)


@dataclass
class Pages:
    """What came of a poll's article pages, by link."""

    extracted: dict[str, ArticlePage] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # link -> why it has no page
    cut: list[str] = field(default_factory=list)  # links not fetched within the budget
    requested: int = 0  # distinct links


async def fetch_pages(
    fetcher: PageFetcher,
    links: Sequence[str],
    budget: float,
    extract: Extract,
    options: HttpOptions | None = None,
) -> Pages:
    """Fetch and extract each distinct link once, fetching within ``budget`` seconds.
    ``options``: the feed's HTTP options (the fetcher sends them to the feed's own host
    only; its proxy carries every page).

    The budget counts the time the fetches take, not the time they stand still because
    every held place is taken by a page waiting for the process pool: a busy pool slows
    the poll down, it does not cut its pages."""
    distinct = list(dict.fromkeys(links))
    result = Pages(requested=len(distinct))
    if not distinct:
        return result
    loop = asyncio.get_running_loop()
    held = asyncio.Semaphore(HELD_PAGES)
    stall = _StallClock(loop.time)
    batch: list[FetchResult] = []
    jobs: list[asyncio.Task[None]] = []
    fetched: set[str] = set()

    async def extract_batch(pages: list[FetchResult]) -> None:
        try:
            answers = await extract([(p.body, p.final_url) for p in pages])
        finally:
            for _ in pages:
                held.release()
        for page, answer in zip(pages, answers, strict=True):
            if isinstance(answer, ArticlePage):
                result.extracted[page.url] = answer
            else:
                result.problems[page.url] = answer

    def flush() -> None:
        if batch:
            jobs.append(asyncio.create_task(extract_batch(batch[:])))
            batch.clear()

    async def fetch(link: str) -> None:
        with stall.waiting():
            await held.acquire()
        try:
            with stall.fetching():
                if options is None:
                    page = await fetcher.fetch(link, page=True)
                else:
                    page = await fetcher.fetch(link, page=True, options=options)
        except FetchError as exc:
            held.release()
            fetched.add(link)
            result.problems[link] = str(exc).strip() or type(exc).__name__
            return
        except BaseException:  # cut by the budget (cancelled), or a bug
            held.release()
            raise
        fetched.add(link)
        if page.status != 200 or not page.body:
            held.release()
            result.problems[link] = f"HTTP {page.status}"
            return
        batch.append(page)
        if len(batch) >= ARTICLE_BATCH:
            flush()

    fetches = [asyncio.create_task(fetch(link)) for link in distinct]
    started = loop.time()
    pending: set[asyncio.Task[None]] = set(fetches)
    try:
        while pending:
            timeout = None
            if budget > 0:
                timeout = started + budget + stall.total() - loop.time()
                if timeout <= 0:
                    break  # the budget is spent
            _done, pending = await asyncio.wait(pending, timeout=timeout)
    finally:
        for task in fetches:
            task.cancel()  # (a no-op for the finished ones)
    if pending:
        await asyncio.wait(pending)  # let the cancellations land
    flush()
    try:
        if jobs:
            await asyncio.wait(jobs)
    finally:
        for job in jobs:
            job.cancel()
    for task in [*fetches, *jobs]:
        if not task.cancelled():
            task.result()  # a bug (or a broken pool) propagates; FetchErrors were handled
    result.cut = [link for link in distinct if link not in fetched]
    return result


class _StallClock:
    """How long a poll's fetches stood still: some wait for a held place, none fetches."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._waiting = 0
        self._fetching = 0
        self._since: float | None = None
        self._total = 0.0

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        self._waiting += 1
        self._update()
        try:
            yield
        finally:
            self._waiting -= 1
            self._update()

    @contextlib.contextmanager
    def fetching(self) -> Iterator[None]:
        self._fetching += 1
        self._update()
        try:
            yield
        finally:
            self._fetching -= 1
            self._update()

    def total(self) -> float:
        ongoing = self._clock() - self._since if self._since is not None else 0.0
        return self._total + ongoing

    def _update(self) -> None:
        stalled = self._waiting > 0 and self._fetching == 0
        if stalled and self._since is None:
            self._since = self._clock()
        elif not stalled and self._since is not None:
            self._total += self._clock() - self._since
            self._since = None
