"""No secret of the config reaches any output (issue 19, part 3): feeds whose options
come from the environment and from files are polled (successes and failures: 401, 500,
a proxy that is not there), then `check`, `feeds list`, `feeds export`, `preview`,
`/metrics`, the database's feed rows and the config's repr are searched for every secret
value (and the Basic token made of them)."""

from __future__ import annotations

import base64
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from aggregator.config import load_config
from aggregator.metrics import Metrics
from aggregator.server import create_app
from aggregator.store import open_store
from builders import rss
from conftest import write_config
from httpserver import FixtureServer
from ingest import aggregator, rows
from proxies import Socks5Proxy
from test_metrics_docs import running

SECRETS = {
    "FEED_KEY": "key-SECRET-1a2b",
    "FEED_SESSION": "sess-SECRET-3c4d",
    "PROXY_URL": "socks5://pxuser:PROXYPASS-SECRET-5e6f@127.0.0.1:{port}",
    "DEAD_PROXY": "socks5://deaduser:DEADPROXY-SECRET-7a8b@127.0.0.1:9",
}
PASSWORD = "pw-SECRET-9c0d"


def test_no_secret_in_any_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = FixtureServer().start()
    proxy = Socks5Proxy(auth=("pxuser", "PROXYPASS-SECRET-5e6f")).start()
    token = base64.b64encode(f"reader:{PASSWORD}".encode()).decode()
    feed = rss("t", [{"title": "Private", "link": server.url("/p/1"), "guid": "1"}]).encode()

    def guarded(request: BaseHTTPRequestHandler) -> None:
        ok = (
            request.headers.get("x-api-key") == SECRETS["FEED_KEY"]
            and request.headers.get("authorization") == f"Basic {token}"
            and request.headers.get("cookie") == f"session={SECRETS['FEED_SESSION']}"
        )
        body = feed if ok else b"no"
        request.send_response(200 if ok else 401)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    server.add("/ok.xml", handler=guarded)
    server.add("/denied.xml", handler=guarded)
    server.add("/broken.xml", "oops", status=500)
    server.add(
        "/p/1", "<html><body><article><p>text</p></article></body></html>", content_type="text/html"
    )
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value.format(port=proxy.port))
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "password").write_text(PASSWORD + "\n", encoding="utf-8")
    good = {
        "headers": {"X-Api-Key": {"env": "FEED_KEY"}},
        "basic_auth": {"username": "reader", "password": {"file": "secrets/password"}},
        "cookies": {"session": {"env": "FEED_SESSION"}},
    }
    feeds = [
        {"url": server.url("/ok.xml"), "name": "Good", "http": good},
        # wrong password: 401
        {
            "url": server.url("/denied.xml"),
            "http": {**good, "basic_auth": {"username": "reader", "password": {"env": "FEED_KEY"}}},
        },
        {"url": server.url("/broken.xml"), "http": good},  # 500
        {"url": server.url("/dead.xml"), "http": {**good, "proxy": {"env": "DEAD_PROXY"}}},
    ]
    cfg = write_config(
        tmp_path / "feeds.yaml", feeds, http_proxy={"env": "PROXY_URL"}, full_text=True
    )
    db = f"sqlite:///{tmp_path / 's.db'}"
    outputs: dict[str, str] = {}
    try:
        for name, args in {
            "run": ("run", "--once"),
            "check": ("check",),
            "feeds list": ("feeds", "list"),
            "feeds export": ("feeds", "export"),
            "preview": ("preview", server.url("/ok.xml")),
            "preview denied": ("preview", server.url("/denied.xml")),
        }.items():
            done = aggregator(
                *args,
                "--config",
                str(cfg),
                *(("--database", db) if "preview" not in name else ()),
                cwd=tmp_path,
            )
            outputs[name] = done.stdout + "\n" + done.stderr
            if name == "run":
                assert done.returncode == 0, done.stderr
        config = load_config(cfg, db)
        outputs["repr"] = repr(config) + str(config.feeds) + f"{config.http_proxy}"
        store = open_store(db)
        try:
            with running(create_app(store, lambda: config, metrics=Metrics())) as base:
                outputs["metrics"] = httpx.get(base + "/metrics", timeout=30).text
        finally:
            store.close()
        outputs["database"] = repr(rows(db, "SELECT * FROM feeds")) + repr(
            rows(db, "SELECT * FROM blocked_entries")
        )
    finally:
        proxy.stop()
        server.stop()
    # the polls really ran: through the proxy, with the options, and failed where meant to
    assert len(proxy.asked) >= 1
    assert rows(db, "SELECT title FROM items") == [("Private",)]
    run = outputs["run"]
    assert "HTTP 401" in run and "HTTP 500" in run and "proxy" in run
    assert "Private" in outputs["preview"] and "HTTP 401" in outputs["preview denied"]
    values = [v.format(port=proxy.port) for v in SECRETS.values()]
    values += [PASSWORD, token, "PROXYPASS-SECRET-5e6f", "DEADPROXY-SECRET-7a8b"]
    for where, text in outputs.items():
        for value in values:
            assert value not in text, f"{value!r} in the output of {where}"
