"""Proxies (issue 19, part 4): each kind (HTTP forward, HTTP CONNECT, https:// proxy,
SOCKS5, with and without credentials) is really used: a real proxy on loopback counts
what it is asked, and the targets are names only the proxy resolves (``*.test``). The
address guard checks the target's addresses before the request is handed to the proxy:
a private target is refused unless allow_private_networks allows it."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.config import parse_config
from aggregator.errors import BlockedAddress, ConfigError, FetchError
from aggregator.fetch import Fetcher, FetchLimits
from aggregator.records import FetchResult, HttpOptions
from aggregator.secret import Secret
from builders import rss
from conftest import write_config
from httpserver import FixtureServer
from ingest import rows, run_once
from proxies import HttpProxy, Socks5Proxy

PUBLIC = "93.184.216.34"  # what the daemon's resolver says for *.test: public, never dialled


async def public_resolver(host: str, port: int) -> list[str]:
    return {"private.test": ["10.1.2.3"], "loopback.test": ["127.0.0.1"]}.get(host, [PUBLIC])


def fetch(
    url: str,
    proxy: str | None = None,
    *,
    options: HttpOptions | None = None,
    allow: tuple[str, ...] = (),
    ca: Path | None = None,
) -> FetchResult:
    limits = FetchLimits(
        user_agent="ua-proxy",
        allow_private_networks=allow,
        proxy=Secret(proxy) if proxy else None,
        ca_bundle=str(ca) if ca else None,
        total_timeout=20,
    )

    async def go() -> FetchResult:
        async with Fetcher(limits, resolver=public_resolver) as fetcher:
            return await fetcher.fetch(url, options=options)

    return asyncio.run(go())


@pytest.fixture
def feed_server() -> Iterator[FixtureServer]:
    server = FixtureServer().start()
    server.add("/feed.xml", rss("t", [{"title": "One", "link": "http://x.test/1", "guid": "1"}]))
    yield server
    server.stop()


def test_http_proxy_forwards_by_name(feed_server: FixtureServer) -> None:
    proxy = HttpProxy(hosts={"feed.test": "127.0.0.1"}).start()
    try:
        result = fetch(
            f"http://feed.test:{feed_server.port}/feed.xml", f"http://127.0.0.1:{proxy.port}"
        )
    finally:
        proxy.stop()
    assert result.status == 200 and b"One" in result.body
    assert [(a.kind, a.target) for a in proxy.asked] == [
        ("forward", f"http://feed.test:{feed_server.port}/feed.xml")
    ]
    assert feed_server.hits("/feed.xml")[0].headers["host"] == f"feed.test:{feed_server.port}"


def test_http_proxy_with_credentials(feed_server: FixtureServer) -> None:
    proxy = HttpProxy(hosts={"feed.test": "127.0.0.1"}, auth=("pxuser", "px-secret")).start()
    url = f"http://feed.test:{feed_server.port}/feed.xml"
    try:
        without = fetch(url, f"http://127.0.0.1:{proxy.port}")
        result = fetch(url, f"http://pxuser:px-secret@127.0.0.1:{proxy.port}")
    finally:
        proxy.stop()
    assert without.status == 407 and proxy.refused == 1
    assert result.status == 200 and len(proxy.asked) == 1
    # the proxy's credentials went to the proxy, not on to the feed's server
    assert "proxy-authorization" not in feed_server.hits("/feed.xml")[0].headers


def test_socks5_proxy_by_name_with_credentials(feed_server: FixtureServer) -> None:
    proxy = Socks5Proxy(hosts={"feed.test": "127.0.0.1"}, auth=("sx", "sx-secret")).start()
    url = f"http://feed.test:{feed_server.port}/feed.xml"
    try:
        result = fetch(url, f"socks5://sx:sx-secret@127.0.0.1:{proxy.port}")
        with pytest.raises(FetchError) as refused:
            fetch(url, f"socks5://sx:wrong-pass@127.0.0.1:{proxy.port}")
    finally:
        proxy.stop()
    assert result.status == 200 and b"One" in result.body
    assert [(a.kind, a.target) for a in proxy.asked] == [
        ("socks5", f"feed.test:{feed_server.port}")
    ]
    assert "wrong-pass" not in str(refused.value) and proxy.refused == 1


def test_the_guard_refuses_a_private_target_before_the_proxy(feed_server: FixtureServer) -> None:
    socks = Socks5Proxy(hosts={"private.test": "127.0.0.1", "loopback.test": "127.0.0.1"}).start()
    http = HttpProxy(hosts={"private.test": "127.0.0.1"}).start()
    try:
        for proxy in (f"socks5://127.0.0.1:{socks.port}", f"http://127.0.0.1:{http.port}"):
            for host in ("private.test", "loopback.test", "127.0.0.1"):
                with pytest.raises(BlockedAddress):
                    fetch(f"http://{host}:{feed_server.port}/feed.xml", proxy)
        assert socks.asked == [] and http.asked == []  # the proxy was never asked
        # allowed explicitly: through the proxy (which is on loopback itself: the operator's)
        allowed = fetch(
            f"http://private.test:{feed_server.port}/feed.xml",
            f"socks5://127.0.0.1:{socks.port}",
            allow=("10.0.0.0/8",),
        )
    finally:
        socks.stop()
        http.stop()
    assert allowed.status == 200
    assert [a.target for a in socks.asked] == [f"private.test:{feed_server.port}"]


def test_a_feeds_proxy_beats_the_global_one(feed_server: FixtureServer) -> None:
    own = Socks5Proxy(hosts={"feed.test": "127.0.0.1"}).start()
    other = HttpProxy(hosts={"feed.test": "127.0.0.1"}).start()
    options = HttpOptions(
        origin="http://feed.test:80", proxy=Secret(f"socks5://127.0.0.1:{own.port}")
    )
    try:
        result = fetch(
            f"http://feed.test:{feed_server.port}/feed.xml",
            f"http://127.0.0.1:{other.port}",
            options=options,
        )
    finally:
        own.stop()
        other.stop()
    assert result.status == 200 and len(own.asked) == 1 and other.asked == []


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A test CA and a certificate for feed.test, localhost and 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make the test certificates")
    folder = tmp_path_factory.mktemp("proxy-tls")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=proxy test CA", cwd=folder)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
            "-subj", "/CN=feed.test", cwd=folder)  # fmt: skip
    (folder / "ext.cnf").write_text("subjectAltName=DNS:feed.test,DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf",
            cwd=folder)  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "srv.pem", folder / "srv.key")
    return folder / "ca.pem", context


def test_https_target_through_connect_and_an_https_proxy(
    certs: tuple[Path, ssl.SSLContext], feed_server: FixtureServer
) -> None:
    ca, context = certs
    server = FixtureServer()
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    server.start()
    server.add("/feed.xml", rss("t", [{"title": "Secure", "link": "http://x.test/1", "guid": "1"}]))
    plain = HttpProxy(hosts={"feed.test": "127.0.0.1"}).start()
    tls = HttpProxy(hosts={"feed.test": "127.0.0.1"}, tls=context).start()
    url = f"https://feed.test:{server.port}/feed.xml"
    try:
        through_connect = fetch(url, f"http://127.0.0.1:{plain.port}", ca=ca)
        via_tls = fetch(
            f"http://feed.test:{feed_server.port}/feed.xml", f"https://127.0.0.1:{tls.port}", ca=ca
        )
    finally:
        plain.stop()
        tls.stop()
        server.stop()
    assert through_connect.status == 200 and b"Secure" in through_connect.body
    assert [(a.kind, a.target) for a in plain.asked] == [("connect", f"feed.test:{server.port}")]
    # an https:// proxy: the client spoke TLS to the proxy, which forwarded the request
    assert [a.kind for a in tls.asked] == ["forward"]
    assert via_tls.status == 200 and b"One" in via_tls.body


def test_config_proxies_and_the_httpx_transport(tmp_path: Path) -> None:
    raw = {
        "settings": {"http_proxy": "socks5://127.0.0.1:1080"},
        "feeds": [{"url": "https://a.example/f", "http": {"proxy": "http://127.0.0.1:3128"}}],
    }
    config = parse_config(raw)
    assert config.http_proxy == Secret("socks5://127.0.0.1:1080")
    assert config.feeds[0].http is not None
    assert config.feeds[0].http.proxy == Secret("http://127.0.0.1:3128")
    for bad in ("ftp://127.0.0.1:21", "socks5://127.0.0.1", "socks4://h:1", "http://h:1/path"):
        with pytest.raises(
            ConfigError, match=r"feed #1 \(https://a.example/f\), field 'http.proxy'"
        ):
            parse_config({"feeds": [{"url": "https://a.example/f", "http": {"proxy": bad}}]})
    raw["settings"]["http_transport"] = "httpx"  # type: ignore[index]
    with pytest.raises(ConfigError, match="need http_transport: aiohttp"):
        parse_config(raw)


def test_a_feeds_socks_proxy_from_feeds_yaml_polls_it(tmp_path: Path) -> None:
    """End to end: ``http.proxy`` of one feed in feeds.yaml; its article page (on another
    host) goes through the proxy too; the other feed goes direct."""
    server = FixtureServer().start()
    pages = FixtureServer("127.0.0.2").start()
    proxy = Socks5Proxy().start()
    try:
        body = "<html><body><article><p>" + "Words here. " * 40 + "</p></article></body></html>"
        page = pages.add("/a1", body, content_type="text/html")
        server.add("/proxied.xml", rss("p", [{"title": "Via proxy", "link": page, "guid": "p1"}]))
        direct = [{"title": "Direct", "link": server.url("/d1"), "guid": "d1"}]
        server.add("/direct.xml", rss("d", direct))
        socks = {"proxy": f"socks5://127.0.0.1:{proxy.port}"}
        cfg = write_config(
            tmp_path / "feeds.yaml",
            [
                {"url": server.url("/proxied.xml"), "http": socks},
                {"url": server.url("/direct.xml"), "full_text": False},
            ],
        )
        db = f"sqlite:///{tmp_path / 'p.db'}"
        summary = run_once(cfg, db)
    finally:
        proxy.stop()
        pages.stop()
        server.stop()
    assert summary.failed == 0 and summary.new_items == 2
    assert sorted(a.target for a in proxy.asked) == [
        f"127.0.0.1:{server.port}",  # the feed document
        f"127.0.0.2:{pages.port}",  # its article page
    ]
    assert len(pages.hits("/a1")) == 1 and len(server.hits("/direct.xml")) == 1
    stored = rows(db, "SELECT title, text_source FROM items ORDER BY title")
    assert stored == [("Direct", "feed"), ("Via proxy", "article")]
