"""Pure decisions about time and failures: when a feed is due next, backoff, Retry-After,
what a failed poll does to its feed (``failure_update``).

Nothing here reads the clock or a random source: ``now`` and ``jitter`` (a number in
[0, 1)) are arguments, so every rule is unit-testable.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from . import dates
from .records import DORMANT_DAYS, FeedState, FeedUpdate, url_host

JITTER = 0.1  # ±10 % of the interval
MAX_BACKOFF = 24 * 3600.0
MAX_RETRY_AFTER = 7 * 24 * 3600.0


def with_jitter(seconds: float, jitter: float) -> float:
    """Spread ``seconds`` by ±10 %; ``jitter`` in [0, 1)."""
    return seconds * (1.0 + JITTER * (2.0 * jitter - 1.0))


def next_check(now: datetime, interval: float, jitter: float) -> datetime:
    """When a feed that was just polled successfully is due again."""
    return dates.add(now, with_jitter(interval, jitter))


def backoff_delay(interval: float, error_count: int, jitter: float) -> float:
    """Delay after ``error_count`` consecutive failures: interval·2^(n-1), capped at 24 h."""
    exponent = max(0, min(error_count - 1, 30))
    delay = min(interval * (2.0**exponent), MAX_BACKOFF)
    return min(with_jitter(delay, jitter), MAX_BACKOFF)


def while_pushed(
    next_at: datetime, now: datetime, push_until: datetime | None, safety_interval: float
) -> datetime:
    """The next poll of a feed whose updates a live WebSub subscription pushes until
    ``push_until`` (its lease end): polled only as a safety net, ``safety_interval``
    seconds from now, and at the latest when the lease ends (a lapsed subscription is
    polled as usual at once). Never sooner than ``next_at``, the usual next poll."""
    if push_until is None or push_until <= now or safety_interval <= 0:
        return next_at
    return max(next_at, min(dates.add(now, safety_interval), push_until))


def next_check_after_error(
    now: datetime, interval: float, error_count: int, jitter: float
) -> datetime:
    return dates.add(now, backoff_delay(interval, error_count, jitter))


def parse_http_date(
    value: str | None, what: str, notes: list[str] | None = None
) -> datetime | None:
    """An HTTP date header (through the date guard: one out of range is taken as the end
    of the range it passed, and noted)."""
    if not value:
        return None
    return dates.parse_date(value, what, notes, clamp=True)


def _http_seconds(value: str) -> float | None:
    """Delta-seconds (ASCII digits only: ``"²".isdigit()`` is true but no number)."""
    value = value.strip()
    return float(value) if value.isascii() and value.isdigit() else None


def _server_now(date_header: str | None, now: datetime, notes: list[str] | None) -> datetime:
    """The response's Date header, else ``now``; a Date out of range is not believed."""
    if not date_header:
        return now
    return dates.parse_date(date_header, "Date header", notes) or now


def retry_after(
    value: str | None, date_header: str | None, now: datetime, notes: list[str] | None = None
) -> datetime | None:
    """Until when a Retry-After header asks us to wait (capped at 7 days).

    Seconds are relative to ``now``; an HTTP date is taken relative to the response's
    own Date header when it has one (so a server with a skewed clock is still obeyed
    for the length it meant).
    """
    if not value:
        return None
    seconds = _http_seconds(value)
    if seconds is None:
        until = parse_http_date(value, "Retry-After header", notes)
        if until is None:
            return None
        seconds = (until - _server_now(date_header, now, notes)).total_seconds()
    seconds = max(0.0, min(seconds, MAX_RETRY_AFTER))
    return dates.add(now, seconds)


DORMANT_AFTER = DORMANT_DAYS * 86400.0  # continuous 404s before a feed becomes dormant
DORMANT_PROBE = 7 * 86400.0  # a dormant feed is probed once a week
REDIRECT_CONFIRMATIONS = 3
REDIRECT_SPACING = 86400.0


def redirect_progress(
    current_url: str,
    target: str | None,
    seen_url: str | None,
    seen_count: int,
    seen_at: datetime | None,
    now: datetime,
) -> tuple[str | None, int, datetime | None, str | None]:
    """Track a permanent redirect; returns (redirect_url, count, seen_at, new_url).

    The stored URL is rewritten (``new_url``) only after the same permanent redirect was
    seen on 3 consecutive polls at least 24 h apart, and never from https to http.
    """
    if not target or target == current_url:
        return None, 0, None, None
    if current_url.startswith("https:") and target.startswith("http:"):
        return None, 0, None, None
    if target != seen_url or seen_at is None:
        count, at = 1, now
    elif (now - seen_at).total_seconds() >= REDIRECT_SPACING:
        count, at = seen_count + 1, now
    else:
        count, at = seen_count, seen_at
    if count >= REDIRECT_CONFIRMATIONS:
        return None, 0, None, target
    return target, count, at, None


def not_found_delay(
    interval: float, error_count: int, not_found_since: datetime, now: datetime, jitter: float
) -> float:
    """404s back off like other errors; after 30 days of them the feed is probed weekly."""
    if (now - not_found_since).total_seconds() >= DORMANT_AFTER:
        return with_jitter(DORMANT_PROBE, jitter)
    return backoff_delay(interval, error_count, jitter)


_PERIODS = {
    "hourly": 3600.0,
    "daily": 86400.0,
    "weekly": 604800.0,
    "monthly": 2592000.0,
    "yearly": 31536000.0,
}


def cache_lifetime(
    headers: dict[str, str], now: datetime, notes: list[str] | None = None
) -> float | None:
    """Seconds the response says it stays fresh (Cache-Control max-age, else Expires)."""
    control = headers.get("cache-control", "")
    for part in control.split(","):
        name, _, value = part.strip().partition("=")
        if name.lower() in ("max-age", "s-maxage"):
            seconds = _http_seconds(value)
            if seconds is not None:
                return seconds
    expires = parse_http_date(headers.get("expires"), "Expires header", notes)
    if expires is not None:
        reference = _server_now(headers.get("date"), now, notes)
        return max(0.0, (expires - reference).total_seconds())
    return None


def adaptive_interval(
    entry_dates: list[datetime],
    *,
    default: float,
    minimum: float,
    maximum: float,
    hint_seconds: list[float | None],
) -> float:
    """Poll about as often as the feed publishes, within [minimum, maximum].

    The typical gap is the median gap between the most recent entries (up to 20); with
    fewer than two dated entries the default interval is used. The feed's own hints
    (``<ttl>``, ``sy:updatePeriod``, Cache-Control/Expires) only ever raise the interval.
    """
    dates = sorted(set(entry_dates), reverse=True)[:20]
    if len(dates) >= 2:
        gaps = sorted((a - b).total_seconds() for a, b in itertools.pairwise(dates))
        interval = gaps[len(gaps) // 2]
    else:
        interval = default
    for hint in hint_seconds:
        if hint is not None and hint > interval:
            interval = hint
    return max(minimum, min(maximum, interval))


def update_period_seconds(period: str | None, frequency: int | None) -> float | None:
    if not period:
        return None
    base = _PERIODS.get(period.strip().lower())
    if base is None:
        return None
    return base / max(1, frequency or 1)


_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def respect_skips(
    when: datetime, skip_hours: tuple[int, ...], skip_days: tuple[str, ...]
) -> datetime:
    """Move a poll time out of the feed's RSS ``skipHours`` (GMT) and ``skipDays``."""
    hours = {h % 24 for h in skip_hours}
    days = {d.strip().lower() for d in skip_days} & set(_DAYS)
    if len(hours) >= 24 or len(days) >= 7:
        return when  # a feed that skips everything is polled anyway
    moved = when.astimezone(UTC)
    for _ in range(24 * 8):
        if moved.hour not in hours and _DAYS[moved.weekday()] not in days:
            return moved
        moved = (moved + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    return when


RETIRED_FOR = 3650 * 86400.0  # a retired feed's next check (HTTP 410: until re-enabled)


def failure_update(
    state: FeedState,
    now: datetime,
    status: int | None,
    message: str,
    headers: dict[str, str],
    interval: float,
    jitter: float,
) -> FeedUpdate:
    """A failed poll's feed row (``interval``: the feed's polling interval):

    - 410 retires the feed (until ``aggregator feeds enable`` or a re-add);
    - 404 backs off and, after ``DORMANT_DAYS`` of them, probes weekly (``not_found_delay``);
    - anything else backs off exponentially (``next_check_after_error``);
    - 429 and 503 honour Retry-After for every feed of the host (``hold_host``);
    - the validators are kept, and a redirect in progress stays as it was.
    Notes about out-of-range header dates end the error message."""
    errors = state.error_count + 1
    notes: list[str] = []
    disabled = None
    hold = None
    hold_host = None
    not_found_since = None
    if status == 410:
        disabled = f"retired: HTTP 410 Gone at {now.strftime('%Y-%m-%d %H:%M UTC')}"
        next_at = dates.add(now, RETIRED_FOR)
    elif status == 404:
        not_found_since = state.not_found_since or now
        next_at = dates.add(now, not_found_delay(interval, errors, not_found_since, now, jitter))
    else:
        next_at = next_check_after_error(now, interval, errors, jitter)
    if status in (429, 503):
        hold = retry_after(headers.get("retry-after"), headers.get("date"), now, notes)
        if hold is not None:
            hold_host = url_host(state.url)
            next_at = max(next_at, hold)
    if notes:
        message = f"{message}; {dates.summary(notes)}"
    return FeedUpdate(
        polled_at=now,
        status=status,
        ok=False,
        next_check_at=next_at,
        error=message,
        error_count=errors,
        keep_validators=True,
        disabled_reason=disabled,
        hold_until=hold,
        hold_host=hold_host,
        not_found_since=not_found_since,
        redirect_url=state.redirect_url,
        redirect_count=state.redirect_count,
        redirect_seen_at=state.redirect_seen_at,
    )
