"""The hostile-host matrix: one `aggregator run --once` over every misbehaviour at once.

Runs with the default limits (10 MiB bodies, 5 redirects), except the timeouts, shortened from
10/20/60 s to 3/5/15 s to keep the test short (the slow hosts hit them just the same); the
address allow-list is opened to the loopback addresses the fixture servers use.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from builders import article_page, rss
from httpserver import FixtureServer


class Silent:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        self.sock.settimeout(0.5)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.conns.append(conn)
            except OSError:
                continue

    def close(self) -> None:
        self.stop = True
        for conn in self.conns:
            conn.close()
        self.sock.close()


def drip(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/rss+xml")
    handler.end_headers()
    try:
        handler.wfile.write(b"<?xml version='1.0'?><rss version='2.0'><channel>")
        for _ in range(120):
            time.sleep(2)
            handler.wfile.write(b" ")
            handler.wfile.flush()
    except OSError:
        pass


def reset(handler: BaseHTTPRequestHandler) -> None:
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.connection.close()
    handler.close_connection = True


def short_body(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/rss+xml")
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    handler.wfile.write(b"<?xml version='1.0'?><rss version='2.0'><channel><title>cut")
    handler.close_connection = True


def huge(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/rss+xml")
    handler.send_header("Content-Length", str(60 * 1024 * 1024))
    handler.end_headers()
    chunk = b"<!-- " + b"x" * 65_000 + b" -->"
    try:
        for _ in range(1000):
            handler.wfile.write(chunk)
    except OSError:
        pass


def gzip_bomb() -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * (1024 * 1024)
    parts = [compressor.compress(zeros) for _ in range(1024)]  # 1 GiB inflated
    parts.append(compressor.flush())
    return b"".join(parts)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rss version="2.0"><channel><title>laughs</title>
<item><title>lol &lol9;</title><link>http://127.0.0.1:1/lol</link><guid>lol</guid></item>
</channel></rss>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<rss version="2.0"><channel><title>xxe</title>
<item><title>leak &xxe;</title><link>http://127.0.0.1:1/xxe</link><guid>xxe</guid></item>
</channel></rss>"""


@pytest.fixture
def farm() -> Iterator[dict[str, object]]:
    main = FixtureServer().start()  # 127.0.0.1: allowed
    held = FixtureServer(host="127.0.0.2").start()  # 127.0.0.2: allowed, own host for holds
    forbidden = FixtureServer(host="127.0.0.3").start()  # 127.0.0.3: NOT allowed
    silent = Silent()
    yield {"main": main, "held": held, "forbidden": forbidden, "silent": silent}
    for srv in (main, held, forbidden):
        srv.stop()
    silent.close()


@pytest.mark.slow
def test_hostile_matrix(farm: dict[str, object], tmp_path: Path) -> None:
    main: FixtureServer = farm["main"]  # type: ignore[assignment]
    held: FixtureServer = farm["held"]  # type: ignore[assignment]
    forbidden: FixtureServer = farm["forbidden"]  # type: ignore[assignment]
    silent: Silent = farm["silent"]  # type: ignore[assignment]

    pages = []
    for i in range(5):
        pages.append(
            main.add(
                f"/good/{i}.html", article_page(f"Good story {i}", i), content_type="text/html"
            )
        )
    good = main.add(
        "/good.xml",
        rss(
            "Good",
            [{"title": f"Good story {i}", "link": pages[i], "guid": f"g{i}"} for i in range(5)],
        ),
    )
    forbidden.add("/secret.html", article_page("secret", 1), content_type="text/html")
    forbidden.add("/feed.xml", rss("secret", [{"title": "s", "link": "http://x/", "guid": "s"}]))
    script_items = [
        {
            "title": "Hostile <b>title</b>",
            "link": main.url("/nopage-1"),
            "guid": "h1",
            "description": '<p onclick="steal()">Hi<script>alert(1)</script>'
            '<a href="javascript:alert(2)">x</a><img src=x onerror="alert(3)"></p>',
        }
    ]
    routes = {
        "404": main.add("/404.xml", status=404, body="gone"),
        "410": main.add("/410.xml", status=410, body="gone for good"),
        "500": main.add("/500.xml", status=500, body="oops"),
        "503": held.add("/503.xml", status=503, body="busy", headers={"Retry-After": "3600"}),
        "429": held.add(
            "/429.xml",
            status=429,
            body="slow down",
            headers={
                "Retry-After": "Wed, 01 Jan 2031 00:00:00 GMT",
                "Date": "Tue, 31 Dec 2030 23:00:00 GMT",
            },
        ),
        "silent": f"http://127.0.0.1:{silent.port}/feed.xml",
        "drip": main.add("/drip.xml", handler=drip),
        "reset": main.add("/reset.xml", handler=reset),
        "short": main.add("/short.xml", handler=short_body),
        "loop": main.add("/loop-a.xml", status=302, headers={"Location": "/loop-b.xml"}),
        "huge": main.add("/huge.xml", handler=huge),
        "bomb": main.add("/bomb.xml", gzip_bomb(), headers={"Content-Encoding": "gzip"}),
        "laughs": main.add("/laughs.xml", BILLION_LAUGHS),
        "xxe": main.add("/xxe.xml", XXE),
        "html": main.add(
            "/page.html",
            "<!doctype html><html><head><title>Home</title></head><body><p>Welcome</p></body></html>",
            content_type="text/html",
        ),
        "empty": main.add("/empty.xml", b""),
        "latin1": main.add(
            "/latin1.xml",
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Caf\xe9</title><item><title>Cr\xe8me br\xfbl\xe9e</title><link>http://127.0.0.1:1/c</link><guid>c1</guid></item></channel></rss>'.encode(
                "latin-1"
            ),
        ),
        "private-links": main.add(
            "/private-links.xml",
            rss("priv", [{"title": "Secret", "link": forbidden.url("/secret.html"), "guid": "p1"}]),
        ),
        "private-redirect": main.add(
            "/to-private.xml", status=302, headers={"Location": forbidden.url("/feed.xml")}
        ),
        "scripts": main.add("/scripts.xml", rss("scripts", script_items)),
        "shared-guid": main.add(
            "/shared-guid.xml",
            rss(
                "shared",
                [
                    {"title": f"Post {i}", "link": main.url(f"/post/{i}"), "guid": "same-guid"}
                    for i in range(5)
                ],
            ),
        ),
    }
    main.add("/loop-b.xml", status=302, headers={"Location": "/loop-a.xml"})
    config = {
        "settings": {
            "allow_private_networks": ["127.0.0.1/32", "127.0.0.2/32"],
            "connect_timeout": "3s",
            "read_timeout": "5s",
            "timeout": "15s",
        },
        "feeds": [{"url": good, "name": "good"}]
        + [{"url": u, "name": n} for n, u in routes.items()],
    }
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(yaml.safe_dump(config))
    db = tmp_path / "hostile.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    env["COLUMNS"] = "250"
    command = [
        sys.executable,
        "-m",
        "aggregator",
        "run",
        "--once",
        "--config",
        str(cfg),
        "--database",
        f"sqlite:///{db}",
    ]

    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=200)
    elapsed = time.monotonic() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert result.returncode == 0, result.stderr[-3000:]
    assert elapsed < 150, elapsed
    assert peak_mb < 400, peak_mb

    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        feeds = {r.url: r for r in conn.execute(text("SELECT * FROM feeds"))}
        items = [
            dict(r._mapping)
            for r in conn.execute(
                text("SELECT i.*, f.url AS feed_url FROM items i JOIN feeds f ON f.id = i.feed_id")
            )
        ]
    engine.dispose()

    by_feed: dict[str, list[dict[str, object]]] = {}
    for item in items:
        by_feed.setdefault(str(item["feed_url"]), []).append(item)
    # the good feed is fully ingested, with article text
    assert len(by_feed[good]) == 5
    assert all(i["text_source"] == "article" for i in by_feed[good])
    assert feeds[good].error_count == 0 and feeds[good].last_error is None

    must_fail = [
        "404",
        "410",
        "500",
        "503",
        "429",
        "silent",
        "drip",
        "reset",
        "short",
        "loop",
        "huge",
        "bomb",
        "html",
        "empty",
        "private-redirect",
    ]
    for name in must_fail:
        row = feeds[routes[name]]
        assert row.error_count == 1, (name, row.last_error)
        assert row.last_error, name
    expect = {
        "404": "404",
        "500": "500",
        "503": "503",
        "429": "429",
        "silent": "timeout",
        "drip": "total timeout",
        "loop": "loop",
        "huge": "max_body_bytes",
        "bomb": "max_body_bytes",
        "html": "HTML",
        "empty": "empty",
        "private-redirect": "refused",
    }
    for name, word in expect.items():
        assert word.lower() in feeds[routes[name]].last_error.lower(), (
            name,
            feeds[routes[name]].last_error,
        )
    assert "retired" in feeds[routes["410"]].disabled_reason
    # Retry-After: held on their host, the 429's date relative to the response's Date header
    assert (
        feeds[routes["503"]].hold_until is not None and feeds[routes["429"]].hold_until is not None
    )

    # XML attacks: parsed without expansion or file access
    laughs = by_feed.get(routes["laughs"], [])
    assert all(len(str(i["title"])) < 200 for i in laughs)
    for item in by_feed.get(routes["xxe"], []):
        assert "root:" not in str(item["title"])
    # wrong charset: ingested, text decoded
    latin = by_feed[routes["latin1"]]
    assert len(latin) == 1 and "Cr" in str(latin[0]["title"])
    # links into a disallowed address: the item is kept with the feed's text, no connection made
    assert len(by_feed[routes["private-links"]]) == 1
    assert forbidden.requests == []
    # sanitized content
    hostile = by_feed[routes["scripts"]][0]
    stored = f"{hostile['summary']} {hostile['content']}".lower()
    for bad in ("<script", "onclick", "onerror", "javascript:"):
        assert bad not in stored, stored
    # five entries with one GUID stay five items
    assert len(by_feed[routes["shared-guid"]]) == 5

    # a second run does not poll the Retry-After feeds (nor the retired one); the slow hosts
    # are left out of it to keep the test short
    keep = {good, routes["503"], routes["429"], routes["410"]}
    config["feeds"] = [f for f in config["feeds"] if f["url"] in keep]  # type: ignore[index,union-attr]
    cfg.write_text(yaml.safe_dump(config))
    held.clear()
    main.clear()
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=200)
    assert again.returncode == 0
    assert held.requests == []
    assert main.hits("/410.xml") == []
    assert main.hits("/good.xml")
    polls = [json.loads(line) for line in again.stderr.splitlines() if line.startswith("{")]
    assert any(p.get("feed") == good for p in polls)  # the log (standard error) was read
    assert all(p.get("feed") not in (routes["503"], routes["429"], routes["410"]) for p in polls)


HOSTILE_DATE = "9999-12-31T23:59:59-14:00"  # valid ISO 8601; year 10000 in UTC
HOSTILE_HTTP_DATE = "Fri, 31 Dec 9999 23:59:59 -1400"


@pytest.mark.slow
def test_hostile_dates_fault(server: FixtureServer, tmp_path: Path) -> None:
    """Issue 21's fault test: one `run --once` over feeds carrying hostile dates (a JSON
    Feed date, Expires, Retry-After, an article page's date) beside a good feed. It used to
    exit 1 with an OverflowError traceback, and lose the good feed."""
    good_page = server.add("/good.html", article_page("Good story", 1), content_type="text/html")
    good = server.add(
        "/good.xml", rss("good", [{"title": "Good story", "link": good_page, "guid": "g"}])
    )
    json_feed = server.add(
        "/dates.json",
        json.dumps(
            {
                "version": "https://jsonfeed.org/version/1.1",
                "title": "hostile JSON Feed",
                "items": [
                    {
                        "id": "far",
                        "title": "From the far future",
                        "content_text": "Text.",
                        "date_published": HOSTILE_DATE,
                    }
                ],
            }
        ),
        content_type="application/feed+json",
    )
    expires = server.add(
        "/expires.xml",
        rss("expires", [{"title": "Expires", "link": server.url("/nopage-e"), "guid": "e"}]),
        headers={"Expires": HOSTILE_HTTP_DATE},
    )
    retry_after = server.add(
        "/retry-after.xml", status=503, body="busy", headers={"Retry-After": HOSTILE_HTTP_DATE}
    )
    page = article_page("Page from the far future", 2).replace(
        "<head>", f'<head><meta property="article:published_time" content="{HOSTILE_DATE}">'
    )
    far_page = server.add("/far.html", page, content_type="text/html")
    page_date = server.add(
        "/page-date.xml",
        rss("page date", [{"title": "Page from the far future", "link": far_page, "guid": "p"}]),
    )
    feeds = {
        "good": good,
        "json": json_feed,
        "expires": expires,
        "retry-after": retry_after,
        "page-date": page_date,
    }
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "settings": {"allow_private_networks": ["127.0.0.1/32"], "per_host_delay": "0s"},
                "feeds": [{"url": url, "name": name} for name, url in feeds.items()],
            }
        )
    )
    db = tmp_path / "dates.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    env["COLUMNS"] = "250"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "aggregator",
            "run",
            "--once",
            "--config",
            str(cfg),
            "--database",
            f"sqlite:///{db}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert "OverflowError" not in result.stdout + result.stderr

    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        state = {r.url: r for r in conn.execute(text("SELECT * FROM feeds"))}
        items = {
            r.feed_url: r
            for r in conn.execute(
                text("SELECT i.*, f.url AS feed_url FROM items i JOIN feeds f ON f.id = i.feed_id")
            )
        }
    engine.dispose()
    # the good feed is stored, untouched by the others
    assert items[good].text_source == "article"
    assert state[good].error_count == 0 and state[good].last_error is None
    # the bad ones are recorded: their items stored without the hostile date, the date
    # named on the feed
    assert items[json_feed].published_at is None
    assert f"date_published '{HOSTILE_DATE}' is out of range" in state[json_feed].last_error
    assert items[expires].title == "Expires"
    assert "Expires header" in state[expires].last_error
    assert items[page_date].text_source == "article"
    assert items[page_date].published_at is None
    assert "article:published_time" in state[page_date].last_error
    # the 503 is a failure, held for the 7-day cap
    held = state[retry_after]
    assert held.error_count == 1 and "503" in held.last_error
    assert "Retry-After header" in held.last_error
    assert held.hold_until is not None
