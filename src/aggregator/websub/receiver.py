"""What the callback URLs answer: hubs' verifications (5.3), denials (5.2) and content
deliveries (7, 8).

A delivery is authenticated by its ``X-Hub-Signature`` (HMAC of the body with the
subscription's secret), then fed through the pipeline's ``push``: the poll's parse,
article pages, dedup and store path, one save, no fetch. It is answered only once that
save is committed (or failed). Deliveries that fail the signature are ignored and
answered 202 like the others, as the Recommendation allows (8: a 2xx "to prevent
brute-force attempts of the signature"); see docs/push.md for every answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol

from ..config import Config
from ..errors import ParseError, StoreError
from ..records import FeedSpec, FeedState, PollOutcome, PushSubscription
from ..store import Store
from . import protocol
from .protocol import Answer

log = logging.getLogger("aggregator.websub")
_CALLBACK_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
DELIVERY_SLOTS = 8  # deliveries read and processed at once; more wait for a slot


class PushPort(Protocol):
    async def push(
        self,
        spec: FeedSpec,
        state: FeedState,
        body: bytes,
        headers: dict[str, str],
        now: datetime,
        *,
        base_url: str,
    ) -> PollOutcome: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


class Receiver:
    """The callback side of the subscriptions, for the HTTP face (``websub.routes``)."""

    def __init__(
        self,
        store: Store,
        push: PushPort,
        config: Callable[[], Config],
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.push = push
        self.config = config
        self.clock = clock
        self.slots = asyncio.Semaphore(DELIVERY_SLOTS)
        self._specs: tuple[Config | None, dict[str, FeedSpec]] = (None, {})

    @property
    def max_body_bytes(self) -> int:
        return self.config().settings.max_body_bytes

    async def lookup(self, callback_id: str) -> PushSubscription | None:
        """The subscription of a callback id (None: unknown, or WebSub switched off)."""
        if self.config().settings.websub is None or not _CALLBACK_ID.match(callback_id):
            return None
        return await asyncio.to_thread(self.store.websub.by_callback, callback_id)

    async def verify(self, callback_id: str, params: Mapping[str, str]) -> Answer:
        """A hub's GET on the callback: verification of intent or denial."""
        sub = await self.lookup(callback_id)
        mode = params.get("hub.mode")
        topic, challenge = params.get("hub.topic"), params.get("hub.challenge")
        answer = protocol.verification(sub, mode, topic, challenge)
        if sub is None or answer.action is None:
            if answer.note and sub is not None:
                log.info(
                    "WebSub verification refused for %s: %s",
                    sub.topic,
                    answer.note,
                    extra={"event": "websub_verification_refused", "feed_id": sub.feed_id},
                )
            return answer
        settings = self.config().settings.websub
        assert settings is not None  # lookup found the subscription
        now = self.clock()
        store = self.store.websub
        if answer.action == "live":
            lease = protocol.granted_lease(params.get("hub.lease_seconds"), settings.lease_seconds)
            done = await asyncio.to_thread(
                functools.partial(
                    store.went_live,
                    sub,
                    now,
                    lease_seconds=lease,
                    renew_at=protocol.renew_at(now, lease),
                    safety_poll_at=now + timedelta(seconds=min(settings.poll_interval, lease)),
                )
            )
            message = f"live for {lease} s"
        elif answer.action == "unsubscribed":
            done = await asyncio.to_thread(
                functools.partial(
                    store.change,
                    sub,
                    now,
                    state="unsubscribed",
                    request_mode=None,
                    requested_at=None,
                    lease_expires_at=None,
                    next_attempt_at=None,
                    attempts=0,
                    last_error=None,
                    push_until=None,
                    poll_now=True,
                )
            )
            message = "unsubscribed"
        else:  # denied: the hub refused the subscription or ended it
            reason = protocol.one_line((params.get("hub.reason") or "no reason given").encode())
            attempts = sub.attempts + 1
            done = await asyncio.to_thread(
                functools.partial(
                    store.change,
                    sub,
                    now,
                    state="failed",
                    request_mode=None,
                    requested_at=None,
                    lease_expires_at=None,
                    next_attempt_at=protocol.retry_at(now, attempts),
                    attempts=attempts,
                    last_error=f"{sub.hub} denied the subscription: {reason}",
                    push_until=None,
                    poll_now=True,
                )
            )
            message = f"denied: {reason}"
        if not done:  # changed meanwhile (another request of the hub, a reload)
            return Answer(404, "no request pending", note="changed meanwhile")
        log.info(
            "WebSub subscription of %s at %s: %s",
            sub.topic,
            sub.hub,
            message,
            extra={
                "event": "websub_verified" if answer.action != "denied" else "websub_denied",
                "feed_id": sub.feed_id,
                "hub": sub.hub,
                "topic": sub.topic,
                "mode": mode,
            },
        )
        return answer

    def refusal(self, sub: PushSubscription | None) -> Answer | None:
        """Why a delivery to this callback is not taken, before its body is read: 404 for
        an unknown or not (yet) verified subscription, 410 for one ended (the hub may
        drop it, 7)."""
        if sub is None:
            return Answer(404, "unknown callback", note="unknown callback")
        if not sub.feed_active or sub.state in ("unsubscribing", "unsubscribed"):
            return Answer(410, "subscription ended", note="subscription ended")
        if sub.state != "live":
            return Answer(404, "subscription not verified", note="not live")
        return None

    async def deliver(
        self, sub: PushSubscription, body: bytes, headers: Mapping[str, str]
    ) -> Answer:
        """A content delivery of a live subscription, its body read (within limits)."""
        problem = protocol.signature_problem(headers.get("x-hub-signature"), body, sub.secret)
        if problem is not None:
            log.warning(
                "WebSub delivery for %s ignored: %s",
                sub.topic,
                problem,
                extra={
                    "event": "websub_push_ignored",
                    "feed_id": sub.feed_id,
                    "topic": sub.topic,
                    "error": problem,
                    "bytes": len(body),
                },
            )
            return Answer(202, "", note=problem)
        spec = self._spec(sub)
        if spec is None:
            return Answer(410, "subscription ended", note="feed not configured")
        state = FeedState(id=sub.feed_id, url=sub.feed_url, configured_url=sub.configured_url)
        try:
            outcome = await self.push.push(
                spec, state, body, dict(headers), self.clock(), base_url=sub.topic
            )
        except ParseError as exc:
            message = f"the delivery for {sub.topic} is not a feed document: {exc}"
            log.warning(
                "WebSub delivery refused: %s",
                message,
                extra={"event": "websub_push_refused", "feed_id": sub.feed_id, "error": message},
            )
            return Answer(400, message, note=message)
        except StoreError as exc:
            log.error(
                "WebSub delivery for %s not stored: %s",
                sub.topic,
                exc,
                extra={"event": "websub_push_failed", "feed_id": sub.feed_id, "error": str(exc)},
            )
            return Answer(503, "database unavailable; deliver again later", note=str(exc))
        return Answer(202, "", note=f"{outcome.new_items} new items")

    def _spec(self, sub: PushSubscription) -> FeedSpec | None:
        config = self.config()
        if self._specs[0] is not config:
            self._specs = (config, {spec.url: spec for spec in config.feeds})
        return self._specs[1].get(sub.configured_url or sub.feed_url)
