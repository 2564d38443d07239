"""Every rule of the polling policy, with `now` and the jitter passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aggregator import policy

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_jitter_spreads_ten_percent() -> None:
    assert policy.with_jitter(1000, 0.0) == pytest.approx(900)
    assert policy.with_jitter(1000, 0.5) == pytest.approx(1000)
    assert policy.with_jitter(1000, 0.999999) == pytest.approx(1100, rel=1e-4)
    assert policy.next_check(NOW, 600, 0.5) == NOW + timedelta(seconds=600)


def test_backoff_is_exponential_and_capped() -> None:
    delays = [policy.backoff_delay(600, n, 0.5) for n in range(1, 10)]
    assert delays[:4] == [600, 1200, 2400, 4800]
    assert max(delays) == policy.MAX_BACKOFF
    assert policy.backoff_delay(600, 200, 0.999) <= policy.MAX_BACKOFF


def test_retry_after_seconds_and_dates() -> None:
    assert policy.retry_after("120", None, NOW) == NOW + timedelta(seconds=120)
    # a date is taken relative to the response's own Date header (skewed server clock)
    date = "Mon, 01 Jun 2026 10:00:00 GMT"
    until = "Mon, 01 Jun 2026 11:00:00 GMT"
    assert policy.retry_after(until, date, NOW) == NOW + timedelta(hours=1)
    # without Date, relative to now
    assert policy.retry_after("Mon, 01 Jun 2026 13:00:00 GMT", None, NOW) == NOW + timedelta(
        hours=1
    )
    # capped at 7 days, never negative, garbage ignored
    assert policy.retry_after("99999999", None, NOW) == NOW + timedelta(days=7)
    assert policy.retry_after("Mon, 01 Jun 2026 11:00:00 GMT", None, NOW) == NOW
    assert policy.retry_after("soon", None, NOW) is None
    assert policy.retry_after(None, None, NOW) is None


def test_permanent_redirect_needs_three_polls_a_day_apart() -> None:
    url, target = "https://old.example/feed", "https://new.example/feed"
    state = policy.redirect_progress(url, target, None, 0, None, NOW)
    assert state == (target, 1, NOW, None)
    # seen again within 24 h: not counted
    later = NOW + timedelta(hours=3)
    assert policy.redirect_progress(url, target, *state[:3], later) == (target, 1, NOW, None)
    day2 = NOW + timedelta(days=1)
    state = policy.redirect_progress(url, target, *state[:3], day2)
    assert state == (target, 2, day2, None)
    day3 = day2 + timedelta(days=1)
    assert policy.redirect_progress(url, target, *state[:3], day3) == (None, 0, None, target)
    # a different target restarts the count; no redirect resets it
    assert policy.redirect_progress(url, "https://other.example/", *state[:3], day3)[1] == 1
    assert policy.redirect_progress(url, None, *state[:3], day3) == (None, 0, None, None)


def test_redirect_never_downgrades_to_http() -> None:
    assert policy.redirect_progress(
        "https://a.example/feed", "http://a.example/feed", None, 0, None, NOW
    ) == (None, 0, None, None)


def test_not_found_becomes_dormant_after_30_days() -> None:
    recent = NOW - timedelta(days=2)
    assert policy.not_found_delay(600, 3, recent, NOW, 0.5) == 2400
    old = NOW - timedelta(days=31)
    assert policy.not_found_delay(600, 40, old, NOW, 0.5) == policy.DORMANT_PROBE


def test_adaptive_interval_follows_publishing_and_hints() -> None:
    hourly = [NOW - timedelta(hours=h) for h in range(10)]
    assert (
        policy.adaptive_interval(hourly, default=1800, minimum=600, maximum=86400, hint_seconds=[])
        == 3600
    )
    # clamped to [min, max]
    burst = [NOW - timedelta(minutes=m) for m in range(10)]
    assert (
        policy.adaptive_interval(burst, default=1800, minimum=600, maximum=86400, hint_seconds=[])
        == 600
    )
    rare = [NOW - timedelta(days=10 * d) for d in range(5)]
    assert (
        policy.adaptive_interval(rare, default=1800, minimum=600, maximum=86400, hint_seconds=[])
        == 86400
    )
    # no dates: the default; hints only raise
    assert (
        policy.adaptive_interval([], default=1800, minimum=600, maximum=86400, hint_seconds=[7200])
        == 7200
    )
    assert (
        policy.adaptive_interval(
            hourly, default=1800, minimum=600, maximum=86400, hint_seconds=[60]
        )
        == 3600
    )


def test_cache_lifetime_and_update_period() -> None:
    assert policy.cache_lifetime({"cache-control": "public, max-age=900"}, NOW) == 900
    headers = {"expires": "Mon, 01 Jun 2026 12:30:00 GMT", "date": "Mon, 01 Jun 2026 12:00:00 GMT"}
    assert policy.cache_lifetime(headers, NOW) == 1800
    assert policy.cache_lifetime({}, NOW) is None
    assert policy.update_period_seconds("hourly", 2) == 1800
    assert policy.update_period_seconds("daily", None) == 86400
    assert policy.update_period_seconds("fortnightly", 1) is None


def test_skip_hours_and_days_push_the_next_poll() -> None:
    monday_9 = datetime(2026, 6, 1, 9, 30, tzinfo=UTC)  # 2026-06-01 is a Monday
    assert policy.respect_skips(monday_9, (), ()) == monday_9
    assert policy.respect_skips(monday_9, (9, 10), ()) == datetime(2026, 6, 1, 11, 0, tzinfo=UTC)
    assert policy.respect_skips(monday_9, (), ("Monday",)) == datetime(2026, 6, 2, 0, 0, tzinfo=UTC)
    assert policy.respect_skips(monday_9, (0,), ("Monday",)) == datetime(
        2026, 6, 2, 1, 0, tzinfo=UTC
    )
    assert policy.respect_skips(monday_9, tuple(range(24)), ()) == monday_9


HOSTILE_HTTP = "Fri, 31 Dec 9999 23:59:59 -1400"  # year 10000 in UTC


def test_hostile_http_dates_are_clamped_and_noted() -> None:
    notes: list[str] = []
    # Retry-After far away: the 7-day cap, not an OverflowError
    assert policy.retry_after(HOSTILE_HTTP, None, NOW, notes) == NOW + timedelta(days=7)
    assert policy.retry_after(HOSTILE_HTTP, HOSTILE_HTTP, NOW) == NOW + timedelta(days=7)
    assert notes == [f"Retry-After header '{HOSTILE_HTTP}' is out of range; taken as 9000-01-01"]
    # a Date header out of range is not believed: the delay counts from now
    notes.clear()
    until = "Mon, 01 Jun 2026 13:00:00 GMT"
    assert policy.retry_after(until, HOSTILE_HTTP, NOW, notes) == NOW + timedelta(hours=1)
    assert notes == [f"Date header '{HOSTILE_HTTP}' is out of range; ignored"]
    # Expires far away: a long lifetime (adaptive_interval caps it at max_interval)
    notes.clear()
    lifetime = policy.cache_lifetime({"expires": HOSTILE_HTTP}, NOW, notes)
    assert lifetime is not None and lifetime > 100 * 365 * 86400
    assert notes and "Expires header" in notes[0]
    assert policy.cache_lifetime({"expires": "Mon, 01 Jan 0001 00:00:00 GMT"}, NOW) is not None


def test_header_numbers_are_ascii_digits_only() -> None:
    # "²".isdigit() is true, float("²") raises
    assert policy.retry_after("²", None, NOW) is None
    assert policy.cache_lifetime({"cache-control": "max-age=²"}, NOW) is None


def test_date_arithmetic_never_overflows() -> None:
    # now + a huge delay (an interval, a Retry-After, a backoff) stays a date
    far = policy.next_check(NOW, 1e300, 0.5)
    assert far.year == 9000
    assert policy.next_check_after_error(NOW, 1e300, 3, 0.5) == NOW + timedelta(
        seconds=policy.MAX_BACKOFF
    )
    assert policy.retry_after("9" * 40, None, NOW) == NOW + timedelta(days=7)
