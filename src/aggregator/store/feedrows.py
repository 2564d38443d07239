"""A poll's outcome on its feed's row: validators, status, errors, next check, the lease
released, a confirmed redirect, a Retry-After hold of the feed or its host.

Polls of one shape (the same columns set) are written with one executemany; a poll that
moves its feed or holds it (or its host) goes on its own, after those rows, so a feed of
a held host in the same batch ends up held.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, or_, select, update
from sqlalchemy.sql.dml import Update

from ..records import FeedUpdate, url_host
from . import events as event_outbox
from . import websub as websub_sql
from .tables import feeds


def feed_url(conn: Connection, feed_id: int) -> str | None:
    url = conn.execute(select(feeds.c.url).where(feeds.c.id == feed_id)).scalar_one_or_none()
    return None if url is None else str(url)


def write_feeds(conn: Connection, updates: Sequence[tuple[int, FeedUpdate]]) -> None:
    """Several polls' feed rows: those of one shape (the same columns set) in one
    executemany; a poll that moves the feed (a permanent redirect) or holds it (or
    its host) goes on its own, after those rows."""
    # OUTBOX HOOK (store/events.py): feed.failing / recovered / retired / redirected
    # events, computed from the rows' old values (so: before they are updated); a push
    # changes no feed state
    event_outbox.record_feed_changes(conn, [(f, u) for f, u in updates if not u.pushed])
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    alone: list[tuple[int, FeedUpdate]] = []
    for feed_id, u in updates:
        if u.pushed:  # a WebSub delivery, not a poll: the feed's poll state stays
            websub_sql.record_push(conn, feed_id, u.polled_at)
            continue
        if u.new_url is not None or u.hold_until is not None:
            alone.append((feed_id, u))
            continue
        values = _feed_values(u)
        shapes.setdefault(tuple(values), []).append(
            {"v_feed_id": feed_id, **{f"v_{k}": v for k, v in values.items()}}
        )
    for columns, rows in shapes.items():
        conn.execute(_feed_update(columns), rows)
    for feed_id, u in alone:
        _write_one_feed(conn, feed_id, u)


def _write_one_feed(conn: Connection, feed_id: int, u: FeedUpdate) -> None:
    values = _feed_values(u)
    if u.new_url is not None:
        clash = conn.execute(
            select(feeds.c.id).where(feeds.c.url == u.new_url, feeds.c.id != feed_id)
        ).first()
        if clash is None:
            values["url"] = u.new_url
            values["host"] = url_host(u.new_url)
            values["redirect_url"] = None
            values["redirect_count"] = 0
            values["redirect_seen_at"] = None
    conn.execute(
        _feed_update(tuple(values)),
        {"v_feed_id": feed_id, **{f"v_{k}": v for k, v in values.items()}},
    )
    if u.hold_until is not None:
        hold = u.hold_until
        host_filter = feeds.c.id == feed_id
        if u.hold_host:
            host_filter = or_(host_filter, feeds.c.host == u.hold_host)
        conn.execute(
            update(feeds)
            .where(host_filter, or_(feeds.c.hold_until.is_(None), feeds.c.hold_until < hold))
            .values(hold_until=hold)
        )
        conn.execute(
            update(feeds)
            .where(
                host_filter,
                or_(feeds.c.next_check_at.is_(None), feeds.c.next_check_at < hold),
            )
            .values(next_check_at=hold)
        )


@functools.lru_cache(maxsize=64)
def _feed_update(columns: tuple[str, ...]) -> Update:
    """UPDATE feeds SET the columns WHERE id = :v_feed_id, built once per column set: every
    poll ends with one, and building and keying a new statement each time cost more than
    running it (warm polls of 2000 feeds, docs/performance.md)."""
    return (
        update(feeds)
        .where(feeds.c.id == bindparam("v_feed_id"))
        .values({c: bindparam(f"v_{c}", type_=feeds.c[c].type) for c in columns})
    )


def _feed_values(u: FeedUpdate) -> dict[str, Any]:
    """The feed row's columns a poll sets (which ones depends on the poll)."""
    values: dict[str, Any] = {
        "last_polled_at": u.polled_at,
        "last_status": u.status,
        "last_error": u.error,
        "error_count": u.error_count,
        "next_check_at": u.next_check_at,
        "redirect_url": u.redirect_url,
        "redirect_count": u.redirect_count,
        "redirect_seen_at": u.redirect_seen_at,
        "not_found_since": u.not_found_since,
        "lease_owner": None,  # the poll is done: release the lease
        "lease_expires_at": None,
    }
    if u.ok:
        values["last_success_at"] = u.polled_at
    if not u.keep_validators:
        values["etag"] = u.etag
        values["last_modified"] = u.last_modified
    if u.disabled_reason is not None:
        values["disabled_reason"] = u.disabled_reason
    if u.interval_seconds is not None:
        values["adaptive_interval_seconds"] = u.interval_seconds
    if u.title is not None:
        values["title"] = u.title
    return values
