"""WebSub's rules for a subscriber (W3C Recommendation, 23 January 2018), pure.

No I/O and no clock: ``now`` is an argument. Section numbers are the Recommendation's.

A subscription moves through these states (``websub_subscriptions.state``):

- ``pending``: wanted; a subscribe request is due, or sent and awaiting the hub's
  verification (``request_mode``/``requested_at`` set);
- ``live``: verified; the hub pushes until ``lease_expires_at``; a renewal (another
  subscribe request) is due before then and keeps it live while it awaits verification;
- ``failed``: the hub refused, denied or never verified: retried after a backoff;
- ``unsubscribing``: the feed left feeds.yaml (or was disabled): an unsubscribe request
  is due or awaits verification;
- ``unsubscribed``: done (the row stays; a feed added again subscribes anew).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlencode

from ..records import PushSubscription

# 8: "method=signature"; the recognized algorithm names
SIGNATURE_METHODS = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}
RETRY_BASE = 300.0  # seconds before the first retry of a failed request; doubled each time
RETRY_MAX = 86400.0
RENEW_MARGIN_MAX = 86400.0  # renew at most this long before the lease ends
MAX_LEASE = 10 * 365 * 86400  # a hub's grant is believed up to this
MAX_CHALLENGE = 1024  # characters echoed back to a verification request
UNSUBSCRIBE_ATTEMPTS = 3  # failed unsubscribe requests before we give up (the lease ends)

Step = Literal["subscribe", "unsubscribe", "unverified"]


def new_callback_id() -> str:
    """The unguessable last path segment of a subscription's callback URL (192 bits)."""
    return secrets.token_urlsafe(24)


def new_secret() -> str:
    """A subscription's ``hub.secret`` (5.1: under 200 bytes; 384 bits)."""
    return secrets.token_urlsafe(48)


def callback_url(base: str, callback_id: str) -> str:
    return f"{base.rstrip('/')}/{callback_id}"


def request_body(mode: str, sub: PushSubscription, base: str, lease_seconds: float) -> bytes:
    """The form of a subscribe or unsubscribe request to the hub (5.1)."""
    form = {
        "hub.mode": mode,
        "hub.topic": sub.topic,
        "hub.callback": callback_url(base, sub.callback_id),
    }
    if mode == "subscribe":
        form["hub.lease_seconds"] = str(int(lease_seconds))
        form["hub.secret"] = sub.secret
    return urlencode(form).encode("ascii")


def signature_problem(header: str | None, body: bytes, secret: str) -> str | None:
    """Why a delivery's ``X-Hub-Signature`` does not authenticate ``body`` (8), or None
    when it does. A subscription always has a secret, so an unsigned delivery is invalid."""
    if not header:
        return "no X-Hub-Signature header"
    method, _, signature = header.strip().partition("=")
    digest = SIGNATURE_METHODS.get(method.strip().lower())
    if digest is None:
        return f"unknown X-Hub-Signature method {method.strip()[:20]!r}"
    expected = hmac.new(secret.encode("utf-8"), body, digest).hexdigest()
    if not hmac.compare_digest(expected, signature.strip().lower()):
        return "X-Hub-Signature does not match"
    return None


def sign(body: bytes, secret: str, method: str = "sha256") -> str:
    """An ``X-Hub-Signature`` value (what a hub sends; for tests and tools)."""
    digest = hmac.new(secret.encode("utf-8"), body, SIGNATURE_METHODS[method])
    return f"{method}={digest.hexdigest()}"


def granted_lease(value: str | None, requested: float) -> int:
    """The lease the hub's verification grants (``hub.lease_seconds``, required for a
    subscription; missing or unreadable: the one we asked for), within 1 s .. 10 years."""
    try:
        seconds = int((value or "").strip())
    except ValueError:
        seconds = int(requested)
    return max(1, min(seconds, MAX_LEASE))


def renew_at(now: datetime, lease_seconds: int) -> datetime:
    """When to renew a lease granted now: a fifth of it before its end, at most a day."""
    margin = min(lease_seconds * 0.2, RENEW_MARGIN_MAX)
    return now + timedelta(seconds=lease_seconds - margin)


def retry_at(now: datetime, attempts: int) -> datetime:
    """When to try again after ``attempts`` failed requests in a row: 5 min, doubled each
    time, at most a day."""
    exponent = max(0, min(attempts - 1, 20))
    return now + timedelta(seconds=min(RETRY_BASE * 2.0**exponent, RETRY_MAX))


def next_step(sub: PushSubscription, now: datetime) -> Step | None:
    """What a due subscription needs: a request sent, or the end of waiting for the
    verification of one sent earlier."""
    if sub.requested_at is not None:
        due = sub.next_attempt_at is None or sub.next_attempt_at <= now
        return "unverified" if due else None
    if sub.state in ("pending", "failed", "live"):
        return "subscribe"  # live: the renewal
    if sub.state == "unsubscribing":
        return "unsubscribe"
    return None


def lapsed(sub: PushSubscription, now: datetime) -> bool:
    """A live subscription whose lease has run out (no renewal was verified in time)."""
    return sub.state == "live" and (sub.lease_expires_at is None or sub.lease_expires_at <= now)


@dataclass(frozen=True)
class Answer:
    """Our answer to a hub's request on a callback URL."""

    status: int
    body: str = ""
    action: Literal["live", "unsubscribed", "denied"] | None = None
    note: str | None = None  # for the log: why it was refused or what it did


def verification(
    sub: PushSubscription | None,
    mode: str | None,
    topic: str | None,
    challenge: str | None,
) -> Answer:
    """The answer to a verification of intent (5.3) or a denial (5.2) on ``sub``'s
    callback: the challenge echoed (200) when it confirms the request we are waiting
    for, else 404 ("does not agree with the action")."""
    if sub is None:
        return Answer(404, "unknown callback", note="unknown callback")
    if topic != sub.topic:
        return Answer(404, "topic does not match", note="another topic")
    if mode == "denied":
        if sub.state in ("pending", "live", "failed"):
            return Answer(200, "", action="denied")
        return Answer(200, "")
    if mode not in ("subscribe", "unsubscribe"):
        return Answer(400, "hub.mode must be subscribe, unsubscribe or denied", note="bad mode")
    if not challenge:
        return Answer(400, "hub.challenge is missing", note="no challenge")
    if len(challenge) > MAX_CHALLENGE:
        return Answer(400, f"hub.challenge is longer than {MAX_CHALLENGE} characters")
    awaited = sub.requested_at is not None and sub.request_mode == mode
    if mode == "subscribe" and (not awaited or sub.state not in ("pending", "live")):
        return Answer(404, "no subscription request pending", note="not pending")
    if mode == "unsubscribe" and (not awaited or sub.state != "unsubscribing"):
        return Answer(404, "no unsubscription request pending", note="not pending")
    action: Literal["live", "unsubscribed"] = "live" if mode == "subscribe" else "unsubscribed"
    return Answer(200, challenge, action=action)


def one_line(body: bytes, limit: int = 200) -> str:
    """A hub's answer body for an error message: text, one line, ``limit`` characters."""
    text = body[: limit * 4].decode("utf-8", "replace")
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text[:limit] + ("…" if len(text) > limit else "")
