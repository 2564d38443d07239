"""A store filled by a real ingestion of fixture feeds, shared by the export/server tests.

Four feeds on the fixture HTTP server, polled by the real pipeline in two rounds (so
``first_seen_at`` splits them): one story carried by three feeds, a few single-source
stories, and a hostile JSON Feed. One more hostile item is then written straight into
the database with no ingest-side cleaning at all, as another writer could: the export
layer must stay safe on its own.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from aggregator.scheduler import RunSummary, utcnow
from builders import rss
from conftest import _pg_available
from httpserver import FixtureServer
from ingest import run_once

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"

HOSTILE_TITLE = (
    '<img src=x onerror=alert(1)><script>alert("t")</script> Tom & Jerry ]]> \x01bell\x07'
)
HOSTILE_CONTENT = (
    '<p onclick="steal()">Hello <b>world</b></p><script>alert(2)</script>'
    '<img src="http://127.0.0.1:1/x.png" onerror="alert(3)">'
    '<a href="javascript:alert(4)">click</a> <iframe src="http://evil.example/"></iframe>'
    "<style>body{display:none}</style> ]]> end\x02"
)
RAW_TITLE = '"><script>alert("raw")</script><svg onload=alert(5)> Raw ]]> \x0b\x1b'
RAW_URL = "javascript:alert(6)"
FORMULA_TITLE = '=HYPERLINK("http://evil.example","click")'


@dataclass
class World:
    db_url: str
    config_path: Path
    base: str  # the fixture server's base URL
    between: datetime  # after round 1, before round 2
    round1: RunSummary
    round2: RunSummary


def _item(server: FixtureServer, guid: str, title: str, path: str, body: str) -> dict[str, str]:
    return {
        "title": title,
        "link": server.url(path),
        "guid": guid,
        "description": body,
        "pubDate": "Mon, 01 Jun 2026 10:00:00 GMT",
    }


def _feeds(server: FixtureServer, round2: bool) -> None:
    harbour = "/news/harbour-budget"
    alpha = [
        _item(
            server,
            "a1",
            "Council approves harbour budget",
            harbour,
            "The council approved the harbour budget after a long debate.",
        ),
        _item(
            server,
            "a2",
            "School roads plan",
            "/alpha/school-roads",
            "A plan for safer roads near schools.",
        ),
    ]
    gamma = [
        _item(
            server,
            "g1",
            "Harbour budget: what it means",
            harbour + "?utm_source=gamma",
            "What the harbour budget means for residents.",
        ),
        _item(
            server,
            "g2",
            "Quantum sensors at the lab",
            "/gamma/quantum",
            "Researchers built quantum sensors that measure tiny fields.",
        ),
    ]
    if round2:
        alpha.append(
            _item(
                server,
                "a3",
                "Late night ferry strike",
                "/alpha/ferry",
                "Ferry crews walked out late at night.",
            )
        )
        gamma.append(
            _item(
                server,
                "g3",
                "Quantum computing startup raises funds",
                "/gamma/quantum-startup",
                "A quantum computing startup raised money.",
            )
        )
    server.add("/alpha.xml", rss("Alpha Times", alpha))
    server.add(
        "/beta.xml",
        rss(
            "Beta Daily",
            [
                _item(
                    server,
                    "b1",
                    "Harbour budget approved by council",
                    harbour + "?utm_source=beta",
                    "Beta's take on the harbour budget.",
                ),
                _item(
                    server, "b2", "Tram line extension", "/beta/tram", "The tram line gets longer."
                ),
            ],
        ),
    )
    server.add("/gamma.xml", rss("Gamma Tech", gamma))
    hostile = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Evil feed",
        "items": [
            {
                "id": "h1",
                "url": "javascript:alert(1)",
                "title": HOSTILE_TITLE,
                "content_html": HOSTILE_CONTENT,
            },
            {
                "id": "h2",
                "url": server.url("/hostile/2"),
                "title": FORMULA_TITLE,
                "content_html": HOSTILE_CONTENT,
            },
        ],
    }
    server.add("/hostile.json", json.dumps(hostile), content_type="application/feed+json")


def _insert_raw_item(db_url: str) -> None:
    """A hostile item as another writer could store it: nothing cleaned."""
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            feed_id = conn.execute(
                text("SELECT id FROM feeds WHERE name = 'Evil <b>Feed</b> \"x\"'")
            ).scalar_one()
            now = utcnow().replace(tzinfo=None) if engine.dialect.name == "sqlite" else utcnow()
            story_id = conn.execute(
                text(
                    "INSERT INTO stories (title, url, canonical_url, first_seen_at, last_seen_at,"
                    " item_count) VALUES (:t, :u, :u, :n, :n, 1) RETURNING id"
                ),
                {"t": RAW_TITLE, "u": RAW_URL, "n": now},
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO items (feed_id, entry_key, guid, url, canonical_url, title,"
                    " author, summary, content, text, content_hash, story_id, first_seen_at,"
                    " updated_at) VALUES (:f, 'raw', 'raw', :u, :u, :t, :a, :c, :c, :x, 'x',"
                    " :s, :n, :n)"
                ),
                {
                    "f": feed_id,
                    "u": RAW_URL,
                    "t": RAW_TITLE,
                    "a": "<b>Mallory</b>\x08",
                    "c": HOSTILE_CONTENT,
                    "x": "Raw text ]]> \x1b[31m red",
                    "s": story_id,
                    "n": now,
                },
            )
    finally:
        engine.dispose()


def build_world(server: FixtureServer, folder: Path, db_url: str) -> World:
    _feeds(server, round2=False)
    feeds = [
        {"url": server.url("/alpha.xml"), "name": "Alpha Times", "tags": ["news", "local"]},
        {"url": server.url("/beta.xml"), "name": "Beta Daily", "tags": ["news"]},
        {"url": server.url("/gamma.xml"), "name": "Gamma Tech", "tags": ["tech"]},
        {"url": server.url("/hostile.json"), "name": 'Evil <b>Feed</b> "x"', "tags": ["news"]},
    ]
    settings = {
        "allow_private_networks": ["127.0.0.0/8"],
        "per_host_delay": "0s",
        "per_host_concurrency": 8,
        "workers": 1,
        "full_text": False,
        "database_url": db_url,
    }
    config_path = folder / "feeds.yaml"
    config_path.write_text(yaml.safe_dump({"settings": settings, "feeds": feeds}), "utf-8")
    round1 = run_once(config_path, db_url)
    between = datetime.now(UTC)
    _feeds(server, round2=True)
    round2 = run_once(config_path, db_url)
    _insert_raw_item(db_url)
    return World(db_url, config_path, server.base, between, round1, round2)


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """A fresh SQLite file or PostgreSQL database for the whole test session."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'aggregator.db'}"
        return
    if not _pg_available():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is required in CI but not reachable")
        pytest.skip("PostgreSQL at 127.0.0.1:5432 not reachable (runs in CI)")
    import psycopg

    name = f"agg_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    folder = tmp_path_factory.mktemp(f"world-{request.param}")
    server = FixtureServer().start()
    try:
        with database(request.param, folder) as db_url:
            yield build_world(server, folder, db_url)
    finally:
        server.stop()
