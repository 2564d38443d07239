"""Events, written in the transaction that makes them happen (the outbox; docs/push.md).

The store's save path calls this module at two places, ONE call each:

- ``record_poll``: at the end of ``Store._save_poll``, after the poll's items are
  written: ``story.new`` for each story the poll started, ``story.sources_reached`` for
  each story whose number of feeds passed a threshold, ``item.new`` per new item (only
  when a webhook asks for it: it is noisy);
- ``record_feed_changes``: at the start of ``Store._write_feeds``, before the feed rows
  are updated (the old values are read, the new ones come from the polls' updates):
  ``feed.failing``, ``feed.recovered``, ``feed.retired``, ``feed.redirected``.

Each event is one ``events`` row; each active webhook that wants it (type, ``tags`` and
``feeds`` filters, threshold) gets an ``event_deliveries`` row, pending and due now; on
PostgreSQL ``NOTIFY aggregator_events, '<event id>'`` goes with it. All of it is in the
caller's transaction: a rollback writes and sends nothing, and a commit cannot lose it
(the sender in ``webhooks.py`` delivers from these rows). Plain functions on a
``Connection``: no threads, no policy.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, case, insert, select, text

from ..records import (
    DEFAULT_SOURCES_REACHED,
    EVENT_SCHEMA_VERSION,
    FeedUpdate,
    feed_state,
)
from .batches import chunks as _chunks
from .eventtables import event_deliveries, events, webhooks
from .tables import feeds, items, stories

CHANNEL = "aggregator_events"  # PostgreSQL NOTIFY channel; the payload is the event's id


@dataclass(frozen=True)
class Hook:
    """An active subscription, as the save path reads it."""

    id: int
    events: frozenset[str]
    sources_reached: int
    tags: frozenset[str]
    feeds: frozenset[str]


@dataclass(frozen=True)
class FeedRef:
    """What the filters look at: a feed's identities and tags."""

    url: str
    configured_url: str | None
    name: str | None
    tags: tuple[str, ...]


@dataclass
class NewEvent:
    type: str
    data: dict[str, Any]
    feeds: list[FeedRef] = field(default_factory=list)  # the feeds concerned (filters)
    feed_id: int | None = None
    story_id: int | None = None
    item_id: int | None = None
    once_key: str | None = None
    threshold: int | None = None  # story.sources_reached


def iso(value: datetime | None) -> str | None:
    """A stored time as the documents show it: ISO 8601, UTC, ``Z``."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def new_key() -> str:
    """An idempotency key (``webhook-id``): never reused, unlike a row id."""
    return "evt_" + secrets.token_hex(16)


def recorded(conn: Connection) -> bool:
    """Are events recorded at all? On PostgreSQL always (a tool may ``LISTEN``); on
    SQLite only while a webhook is configured: nothing else reads them there, and a cold
    ingest would write an event per new story for no one."""
    if conn.dialect.name == "postgresql":
        return True
    found = conn.execute(select(webhooks.c.id).where(webhooks.c.removed_at.is_(None)).limit(1))
    return found.first() is not None


def active_hooks(conn: Connection) -> list[Hook]:
    rows = conn.execute(
        select(
            webhooks.c.id,
            webhooks.c.events,
            webhooks.c.sources_reached,
            webhooks.c.tags,
            webhooks.c.feeds,
        ).where(webhooks.c.removed_at.is_(None))
    )
    return [
        Hook(
            id=r.id,
            events=frozenset(r.events or ()),
            sources_reached=r.sources_reached,
            tags=frozenset(r.tags or ()),
            feeds=frozenset(r.feeds or ()),
        )
        for r in rows
    ]


def wants(hook: Hook, event: NewEvent) -> bool:
    """Does ``hook`` subscribe to ``event`` (type, threshold, filters)?"""
    if event.type not in hook.events:
        return False
    if event.threshold is not None and event.threshold != hook.sources_reached:
        return False
    if hook.tags and not any(hook.tags.intersection(f.tags) for f in event.feeds):
        return False
    return not hook.feeds or any(
        hook.feeds.intersection(n for n in (f.url, f.configured_url, f.name) if n)
        for f in event.feeds
    )


# ---- the poll's items: story.new, story.sources_reached, item.new --------------------


def record_poll(conn: Connection, feed_id: int, keys: Sequence[str], now: datetime) -> None:
    """The events of one poll's new items: those of ``feed_id`` first seen at ``now``
    (``keys``, the entries the poll was given as new, only says whether there can be
    any; entries another worker stored first are not this poll's)."""
    if not keys or not recorded(conn):
        return
    mine = and_(items.c.feed_id == feed_id, items.c.first_seen_at == now)
    touched = select(items.c.story_id).where(mine, items.c.story_id.is_not(None))
    # ONE read: every item of every story this poll touched, with its feed and story
    rows = conn.execute(
        select(
            items.c.story_id,
            case((mine, 1), else_=0).label("mine"),
            items.c.url.label("item_url"),
            items.c.title.label("item_title"),
            feeds.c.id.label("feed_id"),
            feeds.c.url,
            feeds.c.configured_url,
            feeds.c.name,
            feeds.c.title,
            feeds.c.tags,
            stories.c.title.label("story_title"),
            stories.c.url.label("story_url"),
            stories.c.first_seen_at,
        )
        .select_from(
            items.join(feeds, feeds.c.id == items.c.feed_id).join(
                stories, stories.c.id == items.c.story_id
            )
        )
        .where(items.c.story_id.in_(touched.scalar_subquery()))
        .order_by(items.c.story_id, items.c.first_seen_at, items.c.id)
    ).all()
    hooks = active_hooks(conn)
    found: list[NewEvent] = []
    thresholds = {DEFAULT_SOURCES_REACHED} | {
        h.sources_reached for h in hooks if "story.sources_reached" in h.events
    }
    for story_rows in _by_story(rows):
        head = story_rows[0]
        sources: dict[int, tuple[dict[str, Any], FeedRef]] = {}
        for r in story_rows:  # one source per feed: its earliest item
            if r.feed_id not in sources:
                sources[r.feed_id] = (
                    {
                        "feed": r.name or r.title or r.url,
                        "feed_url": r.url,
                        "item_url": r.item_url,
                        "title": r.item_title,
                    },
                    FeedRef(r.url, r.configured_url, r.name, tuple(r.tags or ())),
                )
        refs = [ref for _source, ref in sources.values()]
        data = {
            "story_id": head.story_id,
            "title": head.story_title,
            "url": head.story_url,
            "first_seen_at": iso(head.first_seen_at),
            "sources": [source for source, _ref in sources.values()],
        }
        before = len({r.feed_id for r in story_rows if not r.mine})
        if all(r.mine for r in story_rows):  # every item is this poll's: a new story
            found.append(NewEvent("story.new", data, refs, feed_id=feed_id, story_id=head.story_id))
        for n in sorted(thresholds):
            if before < n <= len(sources):
                found.append(
                    NewEvent(
                        "story.sources_reached",
                        {**data, "threshold": n},
                        refs,
                        feed_id=feed_id,
                        story_id=head.story_id,
                        # a story id can come back on SQLite (a merged-away story's id
                        # reused): its first time keeps the two apart
                        once_key=(
                            f"story.sources_reached:{head.story_id}@{iso(head.first_seen_at)}:{n}"
                        ),
                        threshold=n,
                    )
                )
    if any("item.new" in h.events for h in hooks):
        found.extend(_item_events(conn, feed_id, now))
    write(conn, found, hooks, now)


def _by_story(rows: Sequence[Any]) -> Iterator[list[Any]]:
    """``rows`` (ordered by story) in one list per story."""
    current: list[Any] = []
    for row in rows:
        if current and current[0].story_id != row.story_id:
            yield current
            current = []
        current.append(row)
    if current:
        yield current


def _item_events(conn: Connection, feed_id: int, now: datetime) -> list[NewEvent]:
    feed = conn.execute(
        select(
            feeds.c.url, feeds.c.configured_url, feeds.c.name, feeds.c.title, feeds.c.tags
        ).where(feeds.c.id == feed_id)
    ).one()
    ref = FeedRef(feed.url, feed.configured_url, feed.name, tuple(feed.tags or ()))
    rows = conn.execute(
        select(
            items.c.id,
            items.c.story_id,
            items.c.url,
            items.c.title,
            items.c.first_seen_at,
            items.c.published_at,
        )
        .where(items.c.feed_id == feed_id, items.c.first_seen_at == now)
        .order_by(items.c.id)
    )
    found: list[NewEvent] = []
    for r in rows:
        data = {
            "item_id": r.id,
            "story_id": r.story_id,
            "title": r.title,
            "url": r.url,
            "feed": feed.name or feed.title or feed.url,
            "feed_url": feed.url,
            "first_seen_at": iso(r.first_seen_at),
            "published_at": iso(r.published_at),
        }
        found.append(
            NewEvent("item.new", data, [ref], feed_id=feed_id, story_id=r.story_id, item_id=r.id)
        )
    return found


# ---- feed state changes -----------------------------------------------------------------


@dataclass(frozen=True)
class _Status:
    """A feed's state inputs (``records.FeedStatus``)."""

    removed: bool
    disabled_reason: str | None
    enabled: bool
    hold_until: datetime | None
    error_count: int
    last_polled_at: datetime | None
    not_found_since: datetime | None


def record_feed_changes(conn: Connection, updates: Sequence[tuple[int, FeedUpdate]]) -> None:
    """The state changes the polls' ``updates`` are about to make to their feed rows
    (call BEFORE writing them: the old values are read here): ``feed.retired`` (a
    disable reason appears), ``feed.failing`` (errors start), ``feed.recovered`` (a
    successful poll ends them), ``feed.redirected`` (a confirmed permanent redirect
    rewrites the URL)."""
    if not updates or not recorded(conn):
        return
    columns = (
        feeds.c.id,
        feeds.c.url,
        feeds.c.configured_url,
        feeds.c.name,
        feeds.c.title,
        feeds.c.tags,
        feeds.c.removed_at,
        feeds.c.disabled_reason,
        feeds.c.enabled,
        feeds.c.hold_until,
        feeds.c.error_count,
        feeds.c.not_found_since,
    )
    # A plain successful poll (the usual case: a 304) changes a feed's state only when
    # the feed was failing: for those, only failing rows are read (usually none)
    plain = {f for f, u in updates if u.ok and not u.error_count and not _moves(u)}
    others = {f for f, _u in updates} - plain
    old: dict[int, Any] = {}
    for ids, only_failing in ((plain, True), (others, False)):
        for chunk in _chunks(sorted(ids)):
            query = select(*columns).where(feeds.c.id.in_(chunk))
            if only_failing:
                query = query.where(feeds.c.error_count > 0)
            old.update((r.id, r) for r in conn.execute(query))
    found: list[NewEvent] = []
    for feed_id, u in updates:
        row = old.get(feed_id)
        if row is None:
            continue
        kinds: list[str] = []
        url = row.url
        if u.new_url is not None and u.new_url != row.url and not _taken(conn, u.new_url, feed_id):
            kinds.append("feed.redirected")
            url = u.new_url
        if u.disabled_reason is not None and not row.disabled_reason:
            kinds.append("feed.retired")
        elif u.error_count > 0 and row.error_count == 0 and not row.disabled_reason:
            kinds.append("feed.failing")
        elif u.ok and u.error_count == 0 and row.error_count > 0:
            kinds.append("feed.recovered")
        if not kinds:
            continue
        hold = row.hold_until
        if u.hold_until is not None and (hold is None or hold < u.hold_until):
            hold = u.hold_until
        state = feed_state(
            u.polled_at,
            _Status(
                removed=row.removed_at is not None,
                disabled_reason=u.disabled_reason or row.disabled_reason,
                enabled=row.enabled,
                hold_until=hold,
                error_count=u.error_count,
                last_polled_at=u.polled_at,
                not_found_since=u.not_found_since,
            ),
        )
        ref = FeedRef(url, row.configured_url, row.name, tuple(row.tags or ()))
        for kind in kinds:
            data: dict[str, Any] = {
                "feed_url": url,
                "feed_name": row.name or row.title,
                "state": state,
                "error": u.disabled_reason if kind == "feed.retired" else u.error,
            }
            if kind == "feed.redirected":
                data["previous_url"] = row.url
            found.append(NewEvent(kind, data, [ref], feed_id=feed_id))
    if found:
        write(conn, found, active_hooks(conn), max(u.polled_at for _f, u in updates))


def _moves(u: FeedUpdate) -> bool:
    """Can this update retire or move its feed?"""
    return u.new_url is not None or u.disabled_reason is not None


def _taken(conn: Connection, url: str, feed_id: int) -> bool:
    """Does another feed have ``url`` (then the store does not rewrite it)?"""
    return (
        conn.execute(select(feeds.c.id).where(feeds.c.url == url, feeds.c.id != feed_id)).first()
        is not None
    )


# ---- writing ----------------------------------------------------------------------------


def write(
    conn: Connection, found: Iterable[NewEvent], hooks: Sequence[Hook], now: datetime
) -> None:
    """The events, their deliveries (one per hook that wants each) and, on PostgreSQL,
    their notifications, in the caller's transaction."""
    plain: list[NewEvent] = []
    ids: list[int] = []
    written: list[NewEvent] = []
    for event in found:
        if event.once_key is None:
            plain.append(event)
            continue
        event_id = _insert_once(conn, event, now)
        if event_id is not None:
            ids.append(event_id)
            written.append(event)
    if plain:
        ids.extend(
            conn.execute(
                insert(events).returning(events.c.id, sort_by_parameter_order=True),
                [_row(event, now) for event in plain],
            )
            .scalars()
            .all()
        )
        written.extend(plain)
    if not ids:
        return
    deliveries = [
        {
            "event_id": event_id,
            "webhook_id": hook.id,
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "retry_since": now,
        }
        for event_id, event in zip(ids, written, strict=True)
        for hook in hooks
        if wants(hook, event)
    ]
    if deliveries:
        conn.execute(insert(event_deliveries), deliveries)
    if conn.dialect.name == "postgresql":
        # delivered to LISTENers at commit, in this order; never after a rollback
        conn.execute(
            text(
                "SELECT count(pg_notify(:channel, CAST(x AS text)))"
                " FROM unnest(CAST(:ids AS bigint[])) AS x"
            ),
            {"channel": CHANNEL, "ids": sorted(ids)},
        )


def _row(event: NewEvent, now: datetime) -> dict[str, Any]:
    return {
        "event_key": new_key(),
        "type": event.type,
        "version": EVENT_SCHEMA_VERSION,
        "created_at": now,
        "feed_id": event.feed_id,
        "story_id": event.story_id,
        "item_id": event.item_id,
        "once_key": event.once_key,
        "data": json.dumps(event.data, ensure_ascii=False, separators=(",", ":")),
    }


def _insert_once(conn: Connection, event: NewEvent, now: datetime) -> int | None:
    """An event with a ``once_key``: its id, or None when that key fired already (a
    concurrent transaction inserting the same key waits for it, then inserts nothing)."""
    # the dialect's INSERT … ON CONFLICT; its module is the one the engine loaded already
    statement: Any
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        statement = pg_insert(events).values(_row(event, now))
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(events).values(_row(event, now))
    statement = statement.on_conflict_do_nothing(index_elements=["once_key"]).returning(events.c.id)
    found: int | None = conn.execute(statement).scalar_one_or_none()
    return found
