"""Per-feed HTTP options (issue 19, part 3): a real server that demands each option
(401 without it); secrets read from the environment and from files; the options go to
the feed's own host only: not to article pages on other hosts, not across a redirect to
another host."""

from __future__ import annotations

import asyncio
import base64
import re
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from aggregator.config import load_config, parse_config
from aggregator.errors import ConfigError
from aggregator.fetch import Fetcher, FetchLimits, same_origin
from aggregator.records import FetchResult, HttpOptions
from builders import rss
from conftest import write_config
from httpserver import FixtureServer
from ingest import rows, run_once

LOOPBACK = ("127.0.0.0/8",)
DEMANDS = {
    "header": ("x-api-key", "key-123"),
    "basic_auth": ("authorization", "Basic " + base64.b64encode(b"reader:pw-456").decode()),
    "cookies": ("cookie", "session=sess-789; theme=dark"),
    "user_agent": ("user-agent", "aggregator (+https://example.org/bot)"),
}


def demanding(body: bytes, header: str, value: str):  # type: ignore[no-untyped-def]
    """A route handler answering 401 unless the request carries ``header: value``."""

    def handle(request: BaseHTTPRequestHandler) -> None:
        ok = request.headers.get(header) == value
        payload = body if ok else b"unauthorized"
        request.send_response(200 if ok else 401)
        request.send_header("Content-Type", "application/xml" if ok else "text/plain")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    return handle


def fetch(
    url: str, options: HttpOptions | None = None, *, page: bool = False, transport: str = "aiohttp"
) -> FetchResult:
    limits = FetchLimits(
        user_agent="ua-default", allow_private_networks=LOOPBACK, transport=transport
    )

    async def go() -> FetchResult:
        async with Fetcher(limits) as fetcher:
            return await fetcher.fetch(url, options=options, page=page)

    return asyncio.run(go())


def http_options(server: FixtureServer, http: dict[str, object]) -> HttpOptions:
    config = parse_config({"feeds": [{"url": server.url("/feed.xml"), "http": http}]})
    options = config.feeds[0].http
    assert options is not None
    return options


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize(
    ("option", "http"),
    [
        ("header", {"headers": {"X-Api-Key": "key-123"}}),
        ("basic_auth", {"basic_auth": {"username": "reader", "password": "pw-456"}}),
        ("cookies", {"cookies": {"session": "sess-789", "theme": "dark"}}),
        ("user_agent", {"user_agent": "aggregator (+https://example.org/bot)"}),
    ],
)
def test_each_option_reaches_a_server_that_demands_it(
    server: FixtureServer, option: str, http: dict[str, object], transport: str
) -> None:
    header, value = DEMANDS[option]
    body = rss("t", [{"title": "In", "link": "http://x.example/1", "guid": "1"}]).encode()
    server.add("/feed.xml", handler=demanding(body, header, value))
    assert fetch(server.url("/feed.xml"), transport=transport).status == 401
    result = fetch(server.url("/feed.xml"), http_options(server, http), transport=transport)
    assert result.status == 200 and b"In" in result.body


def test_secrets_from_env_and_files_poll_a_feed_that_needs_them_all(
    server: FixtureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = rss("t", [{"title": "Members only", "link": server.url("/a/1"), "guid": "1"}])

    def all_four(request: BaseHTTPRequestHandler) -> None:
        wanted = all(request.headers.get(h) == v for h, v in DEMANDS.values())
        payload = body.encode() if wanted else b"no"
        request.send_response(200 if wanted else 401)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    server.add("/feed.xml", handler=all_four)
    page = "<html><body><article><p>" + "Members text. " * 40 + "</p></article></body></html>"
    server.add("/a/1", handler=demanding(page.encode(), *DEMANDS["cookies"]))
    (tmp_path / "pw").write_text("pw-456\n", encoding="utf-8")  # the newline is stripped
    monkeypatch.setenv("FEED_KEY", "key-123")
    monkeypatch.setenv("FEED_SESSION", "sess-789")
    http = {
        "headers": {"X-Api-Key": {"env": "FEED_KEY"}},
        "basic_auth": {"username": "reader", "password": {"file": "pw"}},  # beside feeds.yaml
        "cookies": {"session": {"env": "FEED_SESSION"}, "theme": "dark"},
        "user_agent": "aggregator (+https://example.org/bot)",
    }
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": server.url("/feed.xml"), "http": http}])
    db = f"sqlite:///{tmp_path / 'h.db'}"
    summary = run_once(cfg, db)
    assert summary.failed == 0 and summary.new_items == 1
    # the article page on the feed's own host got the options too (its cookie)
    assert rows(db, "SELECT title, text_source FROM items") == [("Members only", "article")]


def test_missing_secrets_are_config_errors_naming_feed_field_and_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    monkeypatch.setenv("EMPTY_ONE", "")
    monkeypatch.setenv("WITH_NEWLINE", "a\r\nInjected: 1")
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(
        "feeds:\n"
        "  - url: https://a.example/feed.xml\n"
        "    http:\n"
        "      headers: {X-Api-Key: {env: NOT_SET_ANYWHERE}, X-Other: {env: EMPTY_ONE}}\n"
        "      basic_auth: {username: reader, password: {file: /nonexistent/secret}}\n"
        "      cookies: {session: {env: WITH_NEWLINE}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(cfg)
    text = str(caught.value)
    where = "feed #1 (https://a.example/feed.xml), field"
    assert (
        f"line 4: {where} 'http.headers.X-Api-Key': environment variable NOT_SET_ANYWHERE is not set"
        in text
    )
    assert f"{where} 'http.headers.X-Other': environment variable EMPTY_ONE is empty" in text
    assert (
        f"line 5: {where} 'http.basic_auth.password': file /nonexistent/secret does not exist"
        in text
    )
    assert (
        f"line 6: {where} 'http.cookies.session': the value of env WITH_NEWLINE contains a line break"
        in text
    )
    assert "Injected" not in text
    for bad, problem in (
        ({"headers": {"Host": "x"}}, "set by the fetcher"),
        ({"headers": {"Bad Name": "x"}}, "is not a header name"),
        (
            {"headers": {"Authorization": "x"}, "basic_auth": {"username": "u", "password": "p"}},
            "not both",
        ),
        ({"headers": {"X": {"env": "A", "file": "b"}}}, "give one of env: NAME or file: PATH"),
        ({"headers": {"X": 5}}, "must be a string, {env: NAME} or {file: PATH}"),
    ):
        with pytest.raises(ConfigError, match=re.escape(problem)):
            parse_config({"feeds": [{"url": "https://a.example/f", "http": bad}]})


def test_options_stay_on_the_feeds_host(server: FixtureServer) -> None:
    other = FixtureServer("127.0.0.2").start()
    try:
        other.add("/moved.xml", rss("t", []))
        other.add("/article", "<html><body><p>x</p></body></html>", content_type="text/html")
        server.add("/feed.xml", status=302, headers={"Location": other.url("/moved.xml")})
        server.add("/here.xml", status=302, headers={"Location": server.url("/final.xml")})
        server.add("/final.xml", rss("t", []))
        options = http_options(
            server,
            {
                "headers": {"X-Api-Key": "key-123"},
                "basic_auth": {"username": "reader", "password": "pw-456"},
                "cookies": {"session": "sess-789"},
                "user_agent": "custom-agent",
            },
        )
        assert fetch(server.url("/feed.xml"), options).status == 200  # redirected off-host
        assert fetch(other.url("/article"), options, page=True).status == 200  # another host
        assert fetch(server.url("/here.xml"), options).status == 200  # a same-host redirect
    finally:
        other.stop()
    secret_headers = {"x-api-key", "authorization", "cookie"}
    for request in other.requests:
        assert not secret_headers & set(request.headers), request
        assert request.headers["user-agent"] == "ua-default"
    first_hop = server.hits("/feed.xml")[0].headers
    assert first_hop["x-api-key"] == "key-123" and first_hop["user-agent"] == "custom-agent"
    assert server.hits("/final.xml")[0].headers["cookie"] == "session=sess-789"


def test_same_origin_rule() -> None:
    origin = "https://feeds.example:443"
    assert same_origin(origin, "https://FEEDS.example/a")
    assert same_origin(origin, "https://feeds.example:443/b?c")
    assert not same_origin(origin, "http://feeds.example/a")  # never downgraded to http
    assert not same_origin(origin, "https://feeds.example:8443/a")
    assert not same_origin(origin, "https://cdn.feeds.example/a")
    assert not same_origin(origin, "https://feeds.example.evil.test/a")
    plain = "http://feeds.example:80"
    assert same_origin(plain, "https://feeds.example/a")  # the usual upgrade redirect
    assert not same_origin("http://feeds.example:8080", "https://feeds.example/a")
