"""Dates from outside, through one guard.

Every date that comes from outside (a feed entry's date, a JSON Feed's ``date_published``,
the HTTP ``Date``, ``Expires`` and ``Retry-After`` headers, an article page's
``article:published_time``, a date on an HTML listing page) becomes a ``datetime`` through
:func:`parse_date` and nothing else. The result is tz-aware, in UTC, and lies within
[:data:`EARLIEST`, :data:`LATEST`]; a value outside that range is dropped (``None``) or,
where a caller asks for it, clamped to the range, and a note saying so is appended to the
caller's ``notes`` list (the poll's list of problems, which ends up in the feed's
``last_error`` and the poll's log line).

The range keeps centuries of margin from ``datetime.min``/``datetime.max``: a kept date
can be shifted to any time zone and moved by any delay this program computes (at most
years) without ``OverflowError``. :func:`add` is the one place where a delay from outside
is added to a date.

Pure: no clock, no I/O; imports the standard library only.
"""

from __future__ import annotations

import email.utils
import time
from datetime import UTC, date, datetime, timedelta

EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
_SHOWN = 64  # characters of a hostile value quoted in a note

# The range of a ``since``/``until`` an operator or client asks for (``export.when``, and
# the config check of scheduled exports): two days inside what ``datetime`` holds, so that
# showing it in any time zone or counting a 24-hour window back from it cannot overflow.
QUERY_EARLIEST = datetime(1, 1, 3, tzinfo=UTC)
QUERY_LATEST = datetime(9999, 12, 29, tzinfo=UTC)


def in_query_range(when: datetime) -> bool:
    """True when ``when`` (timezone-aware) lies between the two ``QUERY_`` bounds."""
    try:
        return QUERY_EARLIEST <= when.astimezone(UTC) <= QUERY_LATEST
    except (OverflowError, ValueError):
        return False


def parse_date(
    value: object,
    what: str,
    notes: list[str] | None = None,
    *,
    clamp: bool = False,
    shown: str | None = None,
) -> datetime | None:
    """A date from outside as a UTC datetime within [EARLIEST, LATEST], or None.

    ``value`` may be a string (ISO 8601 / RFC 3339, else an RFC 2822 / HTTP date), a
    ``time.struct_time`` or 6+-tuple in UTC (feedparser's ``*_parsed``), a ``date`` (as
    midnight UTC) or a ``datetime`` (naive = UTC), e.g. one another parser (dateparser)
    returned. ``what`` names the value in a note ("date_published", "Expires header").
    Unreadable values give None without a note (feeds are full of them); a value that
    reads as a date outside the range gives None (``clamp``: the nearest end of the
    range) and a note in ``notes``, quoting ``shown`` (the text the value was read from,
    when ``value`` is another parser's result) or else ``value``.
    """
    if value is None:
        return None
    try:
        parsed = _read(value)
    except _OutOfRange as exc:
        return _out_of_range(shown or value, what, notes, exc.end, clamp)
    if parsed is None:
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        parsed = parsed.replace(tzinfo=UTC)  # (astimezone would take a naive one as local)
    try:
        utc = parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-14:00 is in year 10000 in UTC
        end = LATEST if parsed.year > 5000 else EARLIEST
    else:
        if EARLIEST <= utc <= LATEST:
            return utc
        end = EARLIEST if utc < EARLIEST else LATEST
    return _out_of_range(shown or value, what, notes, end, clamp)


def add(when: datetime, seconds: float) -> datetime:
    """``when`` moved by ``seconds`` (any float, from outside or computed from it),
    kept within [EARLIEST, LATEST]: ``now + Retry-After: 10**30`` is LATEST, not an
    OverflowError."""
    if seconds != seconds:  # NaN
        return when
    try:
        moved = when + timedelta(seconds=seconds)
    except OverflowError:
        return LATEST if seconds > 0 else EARLIEST
    return max(EARLIEST, min(moved, LATEST))


def summary(notes: list[str]) -> str | None:
    """The notes as one sentence for a poll's problem line (the first, and how many more)."""
    if not notes:
        return None
    if len(notes) == 1:
        return notes[0]
    return f"{notes[0]} (and {len(notes) - 1} more like it)"


# ---- helpers ----------------------------------------------------------------------------


class _OutOfRange(Exception):
    """A value that reads as a date ``datetime`` cannot even hold (year 0, year 10000)."""

    def __init__(self, end: datetime) -> None:
        super().__init__(end)
        self.end = end


def _read(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        return _read_text(value)
    if isinstance(value, time.struct_time | tuple):
        return _read_struct(value)
    return None


def _read_text(value: str) -> datetime | None:
    text = value.strip()
    if not text or len(text) > 200:
        return None
    iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    try:
        return datetime.fromisoformat(iso)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _read_struct(value: time.struct_time | tuple[object, ...]) -> datetime | None:
    try:
        year, month, day, hour, minute, second = (int(v) for v in value[:6])  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return None
    if year < 1:
        raise _OutOfRange(EARLIEST)
    if year > 9999:
        raise _OutOfRange(LATEST)
    try:
        return datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:
        return None


def _out_of_range(
    value: object, what: str, notes: list[str] | None, end: datetime, clamp: bool
) -> datetime | None:
    if notes is not None:
        outcome = f"taken as {end:%Y-%m-%d}" if clamp else "ignored"
        notes.append(f"{what} {_show(value)} is out of range; {outcome}")
    return end if clamp else None


def _show(value: object) -> str:
    if isinstance(value, time.struct_time):
        value = tuple(value)[:6]
    text = " ".join(str(value).split())
    if len(text) > _SHOWN:
        text = text[: _SHOWN - 1] + "…"
    return repr(text)
