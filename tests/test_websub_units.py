"""WebSub's parts one by one: hub discovery in the parsed feed, the protocol's rules
(signatures, verification answers, lease and retry times), the polling rule while a
subscription is live, the guarded POST, the subscriptions' SQL on both databases, and
the HTTP face staying read-only but for the callback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from aggregator.config import Config, Settings, WebSubSettings, parse_config
from aggregator.errors import BlockedAddress, ConfigError
from aggregator.fetch import Fetcher, FetchLimits
from aggregator.parse import parse_feed
from aggregator.policy import while_pushed
from aggregator.records import FeedSpec, PushSubscription
from aggregator.server import create_app
from aggregator.store import open_store
from aggregator.websub import protocol
from aggregator.websub.receiver import Receiver
from appserver import running
from websubhub import Hub

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

# ---- discovery (parse.py) ---------------------------------------------------------------

ATOM = b"""<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>
<link rel="hub" href="/hub"/><link rel="hub" href="https://hub2.example/"/>
<link rel="self" href="https://a.example/feed"/><link href="https://a.example/"/>
<entry><id>1</id><title>x</title></entry></feed>"""

RSS = b"""<?xml version="1.0"?><rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom">
<channel><title>t</title><link>https://a.example/</link>
<atom:link rel="hub" href="https://pubsubhubbub.example/"/>
<atom:link rel="self" type="application/rss+xml" href="https://a.example/rss"/>
<item><guid>1</guid><title>x</title></item></channel></rss>"""


def test_atom_declares_its_hubs_and_self() -> None:
    hints = parse_feed(ATOM, {}, "https://a.example/feed?x").hints
    assert hints.hubs == ("https://a.example/hub", "https://hub2.example/")
    assert hints.self_url == "https://a.example/feed"


def test_rss_declares_them_with_atom_links_in_the_channel() -> None:
    hints = parse_feed(RSS, {}, "https://a.example/rss").hints
    assert hints.hubs == ("https://pubsubhubbub.example/",)
    assert hints.self_url == "https://a.example/rss"


def test_json_feed_declares_them_in_hubs_and_feed_url() -> None:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "j",
        "feed_url": "https://a.example/feed.json",
        "hubs": [
            {"type": "rssCloud", "url": "https://cloud.example/"},
            {"type": "WebSub", "url": "https://hub.example/"},
        ],
        "items": [{"id": "1", "content_text": "x"}],
    }
    hints = parse_feed(json.dumps(doc).encode(), {}, "https://a.example/feed.json").hints
    assert hints.hubs == ("https://hub.example/",)
    assert hints.self_url == "https://a.example/feed.json"


def test_link_headers_come_first() -> None:
    headers = {"Link": '<https://h.example/>; rel="hub", <https://a.example/topic>; rel="self"'}
    hints = parse_feed(ATOM, headers, "https://a.example/feed").hints
    assert hints.hubs == ("https://h.example/",)
    assert hints.self_url == "https://a.example/topic"


def test_no_hub_no_push_hints_and_hostile_links_are_bounded() -> None:
    plain = b"""<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>
    <link rel="self" href="javascript:alert(1)"/><entry><id>1</id><title>x</title></entry></feed>"""
    hints = parse_feed(plain, {}, "https://a.example/feed").hints
    assert hints.hubs == () and hints.self_url is None
    many = "".join(f'<link rel="hub" href="https://h{i}.example/"/>' for i in range(50))
    doc = ATOM.replace(b"<title>t</title>", b"<title>t</title>" + many.encode())
    assert len(parse_feed(doc, {}, "https://a.example/").hints.hubs) == 5


# ---- the protocol's rules -------------------------------------------------------------


def sub(**fields: Any) -> PushSubscription:
    values: dict[str, Any] = {
        "id": 1,
        "feed_id": 1,
        "hub": "https://hub.example/",
        "topic": "https://a.example/feed",
        "callback_id": "c" * 32,
        "secret": "s3cret",
        "state": "pending",
        "request_mode": "subscribe",
        "requested_at": NOW,
        "next_attempt_at": NOW + timedelta(hours=1),
    }
    values.update(fields)
    return PushSubscription(**values)


@pytest.mark.parametrize("method", ["sha1", "sha256", "sha384", "sha512"])
def test_each_recognised_signature_method(method: str) -> None:
    body = b"<feed/>"
    good = hmac.new(b"s3cret", body, getattr(hashlib, method)).hexdigest()
    assert protocol.signature_problem(f"{method}={good}", body, "s3cret") is None
    assert protocol.signature_problem(f"{method.upper()}={good.upper()}", body, "s3cret") is None
    assert protocol.signature_problem(f"{method}={good}", body + b" ", "s3cret") is not None
    assert protocol.signature_problem(f"{method}={good}", body, "other") is not None
    assert protocol.sign(body, "s3cret", method) == f"{method}={good}"


def test_unsigned_and_unknown_methods_are_invalid() -> None:
    assert protocol.signature_problem(None, b"x", "k") == "no X-Hub-Signature header"
    assert "unknown" in (protocol.signature_problem("md5=00", b"x", "k") or "")
    assert protocol.signature_problem("sha256", b"x", "k") is not None


def test_verification_answers() -> None:
    pending = sub()
    ok = protocol.verification(pending, "subscribe", pending.topic, "ch4ll")
    assert (ok.status, ok.body, ok.action) == (200, "ch4ll", "live")
    assert protocol.verification(None, "subscribe", pending.topic, "c").status == 404
    assert protocol.verification(pending, "subscribe", "https://x/", "c").status == 404
    assert protocol.verification(pending, "unsubscribe", pending.topic, "c").status == 404
    assert protocol.verification(pending, "subscribe", pending.topic, None).status == 400
    assert protocol.verification(pending, "subscribe", pending.topic, "c" * 2000).status == 400
    assert protocol.verification(pending, "bogus", pending.topic, "c").status == 400
    # nothing requested: a subscribe verification is not ours
    idle = sub(state="live", request_mode=None, requested_at=None)
    assert protocol.verification(idle, "subscribe", idle.topic, "c").status == 404
    # a renewal of a live one is
    renewing = sub(state="live")
    assert protocol.verification(renewing, "subscribe", renewing.topic, "c").action == "live"
    leaving = sub(state="unsubscribing", request_mode="unsubscribe")
    done = protocol.verification(leaving, "unsubscribe", leaving.topic, "bye")
    assert (done.status, done.body, done.action) == (200, "bye", "unsubscribed")
    assert protocol.verification(leaving, "subscribe", leaving.topic, "c").status == 404
    denied = protocol.verification(idle, "denied", idle.topic, None)
    assert (denied.status, denied.action) == (200, "denied")


def test_leases_renewals_and_retries() -> None:
    assert protocol.granted_lease("3600", 864000) == 3600
    assert protocol.granted_lease(None, 864000) == 864000
    assert protocol.granted_lease("soon", 864000) == 864000
    assert protocol.granted_lease("0", 864000) == 1
    assert protocol.granted_lease("9" * 30, 864000) == protocol.MAX_LEASE
    assert protocol.renew_at(NOW, 10 * 86400) == NOW + timedelta(days=9)  # a day before
    assert protocol.renew_at(NOW, 1000) == NOW + timedelta(seconds=800)  # a fifth before
    assert protocol.retry_at(NOW, 1) == NOW + timedelta(minutes=5)
    assert protocol.retry_at(NOW, 3) == NOW + timedelta(minutes=20)
    assert protocol.retry_at(NOW, 40) == NOW + timedelta(days=1)


def test_next_steps() -> None:
    assert protocol.next_step(sub(request_mode=None, requested_at=None), NOW) == "subscribe"
    assert protocol.next_step(sub(), NOW) is None  # awaiting verification
    assert protocol.next_step(sub(next_attempt_at=NOW), NOW) == "unverified"
    live = sub(state="live", request_mode=None, requested_at=None)
    assert protocol.next_step(live, NOW) == "subscribe"  # the renewal
    leaving = sub(state="unsubscribing", request_mode=None, requested_at=None)
    assert protocol.next_step(leaving, NOW) == "unsubscribe"
    assert protocol.next_step(sub(state="unsubscribed", requested_at=None), NOW) is None


def test_request_bodies() -> None:
    form = httpx.QueryParams(
        protocol.request_body("subscribe", sub(), "https://agg.example/websub/", 864000).decode()
    )
    assert form["hub.mode"] == "subscribe"
    assert form["hub.topic"] == "https://a.example/feed"
    assert form["hub.callback"] == "https://agg.example/websub/" + "c" * 32
    assert form["hub.secret"] == "s3cret"
    assert form["hub.lease_seconds"] == "864000"
    gone = httpx.QueryParams(
        protocol.request_body("unsubscribe", sub(), "https://agg.example/websub", 60).decode()
    )
    assert "hub.secret" not in gone and gone["hub.mode"] == "unsubscribe"


def test_secrets_and_callback_ids_are_unguessable_and_short_enough() -> None:
    ids = {protocol.new_callback_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 32 for i in ids)
    assert all(40 < len(protocol.new_secret().encode()) < 200 for _ in range(10))


def test_polling_while_pushed() -> None:
    usual = NOW + timedelta(minutes=30)
    lease_end = NOW + timedelta(days=9)
    day = 86400.0
    assert while_pushed(usual, NOW, None, day) == usual  # no subscription
    assert while_pushed(usual, NOW, lease_end, day) == NOW + timedelta(days=1)  # safety net
    soon = NOW + timedelta(hours=2)
    assert while_pushed(usual, NOW, soon, day) == soon  # not past the lease's end
    assert while_pushed(usual, NOW, NOW - timedelta(seconds=1), day) == usual  # lapsed
    assert while_pushed(usual, NOW, lease_end, 0) == usual  # WebSub off
    later = NOW + timedelta(days=3)
    assert while_pushed(later, NOW, lease_end, day) == later  # never sooner


def test_websub_settings() -> None:
    cfg = parse_config(
        {"settings": {"websub": {"callback_url": "https://agg.example.org/websub/"}}}
    )
    websub = cfg.settings.websub
    assert websub is not None
    assert websub.callback_url == "https://agg.example.org/websub"
    assert (websub.lease_seconds, websub.poll_interval, websub.verify_timeout) == (
        864000.0,
        86400.0,
        3600.0,
    )
    assert parse_config({}).settings.websub is None
    for bad in ({"callback_url": "ftp://x"}, {}, {"callback_url": "https://a/?x=1"}):
        with pytest.raises(ConfigError, match="websub"):
            parse_config({"settings": {"websub": bad}})
    with pytest.raises(ConfigError, match="lease_seconds"):
        parse_config({"settings": {"websub": {"callback_url": "https://a/", "lease_seconds": 5}}})


# ---- the guarded POST (fetch.py) ---------------------------------------------------------


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_hub_requests_pass_the_address_guard(transport: str) -> None:
    hub = Hub(verify=False)
    form = protocol.request_body("subscribe", sub(), "https://agg.example/websub", 600)

    async def post(allow: tuple[str, ...]) -> int:
        limits = FetchLimits(user_agent="t", allow_private_networks=allow, transport=transport)
        async with Fetcher(limits) as fetcher:
            result = await fetcher.post(
                hub.url, form, content_type="application/x-www-form-urlencoded"
            )
            return result.status

    try:
        with pytest.raises(BlockedAddress):
            asyncio.run(post(()))
        assert hub.requests == []
        assert asyncio.run(post(("127.0.0.0/8",))) == 202
        assert hub.requests[0]["hub.topic"] == "https://a.example/feed"
        assert hub.requests[0]["hub.secret"] == "s3cret"
    finally:
        hub.stop()


# ---- SQL on both databases (store/websub.py) ---------------------------------------------


def test_subscription_rows_claims_and_conditional_changes(db_url: str) -> None:
    store = open_store(db_url)
    try:
        store.upgrade()
        store.sync_feeds([FeedSpec(url="https://a.example/feed")], NOW)
        (feed_id,) = [f.id for f in store.list_feeds()]
        websub = store.websub
        assert websub.discovered(
            feed_id, "https://hub/", "https://a.example/feed", "c" * 32, "k", NOW
        )
        # the same hub and topic again: nothing written
        assert not websub.discovered(
            feed_id, "https://hub/", "https://a.example/feed", "d" * 32, "k", NOW
        )
        # one worker claims it; a second finds nothing to claim while the claim holds
        (claimed,) = websub.claim_due("w1", NOW, limit=10, claim_seconds=60)
        assert claimed.state == "pending" and claimed.secret == "k"
        assert websub.claim_due("w2", NOW, limit=10, claim_seconds=60) == []
        # a request recorded, then its verification; a stale writer changes nothing
        requested = NOW + timedelta(microseconds=123457)
        assert websub.change(
            claimed,
            requested,
            request_mode="subscribe",
            requested_at=requested,
            next_attempt_at=requested + timedelta(hours=1),
        )
        assert not websub.change(claimed, NOW, last_error="stale")
        pending = websub.by_callback("c" * 32)
        assert pending is not None and pending.requested_at == requested
        assert websub.went_live(
            pending,
            NOW,
            lease_seconds=600,
            renew_at=NOW + timedelta(seconds=480),
            safety_poll_at=NOW + timedelta(seconds=600),
        )
        assert not websub.went_live(  # a second verification of the same request
            pending,
            NOW,
            lease_seconds=600,
            renew_at=NOW,
            safety_poll_at=NOW,
        )
        (state,) = store.feed_states(NOW, due_only=False)
        assert state.push_until == NOW + timedelta(seconds=600)
        assert state.next_check_at == NOW + timedelta(seconds=600)
        live = websub.by_feed(feed_id)
        assert live is not None and live.state == "live" and live.last_error is None
        # the feed leaves the config: to be reconciled
        store.sync_feeds([], NOW)
        (leaving,) = websub.to_reconcile()
        assert not leaving.feed_active
        assert websub.change(leaving, NOW, state="unsubscribing", push_until=None, poll_now=True)
        assert websub.counts() == {"unsubscribing": 1}
        assert websub.all()[0].feed_url == "https://a.example/feed"
        assert store.feed_states(NOW, due_only=False) == []  # removed from the config
    finally:
        store.close()


def test_another_hub_or_topic_replaces_the_subscription(db_url: str) -> None:
    store = open_store(db_url)
    try:
        store.upgrade()
        store.sync_feeds([FeedSpec(url="https://a.example/feed")], NOW)
        (feed_id,) = [f.id for f in store.list_feeds()]
        websub = store.websub
        websub.discovered(feed_id, "https://hub/", "https://a.example/feed", "c" * 32, "k", NOW)
        pending = websub.by_feed(feed_id)
        assert pending is not None
        websub.went_live(
            replace(pending, requested_at=None),
            NOW,
            lease_seconds=600,
            renew_at=NOW,
            safety_poll_at=NOW,
        )
        assert websub.discovered(
            feed_id, "https://hub2/", "https://a.example/feed", "d" * 32, "k2", NOW
        )
        moved = websub.by_feed(feed_id)
        assert moved is not None
        assert (moved.hub, moved.callback_id, moved.secret, moved.state) == (
            "https://hub2/",
            "d" * 32,
            "k2",
            "pending",
        )
        assert websub.by_callback("c" * 32) is None  # deliveries to the old callback: 404
        (state,) = store.feed_states(NOW, due_only=False)
        assert state.push_until is None
    finally:
        store.close()


@pytest.mark.postgres
def test_two_workers_discovering_one_feed_at_once(pg_url: str) -> None:
    from aggregator.store import websub as websub_sql

    store = open_store(pg_url)
    try:
        store.upgrade()
        store.sync_feeds([FeedSpec(url="https://a.example/feed")], NOW)
        (feed_id,) = [f.id for f in store.list_feeds()]
        second: dict[str, object] = {}
        with store.engine.connect() as first:
            with first.begin():
                assert websub_sql.discovered(
                    first, feed_id, "https://hub/", "https://a.example/feed", "c" * 32, "k", NOW
                )

                def other() -> None:
                    # its SELECT sees no row (not committed yet); its INSERT waits on the
                    # unique index, then does nothing
                    try:
                        with store.engine.connect() as conn, conn.begin():
                            second["written"] = websub_sql.discovered(
                                conn,
                                feed_id,
                                "https://hub/",
                                "https://a.example/feed",
                                "d" * 32,
                                "k",
                                NOW,
                            )
                    except Exception as exc:  # noqa: BLE001 - reported below
                        second["error"] = exc

                thread = threading.Thread(target=other)
                thread.start()
                thread.join(0.3)  # let it reach the INSERT
            thread.join(30)
        assert second == {"written": False}
        assert [s.callback_id for s in store.websub.all()] == ["c" * 32]
    finally:
        store.close()


# ---- the HTTP face stays read-only but for the callback -----------------------------------


class _NoPipeline:
    async def push(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not pushed")


def _post_routes(app: Any) -> set[str]:
    return {r.path for r in app.routes if "POST" in (getattr(r, "methods", None) or ())}


def test_only_the_callback_accepts_post(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        store.upgrade()
        settings = Settings(websub=WebSubSettings(callback_url="https://agg.example/websub"))
        config = Config(path=None, settings=settings, feeds=())
        plain = create_app(store, lambda: config)
        assert _post_routes(plain) == set()
        receiver = Receiver(store, _NoPipeline(), lambda: config)
        pushing = create_app(store, lambda: config, websub=receiver)
        assert _post_routes(pushing) == {"/websub/{callback_id}"}
        with running(pushing) as base:
            for path in ("/export/atom", "/stories", "/items", "/healthz", "/metrics"):
                assert httpx.post(base + path, content=b"x", timeout=30).status_code == 405
            # an unknown callback: 404 to both methods, nothing read or written
            unknown = base + "/websub/" + "x" * 32
            assert httpx.post(unknown, content=b"x", timeout=30).status_code == 404
            assert (
                httpx.get(unknown, params={"hub.mode": "subscribe"}, timeout=30).status_code == 404
            )
        with running(plain) as base:
            assert httpx.post(base + "/websub/" + "x" * 32, timeout=30).status_code == 404
    finally:
        store.close()
