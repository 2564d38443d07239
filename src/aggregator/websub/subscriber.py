"""Subscribing, renewing and unsubscribing at WebSub hubs (5.1).

The daemon calls ``discovered`` after each poll whose document declared a hub and a
topic, ``reconcile`` at start and after each config reload (feeds that left
feeds.yaml are unsubscribed, feeds back in it subscribe again), and ``run_due`` every
tick. A request is recorded as pending (committed) before it is sent, so the hub's
verification, which may come before the hub's answer, finds it; its answer is recorded
only if nothing (a verification) changed the subscription meanwhile. Several workers
share the subscriptions through claims (``SKIP LOCKED`` on PostgreSQL), as they share
feeds. Requests go through the fetcher: the address guard applies to hubs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from ..config import WebSubSettings
from ..errors import FetchError, StoreError
from ..records import FetchResult, PushSubscription
from ..store import Store
from . import protocol

log = logging.getLogger("aggregator.websub")
CLAIM_SECONDS = 120.0  # a claim outlives the requests of one pass
BATCH = 16  # subscriptions claimed, and requests in flight, per pass


@runtime_checkable
class PostPort(Protocol):
    async def post(
        self,
        url: str,
        body: bytes,
        *,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> FetchResult: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


class Subscriber:
    """One worker's side of the subscriptions (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        poster: PostPort,
        settings: Callable[[], WebSubSettings | None],
        owner: str,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.poster = poster
        self.settings = settings
        self.owner = owner
        self.clock = clock
        # (hub, topic) of each feed's subscription as last seen: a poll that finds the
        # same ones again writes nothing
        self._known: dict[int, tuple[str, str]] | None = None

    async def discovered(self, feed_id: int, hub: str, topic: str) -> None:
        """A poll of the feed found ``hub`` and ``topic`` (its rel="self")."""
        if self.settings() is None:
            return
        try:
            if self._known is None:
                self._known = await asyncio.to_thread(self.store.websub.topics)
            if self._known.get(feed_id) == (hub, topic):
                return
            written = await asyncio.to_thread(
                self.store.websub.discovered,
                feed_id,
                hub,
                topic,
                protocol.new_callback_id(),
                protocol.new_secret(),
                self.clock(),
            )
        except StoreError as exc:
            log.warning(
                "could not record the WebSub hub of feed %d: %s",
                feed_id,
                exc,
                extra={"event": "websub_error", "feed_id": feed_id, "error": str(exc)},
            )
            return
        self._known[feed_id] = (hub, topic)
        if written:
            log.info(
                "WebSub hub found for %s: %s",
                topic,
                hub,
                extra={"event": "websub_discovered", "feed_id": feed_id, "hub": hub},
            )

    async def reconcile(self) -> int:
        """Subscriptions of feeds that left feeds.yaml (or were disabled) are ended; those
        of feeds back in it start again. Returns how many changed."""
        if self.settings() is None:
            return 0
        changed = 0
        now = self.clock()
        for sub in await asyncio.to_thread(self.store.websub.to_reconcile):
            if not sub.feed_active:
                # a live one is unsubscribed at its hub; one not verified yet is dropped
                # (its verification, if it comes, finds nothing pending: 404)
                live = sub.state == "live"
                done = await asyncio.to_thread(
                    self.store.websub.change,
                    sub,
                    now,
                    state="unsubscribing" if live else "unsubscribed",
                    request_mode=None,
                    requested_at=None,
                    next_attempt_at=now if live else None,
                    attempts=0,
                    push_until=None,
                )
            else:
                done = await asyncio.to_thread(
                    self.store.websub.change,
                    sub,
                    now,
                    state="pending",
                    callback_id=protocol.new_callback_id(),
                    secret=protocol.new_secret(),
                    request_mode=None,
                    requested_at=None,
                    lease_seconds=None,
                    lease_expires_at=None,
                    next_attempt_at=now,
                    attempts=0,
                    last_error=None,
                )
            changed += int(done)
        return changed

    async def run_due(self) -> int:
        """Send the requests that are due (and end the waits for verifications that did
        not come); returns how many subscriptions were handled."""
        settings = self.settings()
        if settings is None:
            return 0
        handled = 0
        while True:
            claimed = await asyncio.to_thread(
                self.store.websub.claim_due,
                self.owner,
                self.clock(),
                limit=BATCH,
                claim_seconds=CLAIM_SECONDS,
            )
            if not claimed:
                return handled
            await asyncio.gather(*(self._handle(sub, settings) for sub in claimed))
            handled += len(claimed)
            if len(claimed) < BATCH:
                return handled

    async def _handle(self, sub: PushSubscription, settings: WebSubSettings) -> None:
        try:
            await self._step(sub, settings)
        except StoreError as exc:
            # its claim expires; the next pass takes it up again
            log.warning(
                "WebSub subscription of %s not handled: %s",
                sub.topic,
                exc,
                extra={"event": "websub_error", "feed_id": sub.feed_id, "error": str(exc)},
            )

    async def _step(self, sub: PushSubscription, settings: WebSubSettings) -> None:
        now = self.clock()
        step = protocol.next_step(sub, now)
        websub = self.store.websub
        if step is None:
            await asyncio.to_thread(websub.change, sub, now)  # only the claim released
            return
        if step == "unverified":
            await self._unverified(sub, now)
            return
        state = sub.state
        if step == "subscribe" and (state == "failed" or protocol.lapsed(sub, now)):
            state = "pending"
        lapsed = state == "pending" and sub.state == "live"  # no push: polling resumes
        # recorded (committed) before it is sent: the hub may verify before it answers
        changed = await asyncio.to_thread(
            functools.partial(
                websub.change,
                sub,
                now,
                state=state,
                request_mode=step,
                requested_at=now,
                next_attempt_at=now + timedelta(seconds=settings.verify_timeout),
                **({"push_until": None, "poll_now": True} if lapsed else {}),
            )
        )
        if not changed:
            return  # a verification or another worker got there first
        sent = replace(sub, state=state, request_mode=step, requested_at=now)
        body = protocol.request_body(step, sent, settings.callback_url, settings.lease_seconds)
        try:
            answer = await self.poster.post(
                sub.hub, body, content_type="application/x-www-form-urlencoded"
            )
        except FetchError as exc:
            await self._failed(sent, f"{step} request to {sub.hub} failed: {exc}")
            return
        if 200 <= answer.status < 300:
            log.info(
                "WebSub %s request accepted by %s for %s (HTTP %d); awaiting verification",
                step,
                sub.hub,
                sub.topic,
                answer.status,
                extra={
                    "event": "websub_requested",
                    "feed_id": sub.feed_id,
                    "mode": step,
                    "hub": sub.hub,
                    "topic": sub.topic,
                    "status": answer.status,
                },
            )
            return
        detail = protocol.one_line(answer.body)
        await self._failed(
            sent,
            f"{sub.hub} answered the {step} request with HTTP {answer.status}"
            + (f": {detail}" if detail else ""),
        )

    async def _unverified(self, sub: PushSubscription, now: datetime) -> None:
        """A request the hub has not verified within ``verify_timeout``."""
        what = "unsubscription" if sub.request_mode == "unsubscribe" else "subscription"
        await self._failed(sub, f"{sub.hub} did not verify the {what} request in time", now)

    async def _failed(self, sub: PushSubscription, error: str, now: datetime | None = None) -> None:
        """A request refused, failed or never verified: a subscription is retried after a
        backoff (a live one stays live until its lease ends); an unsubscription a few
        times, then given up (the hub's lease ends by itself)."""
        now = now or self.clock()
        attempts = sub.attempts + 1
        retry = protocol.retry_at(now, attempts)
        values: dict[str, object] = {
            "request_mode": None,
            "requested_at": None,
            "attempts": attempts,
            "last_error": error,
        }
        if sub.state == "unsubscribing":
            done = attempts >= protocol.UNSUBSCRIBE_ATTEMPTS
            values.update(
                state="unsubscribed" if done else "unsubscribing",
                next_attempt_at=None if done else retry,
            )
        elif sub.state == "live" and not protocol.lapsed(sub, now):
            assert sub.lease_expires_at is not None
            values.update(next_attempt_at=min(retry, sub.lease_expires_at))
        else:
            values.update(state="failed", next_attempt_at=retry)
            if sub.state == "live":  # its lease ran out: no push, polling resumes
                values.update(push_until=None, poll_now=True)
        await asyncio.to_thread(functools.partial(self.store.websub.change, sub, now, **values))
        log.warning(
            "WebSub %s for %s: %s",
            "unsubscription" if sub.state == "unsubscribing" else "subscription",
            sub.topic,
            error,
            extra={
                "event": "websub_failed",
                "feed_id": sub.feed_id,
                "hub": sub.hub,
                "topic": sub.topic,
                "error": error,
                "attempts": attempts,
            },
        )
