"""``since``/``until`` values from a request (CLI option, query parameter, export config):
a duration back from now (``24h``, ``7d``) or an ISO 8601 date or timestamp.

A date out of range is rejected, never clamped: every accepted moment lies between
``EARLIEST`` and ``LATEST`` (UTC), two days inside what Python's ``datetime`` can hold,
so that showing it in any time zone (offsets stay under 26 h) or counting the digest's
24-hour window back from it can never overflow later, halfway through an export.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from ..config import parse_duration
from ..dates import QUERY_EARLIEST as EARLIEST
from ..dates import QUERY_LATEST as LATEST
from ..dates import in_query_range as in_range

_RANGE = f"between {EARLIEST.date().isoformat()} and {LATEST.date().isoformat()} (UTC)"


class OutOfRange(ValueError):
    """A well-formed date or duration that lies outside ``EARLIEST``…``LATEST``."""


def duration_before(now: datetime, value: str) -> datetime:
    """``now`` minus a duration (``24h``, ``7d``); ValueError when ``value`` is not a
    duration or reaches back past ``EARLIEST``."""
    seconds = parse_duration(value)
    limit = (now - EARLIEST).total_seconds()
    if not math.isfinite(seconds) or seconds > limit:
        raise OutOfRange(f"{value.strip()!r} reaches back before {EARLIEST.date().isoformat()}")
    return now - timedelta(seconds=seconds)


def parse_when(value: str, now: datetime) -> datetime:
    """``24h``/``7d``/``90m`` (that long before ``now``) or an ISO 8601 date or
    timestamp (UTC when it has no offset), as a UTC datetime in range."""
    text = value.strip()
    try:
        return duration_before(now, text)
    except OutOfRange:
        raise
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is neither a duration (e.g. 24h, 7d) nor an ISO 8601 timestamp "
            "(e.g. 2026-06-01 or 2026-06-01T07:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if not in_range(when):
        raise OutOfRange(f"{value!r} is out of range: dates must lie {_RANGE}")
    return when.astimezone(UTC)
