"""Webhook deliveries: the Standard Webhooks envelope and signature, retries, the sender.

Events wait in the outbox (``store/events.py`` writes them with the change that made
them; ``store/outbox.py`` claims and records). The ``Sender`` delivers them:

- in the daemon, ``run`` claims what is due about once a second (a cheap read first),
  posts each delivery on its own task (at most ``webhook_concurrency`` at once) through
  its own ``Fetcher`` (the address guard applies; ``allow_private_networks`` governs
  webhook targets as it governs feeds), and never holds up a poll: polls and deliveries
  share nothing but the database;
- after ``aggregator run --once``, ``drain`` gives every pending delivery one attempt
  (this run's events and earlier ones, due or not), waiting at most ``webhook_wait``.

Each attempt is a ``POST`` (Standard Webhooks, https://www.standardwebhooks.com/):
``Content-Type: application/json``, ``webhook-id`` (the event's idempotency key),
``webhook-timestamp`` (Unix seconds of the attempt) and ``webhook-signature: v1,<base64
HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed by the secret's UTF-8 bytes, or by the
base64-decoded rest of a ``whsec_`` secret. A 2xx answer is delivered; anything else, a
failure to connect, or no answer within ``webhook_timeout`` (10 s) is retried after
``webhook_retry_base`` (30 s), doubling up to ``webhook_retry_max`` (1 h), until
``webhook_max_age`` (24 h) after it was first due; then it is dead until ``aggregator
events retry``. Delivery is at least once: a receiver deduplicates by ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from .config import Config
from .errors import FetchError, StoreError
from .fetch import Fetcher, FetchLimits
from .pooljobs import process_exists
from .records import FetchResult, WebhookSpec
from .store.events import iso
from .store.outbox import Delivery, Outbox

log = logging.getLogger("aggregator.webhooks")
CHECK_INTERVAL = 1.0  # seconds between the daemon sender's looks at the outbox
LEASE_MARGIN = 60.0  # a claimed delivery's lease: the POST's timeout plus this
STOP_GRACE = 3.0  # seconds the deliveries in flight get when the daemon stops


def utcnow() -> datetime:
    return datetime.now(UTC)


# ---- the envelope and its signature --------------------------------------------------


def document(delivery: Delivery) -> dict[str, Any]:
    """The event document: ``type``, ``timestamp`` (when it happened), ``version`` (of
    its schema) and ``data`` (docs/push.md)."""
    return {
        "type": delivery.type,
        "timestamp": iso(delivery.created_at),
        "version": delivery.version,
        "data": json.loads(delivery.data),
    }


def encode(delivery: Delivery) -> bytes:
    return json.dumps(document(delivery), ensure_ascii=False, separators=(",", ":")).encode()


def signing_key(secret: str) -> bytes:
    """The HMAC key: the rest of a ``whsec_`` secret base64-decoded, else its UTF-8 bytes."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    return secret.encode("utf-8")


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header's value (one ``v1`` signature)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def request_headers(
    delivery: Delivery, body: bytes, spec: WebhookSpec, now: datetime, user_agent: str
) -> dict[str, str]:
    timestamp = int(now.timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": user_agent,
        "webhook-id": delivery.event_key,
        "webhook-timestamp": str(timestamp),
    }
    if spec.secret is not None:
        headers["webhook-signature"] = sign(
            spec.secret.reveal(), delivery.event_key, timestamp, body
        )
    return headers


def redact(url: str) -> str:
    """A webhook URL as logs show it: scheme and host only (the path of a webhook URL is
    often its secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


# ---- retries --------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    base: float = 30.0  # seconds before the first retry
    max_delay: float = 3600.0  # the longest wait between two attempts
    max_age: float = 86400.0  # retried this long after its window started, then dead

    @classmethod
    def of(cls, config: Config) -> RetryPolicy:
        s = config.settings
        return cls(s.webhook_retry_base, s.webhook_retry_max, s.webhook_max_age)

    def after_failure(
        self, attempts_before: int, retry_since: datetime, now: datetime
    ) -> tuple[str, datetime]:
        """The state after a failed attempt and when to try again: the wait doubles from
        ``base`` up to ``max_delay``; the last attempt is made at the window's end;
        failing then, the delivery is dead."""
        deadline = retry_since + timedelta(seconds=self.max_age)
        if now >= deadline:
            return "dead", now
        delay = min(self.max_delay, self.base * 2 ** min(attempts_before, 40))
        return "pending", min(now + timedelta(seconds=delay), deadline)


# ---- the sender -----------------------------------------------------------------------


class Poster(Protocol):
    async def post(
        self, url: str, body: bytes, headers: dict[str, str], *, timeout: float
    ) -> FetchResult: ...


@dataclass
class DrainSummary:
    delivered: int = 0
    failed: int = 0  # attempted and failed: retried later
    dead: int = 0
    pending: int = 0  # deliveries still pending afterwards (failed, or not reached in time)
    results: dict[int, str] = field(default_factory=dict)


class Sender:
    """Delivers the outbox's pending events to the configured webhooks."""

    def __init__(
        self,
        outbox: Outbox,
        config: Callable[[], Config],
        owner: str,
        *,
        on_result: Callable[[str], None] | None = None,
        poster: Poster | None = None,
    ) -> None:
        self.outbox = outbox
        self._config = config
        self.owner = owner
        self._on_result = on_result
        self._poster = poster  # another HTTP component (the caller owns it); else ours
        self._fetcher: Fetcher | None = None
        self._fetcher_limits: FetchLimits | None = None
        self._tasks: set[asyncio.Task[str]] = set()
        self._db_failures = 0

    # -- plumbing --
    def _limits(self) -> FetchLimits:
        s = self._config().settings
        return FetchLimits(
            user_agent=s.effective_user_agent(),
            connect_timeout=min(s.connect_timeout, s.webhook_timeout),
            read_timeout=s.webhook_timeout,
            total_timeout=s.webhook_timeout,
            concurrency=s.webhook_concurrency,
            per_host_concurrency=s.webhook_concurrency,
            per_host_delay=0.0,
            allow_private_networks=s.allow_private_networks,
            transport=s.http_transport,
            ca_bundle=s.ca_bundle,
        )

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> FetchResult:
        timeout = self._config().settings.webhook_timeout
        if self._poster is not None:
            return await self._poster.post(url, body, headers, timeout=timeout)
        limits = self._limits()
        if self._fetcher is None or limits != self._fetcher_limits:
            if self._fetcher is not None:  # the settings were reloaded
                await self._fetcher.aclose()
            self._fetcher, self._fetcher_limits = Fetcher(limits), limits
        return await self._fetcher.post(url, body, headers, timeout=timeout)

    async def aclose(self) -> None:
        if self._fetcher is not None:
            await self._fetcher.aclose()
            self._fetcher = None

    def _lease(self) -> float:
        return self._config().settings.webhook_timeout + LEASE_MARGIN

    # -- one attempt --
    async def deliver(self, delivery: Delivery) -> str:
        """One attempt; returns ``delivered``, ``failed`` (retried later), ``dead`` or
        ``skipped`` (the webhook left the config: the lease is given back)."""
        config = self._config()
        spec = next((w for w in config.webhooks if w.url == delivery.webhook_url), None)
        if spec is None:
            await asyncio.to_thread(self.outbox.release, self.owner, [delivery.id])
            return "skipped"
        body = encode(delivery)
        headers = request_headers(
            delivery, body, spec, utcnow(), config.settings.effective_user_agent()
        )
        status: int | None = None
        error: str | None = None
        started = time.monotonic()
        try:
            answer = await self._post(spec.url, body, headers)
            status = answer.status
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except FetchError as exc:
            status, error = exc.status, str(exc)
        now = utcnow()
        if error is None:
            state, next_at = "delivered", now
        else:
            state, next_at = RetryPolicy.of(config).after_failure(
                delivery.attempts, delivery.retry_since, now
            )
        await asyncio.to_thread(
            self.outbox.finish,
            delivery,
            now,
            state=state,
            next_attempt_at=next_at,
            status=status,
            error=error,
        )
        result = state if state != "pending" else "failed"
        if self._on_result is not None:
            self._on_result(result)
        extra = {
            "event": "webhook_" + result,
            "webhook": redact(spec.url),
            "event_id": delivery.event_id,
            "event_type": delivery.type,
            "webhook_id": delivery.event_key,
            "attempt": delivery.attempts + 1,
            "status": status,
            "duration_ms": round(1000 * (time.monotonic() - started)),
        }
        if result == "delivered":
            log.debug("webhook delivered: %s to %s", delivery.type, redact(spec.url), extra=extra)
        elif result == "dead":
            log.error(
                "webhook delivery dead after %d attempts: %s to %s: %s",
                delivery.attempts + 1,
                delivery.type,
                redact(spec.url),
                error,
                extra=extra,
            )
        else:
            log.warning(
                "webhook delivery failed (attempt %d, next at %s): %s to %s: %s",
                delivery.attempts + 1,
                iso(next_at),
                delivery.type,
                redact(spec.url),
                error,
                extra={**extra, "next_attempt_at": iso(next_at)},
            )
        return result

    # -- the daemon --
    async def reclaim_dead_leases(self) -> None:
        """Give back the delivery leases of dead workers of this host (a ``kill -9``):
        their deliveries go out now, not once the leases expire."""
        host = socket.gethostname()
        for owner in await asyncio.to_thread(self.outbox.lease_owners):
            name, _, rest = owner.partition(":")
            pid = rest.partition(":")[0]
            if name == host and pid.isdigit() and not process_exists(int(pid)):
                await asyncio.to_thread(self.outbox.release, owner)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver what is due until ``stop`` is set; a database or delivery failure is
        logged and retried, never raised."""
        try:
            await self.reclaim_dead_leases()
        except StoreError as exc:
            log.warning("webhooks: %s", exc, extra={"event": "webhook_store_error"})
        while not stop.is_set():
            wait = CHECK_INTERVAL
            try:
                wait = await self._step()
                self._db_failures = 0
            except StoreError as exc:
                self._db_failures += 1
                wait = min(60.0, 2.0 ** min(self._db_failures, 6))
                if self._db_failures == 1:
                    log.warning(
                        "webhooks: database unavailable, retrying: %s",
                        exc,
                        extra={"event": "webhook_store_error", "error": str(exc)},
                    )
            except Exception:  # a bug: logged loudly; deliveries go on
                log.critical("webhook sender crashed", exc_info=True, extra={"event": "bug"})
                wait = 10.0
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
        await self._stop()

    async def _step(self) -> float:
        """Claim what is due for the free places; returns how long to wait."""
        free = self._config().settings.webhook_concurrency - len(self._tasks)
        if free <= 0:
            return CHECK_INTERVAL
        if not self._config().webhooks:
            return CHECK_INTERVAL
        due = await asyncio.to_thread(self.outbox.next_due)
        now = utcnow()
        if due is None or due > now:
            return CHECK_INTERVAL
        claimed = await asyncio.to_thread(
            self.outbox.claim, self.owner, now, limit=free, lease_seconds=self._lease()
        )
        for delivery in claimed:
            self._start(delivery)
        return 0.0 if len(claimed) == free else CHECK_INTERVAL

    def _start(self, delivery: Delivery) -> asyncio.Task[str]:
        task = asyncio.create_task(self.deliver(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[str]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if isinstance(exc, StoreError):  # its lease expires; it is retried then
                log.warning(
                    "webhooks: could not record a delivery: %s",
                    exc,
                    extra={"event": "webhook_store_error", "error": str(exc)},
                )
            else:
                log.critical(
                    "webhook delivery crashed",
                    exc_info=(type(exc), exc, exc.__traceback__),
                    extra={"event": "bug"},
                )

    async def _stop(self) -> None:
        """Let the deliveries in flight finish (a little), then give every lease back."""
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=STOP_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        try:
            await asyncio.to_thread(self.outbox.release, self.owner)
        except StoreError as exc:
            log.warning("webhooks: %s", exc, extra={"event": "webhook_store_error"})
        await self.aclose()

    # -- run --once --
    async def drain(self, wait: float) -> DrainSummary:
        """Give every pending delivery of a configured webhook one attempt (due or not:
        this run's events and earlier ones), ``webhook_concurrency`` at once, for at most
        ``wait`` seconds; what is not delivered stays pending."""
        summary = DrainSummary()
        if not self._config().webhooks:
            return summary
        await self.reclaim_dead_leases()
        started = utcnow()
        places = self._config().settings.webhook_concurrency
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        exhausted = False
        try:
            while (self._tasks or not exhausted) and loop.time() < deadline:
                if not exhausted and len(self._tasks) < places:
                    claimed = await asyncio.to_thread(
                        self.outbox.claim,
                        self.owner,
                        utcnow(),
                        limit=places - len(self._tasks),
                        lease_seconds=self._lease(),
                        force=True,
                        attempted_before=started,
                    )
                    exhausted = not claimed
                    for delivery in claimed:
                        task = self._start(delivery)
                        task.add_done_callback(_count(summary, delivery.id))
                    if claimed:
                        continue
                left = deadline - loop.time()
                if left <= 0 or not self._tasks:
                    break
                await asyncio.wait(
                    set(self._tasks), timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            unfinished = set(self._tasks)
            for task in unfinished:
                task.cancel()
            if unfinished:
                await asyncio.wait(unfinished, timeout=1.0)
            await asyncio.to_thread(self.outbox.release, self.owner)
            await self.aclose()
        summary.pending = (await asyncio.to_thread(self.outbox.counts))["pending"]
        return summary


def _count(summary: DrainSummary, delivery_id: int) -> Callable[[asyncio.Task[str]], None]:
    def done(task: asyncio.Task[str]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        result = task.result()
        summary.results[delivery_id] = result
        if result == "delivered":
            summary.delivered += 1
        elif result == "dead":
            summary.dead += 1
        elif result == "failed":
            summary.failed += 1

    return done
