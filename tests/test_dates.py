"""Dates from outside go through one guard (aggregator.dates): out-of-range values are
dropped or clamped with a note, never an OverflowError, wherever they come from."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from aggregator import dates
from aggregator.extract import extract_article
from aggregator.listing import parse_listing
from aggregator.records import HtmlSelectors
from builders import article_page

HOSTILE = "9999-12-31T23:59:59-14:00"  # valid ISO 8601; in UTC it is year 10000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-06-01T10:00:00+02:00", datetime(2026, 6, 1, 8, tzinfo=UTC)),
        ("2026-06-01T10:00:00Z", datetime(2026, 6, 1, 10, tzinfo=UTC)),
        ("2026-06-01", datetime(2026, 6, 1, tzinfo=UTC)),
        ("Mon, 01 Jun 2026 10:00:00 GMT", datetime(2026, 6, 1, 10, tzinfo=UTC)),
        (
            time.struct_time((2026, 6, 1, 10, 0, 61, 0, 152, 0)),
            datetime(2026, 6, 1, 10, 0, 59, tzinfo=UTC),
        ),
        (datetime(2026, 6, 1, 10), datetime(2026, 6, 1, 10, tzinfo=UTC)),  # naive = UTC
        (date(2026, 6, 1), datetime(2026, 6, 1, tzinfo=UTC)),
        ("soon", None),
        ("", None),
        ((2026, 2, 30, 0, 0, 0), None),
        (12, None),
    ],
)
def test_readable_values(value: object, expected: datetime | None) -> None:
    notes: list[str] = []
    assert dates.parse_date(value, "x", notes) == expected
    assert notes == []  # unreadable values are not noted: feeds are full of them


@pytest.mark.parametrize(
    ("value", "end"),
    [
        (HOSTILE, dates.LATEST),
        ("0001-01-01T00:00:00+01:00", dates.EARLIEST),  # year 0 in UTC
        ("Fri, 31 Dec 9999 23:59:59 -1400", dates.LATEST),
        ("9999-12-31T00:00:00Z", dates.LATEST),  # would overflow in a time zone east of UTC
        (time.struct_time((10000, 1, 1, 13, 59, 59, 5, 1, 0)), dates.LATEST),
        ((0, 12, 31, 23, 0, 0), dates.EARLIEST),
        (datetime(1, 1, 1, tzinfo=UTC), dates.EARLIEST),
    ],
)
def test_out_of_range_values_are_dropped_or_clamped_with_a_note(
    value: object, end: datetime
) -> None:
    notes: list[str] = []
    assert dates.parse_date(value, "the date", notes) is None
    assert len(notes) == 1 and notes[0].startswith("the date ") and notes[0].endswith("ignored")
    assert dates.parse_date(value, "the date", notes, clamp=True) == end
    assert notes[1].endswith(f"taken as {end:%Y-%m-%d}")


def test_the_range_leaves_room_for_time_zones_and_delays() -> None:
    for value in (dates.EARLIEST, dates.LATEST):
        for minutes in (-(24 * 60 - 1), 24 * 60 - 1):
            assert value.astimezone(timezone(timedelta(minutes=minutes)))
        assert value + timedelta(days=3650) and value - timedelta(days=3650)


def test_add_clamps_instead_of_overflowing() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert dates.add(now, 60) == now + timedelta(seconds=60)
    assert dates.add(now, 1e30) == dates.LATEST
    assert dates.add(now, float("inf")) == dates.LATEST
    assert dates.add(now, -1e30) == dates.EARLIEST
    assert dates.add(now, float("nan")) == now


def test_a_hostile_value_is_quoted_short_in_its_note() -> None:
    notes: list[str] = []
    dates.parse_date(HOSTILE + " " * 20, "d", notes, shown=HOSTILE + "x" * 500)
    assert len(notes) == 1 and len(notes[0]) < 100 and "…" in notes[0]


def test_article_page_date_out_of_range_is_dropped_and_noted() -> None:
    page = article_page("A story", 3).replace(
        "<head>", f'<head><meta property="article:published_time" content="{HOSTILE}">'
    )
    article = extract_article(page, "https://news.example/a-story")
    assert article.text
    assert article.published is None or article.published.year < 9000
    assert article.notes == (f"article:published_time '{HOSTILE}' is out of range; ignored",)


def test_article_page_date_in_range_is_kept() -> None:
    page = article_page("A story", 3).replace(
        "<head>",
        '<head><meta property="article:published_time" content="2026-06-01T10:00:00+02:00">',
    )
    article = extract_article(page, "https://news.example/a-story")
    assert article.published == datetime(2026, 6, 1, 8, tzinfo=UTC)
    assert article.notes == ()


def test_listing_date_out_of_range_is_dropped_and_noted() -> None:
    blocks = "".join(
        f'<li class="s"><a href="/news/story-{i}.html">Story number {i} of the day</a>'
        f'<time datetime="{HOSTILE if i == 0 else "2026-06-01T10:00:00Z"}">t</time></li>'
        for i in range(3)
    )
    body = f"<!doctype html><html><body><ul>{blocks}</ul></body></html>".encode()
    selectors = HtmlSelectors(item="li.s", date="time@datetime")
    feed = parse_listing(
        body, {"content-type": "text/html"}, "https://news.example/news/", selectors
    )
    assert [e.published for e in feed.entries] == [
        None,
        datetime(2026, 6, 1, 10, tzinfo=UTC),
        datetime(2026, 6, 1, 10, tzinfo=UTC),
    ]
    assert feed.problem == f"listing date '{HOSTILE}' is out of range; ignored"
