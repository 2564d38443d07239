"""WebSub against a real hub (tests/websubhub.py): the daemon, in this process, with its
HTTP face on 127.0.0.1, subscribes at the hub its feed declares, answers the hub's
verifications, renews, receives pushes through the poll's parse/dedup/store path,
refuses what it must, and unsubscribes when the feed leaves feeds.yaml."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import create_engine, text

from aggregator.config import load_config
from aggregator.records import PushSubscription
from aggregator.scheduler import Daemon
from aggregator.store import open_store
from httpserver import FixtureServer
from websubhub import Hub


def atom(topic: str, hub: str | None, entries: list[tuple[str, str]]) -> str:
    links = f'<link rel="self" href="{escape(topic)}"/>'
    if hub:
        links += f'<link rel="hub" href="{escape(hub)}"/>'
    body = "".join(
        f"<entry><id>urn:{key}</id><title>{escape(title)}</title>"
        f'<link href="http://127.0.0.1:1/{key}"/><updated>2026-12-01T10:00:00Z</updated>'
        f'<content type="html">&lt;p&gt;{escape(title)}: {key} body text&lt;/p&gt;</content></entry>'
        for key, title in entries
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>Pushed</title><id>urn:feed</id><updated>2026-12-01T10:00:00Z</updated>"
        f"{links}{body}</feed>"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write(path: Path, feeds: list[dict[str, Any]], port: int, db: str, **websub: Any) -> None:
    raw = {
        "settings": {
            "database_url": db,
            "allow_private_networks": ["127.0.0.0/8"],
            "per_host_delay": "0s",
            "workers": 1,
            "full_text": False,
            "tick": "0.2s",
            "reload_interval": "0.2s",
            "max_body_bytes": 4096,
            "http": {"host": "127.0.0.1", "port": port},
            "websub": {"callback_url": f"http://127.0.0.1:{port}/websub", **websub},
        },
        "feeds": feeds,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(raw), encoding="utf-8")
    os.replace(tmp, path)


def rows(db: str, sql: str) -> list[tuple[Any, ...]]:
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def titles(db: str) -> set[str]:
    return {str(r[0]) for r in rows(db, "SELECT title FROM items")}


async def until(condition: Callable[[], Awaitable[bool] | bool], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


def run_daemon(cfg: Path, probe: Callable[[Daemon], Awaitable[None]]) -> None:
    """The daemon in this process (it owns the signals, so the main thread) while
    ``probe`` drives the test; blocking calls go to threads (the daemon's HTTP face
    runs on this event loop)."""
    config = load_config(cfg)
    store = open_store(config.database_url)
    store.upgrade()
    daemon = Daemon(config, store, config_path=cfg, database_override=None)

    async def main() -> None:
        async def drive() -> None:
            try:
                await until(lambda: daemon.http is not None and daemon.http.server.started)
                await probe(daemon)
            finally:
                daemon.stop_event.set()

        task = asyncio.create_task(drive())
        await daemon.run()
        await task

    try:
        asyncio.run(main())
    finally:
        store.close()


def subscription(daemon: Daemon) -> PushSubscription | None:
    subs = daemon.store.websub.all()
    return subs[0] if subs else None


def test_subscribe_verify_renew_push_and_unsubscribe(server: FixtureServer, tmp_path: Path) -> None:
    hub = Hub(lease=2)  # a 2 s lease: renewed within the test
    try:
        topic = server.url("/feed.xml")
        server.add("/feed.xml", atom(topic, hub.url, [("a1", "First post")]))
        port = free_port()
        cfg = tmp_path / "feeds.yaml"
        db = f"sqlite:///{tmp_path / 'agg.db'}"
        write(cfg, [{"url": topic, "name": "pushed"}], port, db, verify_timeout="30s")
        seen: dict[str, Any] = {}

        async def probe(daemon: Daemon) -> None:
            # subscribe and verify: the request carries topic, callback, secret, lease
            await until(lambda: bool(hub.confirmed("subscribe")))
            request = hub.requests[0]
            assert request["hub.mode"] == "subscribe"
            assert request["hub.topic"] == topic
            assert request["hub.callback"].startswith(f"http://127.0.0.1:{port}/websub/")
            assert len(request["hub.callback"].rsplit("/", 1)[1]) >= 32  # unguessable
            assert 40 <= len(request["hub.secret"]) < 200
            assert request["hub.lease_seconds"] == "864000"
            await until(lambda: (s := subscription(daemon)) is not None and s.state == "live")
            first = subscription(daemon)
            assert first is not None and first.lease_expires_at is not None

            # renew before the 2 s lease runs out: a second subscribe, same callback
            await until(lambda: len(hub.confirmed("subscribe")) >= 2)
            renewals = [r for r in hub.requests if r["hub.mode"] == "subscribe"]
            assert {r["hub.callback"] for r in renewals} == {request["hub.callback"]}
            await until(
                lambda: (
                    (s := subscription(daemon)) is not None
                    and s.lease_expires_at is not None
                    and s.lease_expires_at > first.lease_expires_at
                )
            )
            assert rows(db, "SELECT push_until FROM feeds")[0][0] is not None

            # a verification nobody asked for, or for another topic: 404
            callback = request["hub.callback"]
            wrong = await asyncio.to_thread(
                hub.verify_now,
                callback,
                **{
                    "hub.mode": "subscribe",
                    "hub.topic": "http://other.example/",
                    "hub.challenge": "x",
                },
            )
            assert wrong.status_code == 404
            unknown = await asyncio.to_thread(
                hub.verify_now,
                f"http://127.0.0.1:{port}/websub/{'A' * 32}",
                **{"hub.mode": "subscribe", "hub.topic": topic, "hub.challenge": "x"},
            )
            assert unknown.status_code == 404
            unasked = await asyncio.to_thread(
                hub.verify_now,
                callback,
                **{"hub.mode": "unsubscribe", "hub.topic": topic, "hub.challenge": "x"},
            )
            assert unasked.status_code == 404

            # publish: stored as items when the hub gets its answer, no poll in between
            polls = len(server.hits("/feed.xml"))
            assert titles(db) == {"First post"}
            doc = atom(topic, hub.url, [("a2", "Pushed post")]).encode()
            answers = await asyncio.to_thread(hub.publish, topic, doc)
            assert [a.status_code for a in answers] == [202]
            assert titles(db) == {"First post", "Pushed post"}
            assert len(server.hits("/feed.xml")) == polls
            pushed_at = rows(db, "SELECT last_push_at FROM websub_subscriptions")[0][0]
            assert pushed_at is not None

            # a bad signature, an unsigned body, another method's signature over the
            # wrong key: acknowledged (8: no oracle) and ignored
            for kwargs in (
                {"signature": "sha256=" + "0" * 64},
                {"signed": False},
                {"signature": "md5=abc"},
            ):
                bad = atom(topic, hub.url, [("bad", "Forged post")]).encode()
                answers = await asyncio.to_thread(hub.publish, topic, bad, **kwargs)
                assert [a.status_code for a in answers] == [202]
            assert "Forged post" not in titles(db)

            # every recognised method is accepted
            for i, method in enumerate(("sha1", "sha384", "sha512")):
                doc = atom(topic, hub.url, [(f"m{i}", f"Signed {method}")]).encode()
                answers = await asyncio.to_thread(hub.publish, topic, doc, method=method)
                assert [a.status_code for a in answers] == [202]
            assert {"Signed sha1", "Signed sha384", "Signed sha512"} <= titles(db)

            # larger than max_body_bytes (4096): 413, nothing stored
            big = atom(topic, hub.url, [("big", "Huge post " + "x" * 5000)]).encode()
            answers = await asyncio.to_thread(hub.publish, topic, big)
            assert [a.status_code for a in answers] == [413]
            assert not any(t.startswith("Huge post") for t in titles(db))

            # a signed body that is no feed: 400 naming the problem
            answers = await asyncio.to_thread(hub.publish, topic, b"<html>nope</html>")
            assert answers[0].status_code == 400
            assert "not a feed document" in answers[0].text
            assert len(server.hits("/feed.xml")) == polls

            # the feed leaves feeds.yaml: unsubscribed at the hub, deliveries then 410
            write(cfg, [], port, db, verify_timeout="30s")
            await until(lambda: bool(hub.confirmed("unsubscribe")))
            await until(
                lambda: (s := subscription(daemon)) is not None and s.state == "unsubscribed"
            )
            assert rows(db, "SELECT push_until FROM feeds")[0][0] is None
            gone = await asyncio.to_thread(
                httpx.post, callback, content=b"<feed/>", headers={"X-Hub-Signature": "sha1=0"}
            )
            seen["gone"] = gone.status_code

        run_daemon(cfg, probe)
        assert seen["gone"] == 410
    finally:
        hub.stop()


def test_a_hub_that_never_verifies(server: FixtureServer, tmp_path: Path) -> None:
    hub = Hub(verify=False)
    try:
        topic = server.url("/feed.xml")
        server.add("/feed.xml", atom(topic, hub.url, [("a1", "First post")]))
        port = free_port()
        cfg = tmp_path / "feeds.yaml"
        db = f"sqlite:///{tmp_path / 'agg.db'}"
        write(cfg, [{"url": topic, "name": "pushed"}], port, db, verify_timeout="1s")

        async def probe(daemon: Daemon) -> None:
            await until(lambda: len(hub.requests) >= 1)
            await until(lambda: (s := subscription(daemon)) is not None and s.state == "failed")
            sub = subscription(daemon)
            assert sub is not None and sub.last_error is not None
            assert "did not verify the subscription request in time" in sub.last_error
            assert sub.next_attempt_at is not None  # retried after a backoff
            assert sub.next_attempt_at - datetime.now(UTC) > timedelta(minutes=4)
            # polling continues normally: its usual interval (30 min), not the daily
            # safety net, and nothing pushes (a delivery finds no verified subscription)
            ((push_until, next_check),) = rows(db, "SELECT push_until, next_check_at FROM feeds")
            assert push_until is None
            due = datetime.fromisoformat(str(next_check)).replace(tzinfo=UTC)
            assert due - datetime.now(UTC) < timedelta(minutes=40)
            callback = f"http://127.0.0.1:{port}/websub/{sub.callback_id}"
            answer = await asyncio.to_thread(httpx.post, callback, content=b"<feed/>")
            assert answer.status_code == 404
            # a late verification is not taken any more
            late = await asyncio.to_thread(
                hub.verify_now,
                callback,
                **{"hub.mode": "subscribe", "hub.topic": topic, "hub.challenge": "x"},
            )
            assert late.status_code == 404
            # a denial (5.2) is recorded with its reason
            denied = await asyncio.to_thread(hub.deny, topic, callback, "not\nwelcome")
            assert denied.status_code == 200
            after = subscription(daemon)
            assert after is not None and after.state == "failed"
            assert after.last_error == f"{hub.url} denied the subscription: not welcome"

        run_daemon(cfg, probe)
    finally:
        hub.stop()


def test_a_lapsed_subscription_resumes_polling(server: FixtureServer, tmp_path: Path) -> None:
    hub = Hub(lease=2)
    try:
        topic = server.url("/feed.xml")
        server.add("/feed.xml", atom(topic, hub.url, [("a1", "First post")]))
        port = free_port()
        cfg = tmp_path / "feeds.yaml"
        db = f"sqlite:///{tmp_path / 'agg.db'}"
        write(cfg, [{"url": topic, "name": "pushed"}], port, db, verify_timeout="1s")

        async def probe(daemon: Daemon) -> None:
            await until(lambda: bool(hub.confirmed("subscribe")))
            hub.verify = False  # the renewal is never verified: the 2 s lease runs out
            await until(lambda: (s := subscription(daemon)) is not None and s.state == "live")
            polls = len(server.hits("/feed.xml"))
            await until(lambda: (s := subscription(daemon)) is not None and s.state == "failed")
            sub = subscription(daemon)
            assert sub is not None and "did not verify" in (sub.last_error or "")
            assert rows(db, "SELECT push_until FROM feeds")[0][0] is None
            # polled again at once, as usual, now that nothing pushes
            await until(lambda: len(server.hits("/feed.xml")) > polls)

        run_daemon(cfg, probe)
    finally:
        hub.stop()
