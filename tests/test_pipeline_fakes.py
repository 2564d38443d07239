"""The pipeline alone, with a fake fetcher, a fake store and a fake saver (no network, no
database): what each kind of poll hands to the save path.

The fakes stand in for whole components behind the pipeline's ports (``FetchPort``,
``EntriesPort``, ``SavePort``); the pool jobs run in threads of this process."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from aggregator.errors import FetchTimeout, StoreError
from aggregator.pipeline import Pipeline, PipelineSettings
from aggregator.records import (
    FeedSpec,
    FeedState,
    FetchResult,
    HttpOptions,
    KnownEntry,
    PollOutcome,
    PollToSave,
    SaveResult,
)
from builders import paragraph, rss

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
URL = "https://news.example/feed.xml"


class FakeFetcher:
    """Answers from a table: URL -> (status, body, headers), or an exception to raise."""

    def __init__(self, answers: dict[str, tuple[int, bytes, dict[str, str]] | Exception]):
        self.answers = answers
        self.requests: list[tuple[str, str | None]] = []

    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        page: bool = False,
        options: HttpOptions | None = None,
    ) -> FetchResult:
        self.requests.append((url, etag))
        answer = self.answers[url]
        if isinstance(answer, Exception):
            raise answer
        status, body, headers = answer
        return FetchResult(url=url, final_url=url, status=status, headers=headers, body=body)


class FakeStore:
    """The stored entries of the feed: entry key -> content hash."""

    def __init__(self, known: dict[str, str] | None = None) -> None:
        self.known = known or {}

    def known_entries(self, feed_id: int, keys: Sequence[str]) -> dict[str, KnownEntry]:
        return {k: KnownEntry(n + 1, self.known[k]) for n, k in enumerate(keys) if k in self.known}

    def blocked_entries(self, feed_id: int) -> dict[str, str]:
        return {}


class FakeSaver:
    """Keeps what it is asked to save; ``delay``: a slow database; ``fail``: one that is
    down."""

    def __init__(self, *, delay: float = 0.0, fail: bool = False) -> None:
        self.saved: list[PollToSave] = []
        self.delay = delay
        self.fail = fail
        self.inside = self.peak = 0

    async def save(self, poll: PollToSave) -> SaveResult:
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        try:
            await asyncio.sleep(self.delay)
            if self.fail:
                raise StoreError("database unavailable: the test's database is down")
            self.saved.append(poll)
            return SaveResult(new_items=len(poll.new), updated_items=len(poll.changed))
        finally:
            self.inside -= 1


def _document(n: int = 3, prefix: str = "e") -> bytes:
    items = [
        {
            "title": f"Story {prefix}{i}",
            "link": f"https://news.example/{prefix}{i}",
            "guid": f"{prefix}{i}",
            "description": paragraph(i, 60),
        }
        for i in range(n)
    ]
    return rss("News", items).encode()


def _poll(
    fetcher: FakeFetcher,
    saver: FakeSaver,
    store: FakeStore | None = None,
    state: FeedState | None = None,
    **settings: float,
) -> PollOutcome:
    async def go() -> PollOutcome:
        with ThreadPoolExecutor(2) as pool:
            pipeline = Pipeline(
                fetcher,
                store or FakeStore(),
                saver,
                pool,
                PipelineSettings(**settings),  # type: ignore[arg-type]
                rng=lambda: 0.5,
            )
            spec = FeedSpec(url=URL, full_text=False)
            return await pipeline.poll(spec, state or FeedState(id=7, url=URL), NOW)

    return asyncio.run(go())


def test_a_new_document_hands_its_entries_and_validators_to_the_saver() -> None:
    fetcher = FakeFetcher({URL: (200, _document(3), {"etag": '"v1"'})})
    saver = FakeSaver()
    outcome = _poll(fetcher, saver)
    assert outcome.ok and outcome.new_items == 3
    (poll,) = saver.saved
    assert poll.feed_id == 7
    assert [c.entry.guid for c in poll.new] == [f"https://news.example/e{i}" for i in range(3)]
    assert all(c.fingerprint is not None for c in poll.new)  # computed before the save
    assert poll.changed == ()
    update = poll.update
    assert (update.status, update.ok, update.etag, update.error_count) == (200, True, '"v1"', 0)
    assert update.title == "News"
    # the next poll: the default interval (30 min) with the jitter at its middle
    assert update.next_check_at == NOW + timedelta(minutes=30)


def test_stored_entries_are_left_out_and_changed_ones_updated() -> None:
    fetcher = FakeFetcher({URL: (200, _document(3), {})})
    first = FakeSaver()
    _poll(fetcher, first)
    hashes = {c.entry.key: c.content_hash for c in first.saved[0].new}
    second_key = first.saved[0].new[1].entry.key
    hashes[second_key] = hashlib.sha1(b"an older version").hexdigest()
    again = FakeSaver()
    outcome = _poll(fetcher, again, FakeStore(hashes))
    (poll,) = again.saved
    assert poll.new == ()
    assert [c.entry.key for _item, c in poll.changed] == [second_key]
    assert (outcome.new_items, outcome.updated_items) == (0, 1)


def test_a_304_saves_the_feed_row_only_and_keeps_the_validators() -> None:
    fetcher = FakeFetcher({URL: (304, b"", {})})
    saver = FakeSaver()
    state = FeedState(id=7, url=URL, etag='"v1"', last_modified="Mon, 01 Jun 2026 10:00:00 GMT")
    outcome = _poll(fetcher, saver, state=state)
    assert outcome.ok and outcome.not_modified
    assert fetcher.requests == [(URL, '"v1"')]  # a conditional request
    (poll,) = saver.saved
    assert poll.feed_only
    assert (poll.update.etag, poll.update.last_modified) == (state.etag, state.last_modified)


def test_a_failure_is_saved_with_its_backoff_and_a_retry_after_holds_the_host() -> None:
    fetcher = FakeFetcher({URL: (429, b"slow down", {"retry-after": "7200"})})
    saver = FakeSaver()
    state = FeedState(id=7, url=URL, etag='"v1"', error_count=2)
    outcome = _poll(fetcher, saver, state=state)
    assert not outcome.ok and outcome.status == 429
    (poll,) = saver.saved
    update = poll.update
    assert poll.feed_only and not update.ok
    assert update.error_count == 3 and update.keep_validators
    assert update.hold_host == "news.example"
    assert update.hold_until == NOW + timedelta(hours=2)
    assert update.next_check_at >= update.hold_until


def test_a_network_failure_and_a_document_that_is_no_feed_are_saved_as_failures() -> None:
    for answer in (
        FetchTimeout("no answer within 20 s", url=URL),
        (200, b"\x00\x01 not a feed at all", {"content-type": "application/octet-stream"}),
    ):
        saver = FakeSaver()
        outcome = _poll(FakeFetcher({URL: answer}), saver)
        assert not outcome.ok and outcome.error
        (poll,) = saver.saved
        assert poll.feed_only and poll.update.error_count == 1
        assert poll.update.error == outcome.error


def test_a_database_that_fails_the_save_ends_the_poll_as_a_database_error() -> None:
    saver = FakeSaver(fail=True)
    outcome = _poll(FakeFetcher({URL: (200, _document(2), {})}), saver)
    assert not outcome.ok
    assert outcome.error is not None and outcome.error.startswith("database error:")


def test_many_requests_in_flight_but_few_polls_processing() -> None:
    """``concurrency`` bounds requests in flight; the polls between a fetched document and
    its commit (parsed entries held in memory) are bounded apart by ``max_processing``:
    a slow save makes the other fetched polls wait, not pile up parsed."""
    urls = [f"https://n{i}.example/feed.xml" for i in range(12)]
    fetcher = FakeFetcher({u: (200, _document(2, prefix=f"n{i}-"), {}) for i, u in enumerate(urls)})
    saver = FakeSaver(delay=0.2)

    async def go() -> list[PollOutcome]:
        with ThreadPoolExecutor(2) as pool:
            pipeline = Pipeline(
                fetcher, FakeStore(), saver, pool, PipelineSettings(max_processing=3)
            )
            return await asyncio.gather(
                *(
                    pipeline.poll(FeedSpec(url=u, full_text=False), FeedState(id=i, url=u), NOW)
                    for i, u in enumerate(urls)
                )
            )

    outcomes = asyncio.run(go())
    assert all(o.ok and o.new_items == 2 for o in outcomes)
    assert len(fetcher.requests) == 12 and len(saver.saved) == 12
    assert saver.peak == 3


@pytest.mark.parametrize("status", [404, 410])
def test_gone_and_not_found_follow_the_policy(status: int) -> None:
    saver = FakeSaver()
    _poll(FakeFetcher({URL: (status, b"", {})}), saver)
    (poll,) = saver.saved
    update = poll.update
    if status == 410:
        assert update.disabled_reason is not None and update.disabled_reason.startswith("retired")
    else:
        assert update.not_found_since == NOW and update.disabled_reason is None
