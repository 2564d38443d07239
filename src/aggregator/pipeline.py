"""The one orchestrator: sequences the stages for one feed, with one error boundary.

fetch (feed) → parse + sanitize (process pool) → which entries are new/changed (store)
→ fetch article pages → extract (process pool) → dedup decision + store (one transaction)
→ record the outcome and the next poll time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol, TypeVar

from . import dates, filters, pages, policy, pooljobs
from .errors import AggregatorError, ParseError, StoreError
from .records import (
    ArticlePage,
    CleanEntry,
    FeedSpec,
    FeedState,
    FeedUpdate,
    FetchResult,
    HttpOptions,
    KnownEntry,
    PollOutcome,
    PollToSave,
    SaveResult,
)

log = logging.getLogger("aggregator.poll")


class FetchPort(Protocol):
    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        page: bool = False,
        options: HttpOptions | None = None,
    ) -> FetchResult: ...


class EntriesPort(Protocol):
    """Which entries of a feed are stored already (the store)."""

    def known_entries(self, feed_id: int, keys: Sequence[str]) -> dict[str, KnownEntry]: ...

    def blocked_entries(self, feed_id: int) -> dict[str, str]: ...


class SavePort(Protocol):
    """Where a poll goes once decided: saved all or nothing (``ingest``'s savers)."""

    async def save(self, poll: PollToSave) -> SaveResult: ...


T = TypeVar("T")


@dataclass(frozen=True)
class PipelineSettings:
    default_interval: float = 1800.0
    min_interval: float = 600.0
    max_interval: float = 86400.0
    max_entries_per_feed: int = 10_000
    article_budget: float = 60.0  # seconds a poll spends fetching article pages; 0 = no limit
    # polls between a fetched document and its commit (parsing, article pages, dedup,
    # waiting for the store): their entries are held in memory meanwhile. ``concurrency``
    # bounds the requests in flight; this bounds the work behind them, so that many
    # requests can wait on slow servers without as many parsed polls queuing at the store
    max_processing: int = 16
    # polling of a feed while a live WebSub subscription pushes its updates (safety net)
    push_poll_interval: float = 86400.0


# ---- the orchestrator ----------------------------------------------------------------


class Pipeline:
    def __init__(
        self,
        fetcher: FetchPort,
        store: EntriesPort,
        saver: SavePort,
        executor: Executor,
        settings: PipelineSettings,
        *,
        rng: Callable[[], float] = random.random,
        store_threads: Executor | None = None,
    ) -> None:
        self.fetcher = fetcher
        self.store = store
        self.saver = saver
        self.executor = executor
        self.settings = settings
        self.rng = rng
        # threads that wait on the store's reads (known entries)
        self.store_threads = store_threads
        self._processing = asyncio.Semaphore(settings.max_processing)

    async def _in_store(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.store_threads, functools.partial(fn, *args))

    async def _in_pool(self, fn: Callable[..., T], *args: object) -> T:
        # fn: a job of ``pooljobs`` (light to import here; the work runs in a worker)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, *args)

    async def poll(self, spec: FeedSpec, state: FeedState, now: datetime) -> PollOutcome:
        """Poll one feed. Expected failures become data; a bug is logged as critical with
        its traceback and recorded on the feed like a failure (error count, backoff), so
        one feed's bug never ends a run nor another feed's poll."""
        started = time.monotonic()
        try:
            try:
                outcome = await self._poll(spec, state, now)
            except StoreError:
                raise
            except AggregatorError as exc:
                outcome = await self._fail(state, now, None, _sentence(exc), {})
            except Exception as exc:
                log.critical(
                    "poll of %s crashed (a bug): %s: %s",
                    state.url,
                    type(exc).__name__,
                    exc,
                    exc_info=True,
                    extra={"event": "poll_crashed", "feed": state.url, "feed_name": spec.name},
                )
                outcome = await self._fail(state, now, None, crash_sentence(exc), {})
        except StoreError as exc:
            # nothing of this poll was committed; the lease expires and it is polled again
            outcome = PollOutcome(state.url, None, ok=False, error=f"database error: {exc}")
        outcome = replace(outcome, duration=time.monotonic() - started)
        _log(spec, outcome)
        return outcome

    def _interval(self, spec: FeedSpec, state: FeedState) -> float:
        if spec.interval is not None:
            return spec.interval
        return state.interval_seconds or self.settings.default_interval

    async def _fail(
        self,
        state: FeedState,
        now: datetime,
        status: int | None,
        message: str,
        headers: dict[str, str],
        *,
        interval: float | None = None,
    ) -> PollOutcome:
        base = interval or state.interval_seconds or self.settings.default_interval
        update = policy.failure_update(state, now, status, message, headers, base, self.rng())
        await self.saver.save(PollToSave(state.id, update))
        return PollOutcome(state.url, status, ok=False, error=update.error)

    async def _poll(self, spec: FeedSpec, state: FeedState, now: datetime) -> PollOutcome:
        if spec.http is None:
            result = await self.fetcher.fetch(
                state.url, etag=state.etag, last_modified=state.last_modified
            )
        else:  # the feed's own options (only its host gets them: see fetch.same_origin)
            result = await self.fetcher.fetch(
                state.url, etag=state.etag, last_modified=state.last_modified, options=spec.http
            )
        status = result.status
        if status >= 400:
            return await self._fail(state, now, status, _status_sentence(result), result.headers)
        if status not in (200, 203, 304):
            return await self._fail(
                state, now, status, f"unexpected HTTP status {status}", result.headers
            )
        if status == 304:
            return await self._not_modified(spec, state, now, result)
        async with self._processing:
            return await self._process(spec, state, now, result)

    def _base_update(
        self, spec: FeedSpec, state: FeedState, now: datetime, result: FetchResult
    ) -> tuple[FeedUpdate, float]:
        """The feed's new state after a successful fetch, and its polling interval."""
        redirect_url, redirect_count, redirect_seen, new_url = policy.redirect_progress(
            state.url,
            result.permanent_redirect,
            state.redirect_url,
            state.redirect_count,
            state.redirect_seen_at,
            now,
        )
        if new_url:
            log.warning(
                "feed moved permanently",
                extra={"feed": state.url, "new_url": new_url, "event": "feed_url_rewritten"},
            )
        base_update = FeedUpdate(
            polled_at=now,
            status=result.status,
            ok=True,
            next_check_at=now,
            redirect_url=redirect_url,
            redirect_count=redirect_count,
            redirect_seen_at=redirect_seen,
            new_url=new_url,
        )
        return base_update, self._interval(spec, state)

    async def _not_modified(
        self, spec: FeedSpec, state: FeedState, now: datetime, result: FetchResult
    ) -> PollOutcome:
        base_update, interval = self._base_update(spec, state, now, result)
        update = replace(
            base_update,
            next_check_at=self._next_check(state, now, interval),
            etag=result.etag or state.etag,
            last_modified=result.last_modified or state.last_modified,
        )
        await self.saver.save(PollToSave(state.id, update))
        return PollOutcome(state.url, result.status, ok=True, not_modified=True)

    def _next_check(self, state: FeedState, now: datetime, interval: float) -> datetime:
        """The next poll after a successful one (rarer while WebSub pushes the feed)."""
        next_at = policy.next_check(now, interval, self.rng())
        return policy.while_pushed(next_at, now, state.push_until, self.settings.push_poll_interval)

    async def push(
        self,
        spec: FeedSpec,
        state: FeedState,
        body: bytes,
        headers: dict[str, str],
        now: datetime,
        *,
        base_url: str,
    ) -> PollOutcome:
        """A document a WebSub hub pushed for the feed, as if fetched from ``base_url``
        (its topic): the poll's parse, article pages, dedup and store path, one save, no
        fetch of the feed. The feed's poll state is left alone (``FeedUpdate.pushed``).
        A body that is no feed raises ParseError; a store failure StoreError (nothing
        was stored either way)."""
        started = time.monotonic()
        result = FetchResult(
            url=base_url,
            final_url=base_url,
            status=200,
            headers={k.lower(): v for k, v in headers.items()},
            body=body,
        )
        async with self._processing:
            outcome = await self._process(spec, state, now, result, pushed=True)
        outcome = replace(outcome, duration=time.monotonic() - started)
        _log(spec, outcome, event="push")
        return outcome

    async def _process(
        self,
        spec: FeedSpec,
        state: FeedState,
        now: datetime,
        result: FetchResult,
        *,
        pushed: bool = False,
    ) -> PollOutcome:
        """A fetched (or pushed) document: parse, pick the new and changed entries, fetch
        their pages, fingerprint, save. At most ``max_processing`` polls are here at once."""
        status = result.status
        base_update, interval = self._base_update(spec, state, now, result)
        try:
            prepared = await self._in_pool(
                pooljobs.prepare_document,
                result.body,
                result.headers,
                result.final_url,
                self.settings.max_entries_per_feed,
                spec.type,
                spec.selectors,
            )
        except ParseError as exc:
            if pushed:  # the hub's delivery is refused; the feed's polls are not affected
                raise
            # the server answered; the body is not something we can read
            return await self._fail(state, now, status, _sentence(exc), result.headers)
        # parsed: the document's bytes are not held while the poll waits on the store
        result = replace(result, body=b"")
        feed = prepared.feed
        # what this poll noticed and dropped (dates out of range, entries cut, pages cut):
        # recorded on the feed (last_error) and logged; the poll is still a success
        notes = PollNotes()
        if feed.problem:
            notes.add(f"feed parsed with problems: {feed.problem}")
        if prepared.cut:
            notes.add(
                f"{prepared.cut} of {prepared.cut + len(prepared.entries)} entries not stored: "
                f"only the first {self.settings.max_entries_per_feed} are read "
                "(max_entries_per_feed)"
            )
        if spec.interval is None:
            hints = feed.hints
            interval = policy.adaptive_interval(
                [c.entry.published for c in prepared.entries if c.entry.published is not None],
                default=self.settings.default_interval,
                minimum=self.settings.min_interval,
                maximum=self.settings.max_interval,
                hint_seconds=[
                    hints.ttl_seconds,
                    hints.update_period_seconds,
                    policy.cache_lifetime(result.headers, now, notes.header_dates),
                ],
            )
        known, remembered = await self._in_store(
            self._known_and_blocked, state.id, [c.entry.key for c in prepared.entries], spec
        )
        # entry filters: right after parsing, before any article page (see ``filters``);
        # entries blocked under the same rules are dropped without being evaluated again
        screen = filters.Screen(spec.filters, remembered)
        new: list[CleanEntry] = []
        changed: list[tuple[int, CleanEntry]] = []
        owed: list[tuple[int, CleanEntry, bool]] = []  # stored, page still owed; changed?
        for clean in prepared.entries:
            seen = known.get(clean.entry.key)
            if seen is None:
                new.append(clean)
            elif seen.deleted:  # deleted by retention while still served: not stored again
                continue
            elif pages.is_owed(seen.content_hash):
                if spec.full_text and clean.entry.link:
                    differs = seen.content_hash != pages.owed_hash(clean.content_hash)
                    owed.append((seen.item_id, clean, differs))
                else:  # no page wanted any more: the stored hash loses its mark
                    changed.append((seen.item_id, clean))
            elif seen.content_hash != clean.content_hash:
                changed.append((seen.item_id, clean))
        if spec.filters is not None and new:
            # CPU work (the regex package releases the GIL): in a thread, not on the loop
            new = await asyncio.to_thread(screen.kept, new)
        for rule in sorted(screen.budget.timed_out):
            notes.add(
                f"filter rule {rule} took longer than {filters.MATCH_TIMEOUT:g} s on an entry: "
                "taken as not matching for the rest of this poll (its entries were kept)"
            )
        paged = _Paged(new, [], 0, owing=False)
        if spec.full_text and (new or owed):
            paged = await self._with_articles(state, new, owed, notes, spec.http)
        new = paged.new
        changed.extend(paged.updates)
        if new:  # text fingerprints for dedup: CPU work, in the pool, one job per poll
            fps = await self._in_pool(pooljobs.fingerprints, [c.text for c in new])
            new = [replace(c, fingerprint=fp) for c, fp in zip(new, fps, strict=True)]
        next_at = policy.respect_skips(
            self._next_check(state, now, interval),
            feed.hints.skip_hours,
            feed.hints.skip_days,
        )
        update = replace(
            base_update,
            next_check_at=next_at,
            # pages owed: no validators, so the next poll gets the document (not a 304)
            # and sees the entries whose pages it owes
            etag=None if paged.owing else result.etag,
            last_modified=None if paged.owing else result.last_modified,
            interval_seconds=interval,
            title=feed.title,
            error=notes.sentence(),
            blocked=screen.changes(),
            pushed=pushed,
        )
        # the document's entry keys: retention never deletes what the feed still serves
        # (a push may carry only the newest entries: the polled document stays the record)
        document = None if pushed else tuple(c.entry.key for c in prepared.entries)
        saved = await self.saver.save(
            PollToSave(state.id, update, tuple(new), tuple(changed), document=document)
        )
        return PollOutcome(
            state.url,
            status,
            ok=True,
            new_items=saved.new_items,
            updated_items=saved.updated_items - paged.cleared,
            new_stories=saved.new_stories,
            merged_items=saved.merged_items,
            error=update.error,
            entries_cut=prepared.cut,
            entries_blocked=screen.blocked,
            blocked_new=len(screen.added),
            push_hub=feed.hints.hubs[0] if feed.hints.hubs and feed.hints.self_url else None,
            push_topic=feed.hints.self_url if feed.hints.hubs else None,
        )

    def _known_and_blocked(
        self, feed_id: int, keys: Sequence[str], spec: FeedSpec
    ) -> tuple[dict[str, KnownEntry], dict[str, str]]:
        """The stored items among ``keys``, and the feed's remembered blocked entries
        (key -> the fingerprint of the rules that blocked it): one trip to a store thread.
        A feed without rules has none to read (loading the config deletes them)."""
        known = self.store.known_entries(feed_id, keys)
        if spec.filters is None:
            return known, {}
        return known, self.store.blocked_entries(feed_id)

    async def _with_articles(
        self,
        state: FeedState,
        new: list[CleanEntry],
        owed: list[tuple[int, CleanEntry, bool]],
        notes: PollNotes,
        options: HttpOptions | None = None,
    ) -> _Paged:
        """The new entries with the text of their article pages (where a page gives a
        longer one), and the stored entries whose page was owed, to update. Each distinct
        page is fetched once, within the poll's ``article_budget``; an entry whose page
        was cut keeps the feed's text and is stored as owed (see ``pages``)."""

        async def extract(batch: list[tuple[bytes, str]]) -> list[ArticlePage | str]:
            return await self._in_pool(pooljobs.extract_pages, batch)

        links = [c.entry.link for c in new if c.entry.link]
        links += [c.entry.link for _, c, _ in owed if c.entry.link]
        got = await pages.fetch_pages(
            self.fetcher, links, self.settings.article_budget, extract, options
        )
        for link, problem in got.problems.items():
            _log_article(state, link, _capital(problem))
        for link, page in got.extracted.items():
            for note in page.article.notes:
                notes.add_page(f"article page {link}: {note}")
        if got.cut:
            _log_budget(state, self.settings.article_budget, got)
            notes.add(
                f"article budget ({self.settings.article_budget:g} s) spent: {len(got.cut)} of "
                f"{got.requested} article pages left for the next poll (their entries keep "
                "the feed's text meanwhile)"
            )
        cut = set(got.cut)
        result: list[CleanEntry] = []
        for clean in new:
            link = clean.entry.link or ""
            if link in got.extracted:
                clean = self._with_article(clean, got.extracted[link])
            elif link in cut:
                clean = replace(clean, content_hash=pages.owed_hash(clean.content_hash))
            result.append(clean)
        updates: list[tuple[int, CleanEntry]] = []
        cleared = 0
        for item_id, clean, changed in owed:
            link = clean.entry.link or ""
            if link in cut:
                if changed:  # the entry changed in the feed; its page is still owed
                    owed_clean = replace(clean, content_hash=pages.owed_hash(clean.content_hash))
                    updates.append((item_id, owed_clean))
                continue  # unchanged and still owed: the stored row stays as it is
            if link in got.extracted:
                clean = self._with_article(clean, got.extracted[link])
            if clean.article is None and not changed:
                cleared += 1
            updates.append((item_id, clean))  # page fetched or failed: owed no more
        return _Paged(result, updates, cleared, owing=bool(cut))

    @staticmethod
    def _with_article(clean: CleanEntry, extracted: ArticlePage) -> CleanEntry:
        article = extracted.article
        if clean.text and len(article.text) < len(clean.text):
            return clean  # the feed's own text is longer: keep it
        return replace(
            clean,
            article=article,
            text=article.text,
            page_canonical_url=extracted.page_canonical_url,
        )


@dataclass(frozen=True)
class _Paged:
    """A poll's entries after their article pages."""

    new: list[CleanEntry]  # new entries, with their pages' text where it is better
    updates: list[tuple[int, CleanEntry]]  # stored entries whose owed page came (or failed)
    cleared: int  # of those, the ones written only to lose their owed mark
    owing: bool  # some pages were cut by the budget: owed to the next poll


class PollNotes:
    """What a successful poll noticed and dropped, for the feed's ``last_error`` and the
    poll's log line: one sentence, each kind of note said once."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.header_dates: list[str] = []  # HTTP date headers out of range
        self.page_dates: list[str] = []  # article pages' values out of range

    def add(self, line: str) -> None:
        self.lines.append(line)

    def add_page(self, note: str) -> None:
        self.page_dates.append(note)

    def sentence(self) -> str | None:
        parts = [
            *self.lines,
            *(s for s in (dates.summary(self.header_dates), dates.summary(self.page_dates)) if s),
        ]
        return "; ".join(parts) or None


def crash_sentence(exc: BaseException) -> str:
    """What a feed records when its poll crashed on a bug."""
    return f"internal error (a bug; its traceback is in the log): {type(exc).__name__}: {exc}"


def _sentence(exc: BaseException) -> str:
    return _capital(str(exc).strip() or type(exc).__name__)


def _capital(text: str) -> str:
    return text[0].upper() + text[1:] if text else text


_STATUS_WORDS = {
    404: "not found",
    410: "gone: the feed was removed for good",
    429: "too many requests",
    500: "server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}


def _status_sentence(result: FetchResult) -> str:
    words = _STATUS_WORDS.get(
        result.status, "client error" if result.status < 500 else "server error"
    )
    text = f"HTTP {result.status} ({words}) from {result.final_url}"
    if result.headers.get("retry-after"):
        text += f"; Retry-After: {result.headers['retry-after']}"
    return text


def _log(spec: FeedSpec, outcome: PollOutcome, event: str = "poll") -> None:
    fields = {
        "event": event,
        "feed": outcome.feed_url,
        "feed_name": spec.name,
        "status": outcome.status,
        "ok": outcome.ok,
        "not_modified": outcome.not_modified,
        "new_items": outcome.new_items,
        "updated_items": outcome.updated_items,
        "merged": outcome.merged_items,
        "duration_ms": round(outcome.duration * 1000),
        "error": outcome.error,
        "entries_cut": outcome.entries_cut,
        "blocked": outcome.entries_blocked,
        "blocked_new": outcome.blocked_new,
    }
    if event == "push":
        log.info("WebSub push stored for %s", outcome.feed_url, extra=fields)
    elif outcome.ok:
        if outcome.entries_blocked:
            log.info(
                "polled %s (%d entries blocked by filters, %d new)",
                outcome.feed_url,
                outcome.entries_blocked,
                outcome.blocked_new,
                extra=fields,
            )
        else:
            log.info("polled %s", outcome.feed_url, extra=fields)
    else:
        log.warning("poll failed for %s: %s", outcome.feed_url, outcome.error, extra=fields)


def _log_article(state: FeedState, link: str, problem: str) -> None:
    log.info(
        "article page not used for %s: %s",
        link,
        problem,
        extra={"event": "article", "feed": state.url, "url": link, "error": problem},
    )


def _log_budget(state: FeedState, budget: float, got: pages.Pages) -> None:
    shown = got.cut[:5]
    log.warning(
        "article budget of %g s spent for %s: %d of %d article pages not fetched "
        "(kept the feed's text; fetched on the next poll): %s%s",
        budget,
        state.url,
        len(got.cut),
        got.requested,
        ", ".join(shown),
        ", …" if len(got.cut) > len(shown) else "",
        extra={
            "event": "article_budget",
            "feed": state.url,
            "budget_s": budget,
            "pages": got.requested,
            "pages_cut": len(got.cut),
            "cut_urls": shown,
        },
    )
