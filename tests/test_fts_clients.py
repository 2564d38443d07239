"""Outside tools find and use the SQLite full-text index (#22 item 1).

sqlite-utils and datasette detect the FTS table of ``items`` by its declaration
(``content="items"`` or ``content=[items]``); migration 0007 declares it that way on
stores created before it. Tested with sqlite-utils itself (its ``detect_fts`` runs the
same query as datasette's) on a store filled by a real ingestion.
"""

from __future__ import annotations

from pathlib import Path

import sqlite_utils
from sqlalchemy import create_engine, text

import exportdata
from aggregator.store import open_store
from httpserver import FixtureServer
from ingest import run_once

# datasette's table search (?_search=): the rows whose rowid the FTS table matches
DATASETTE_SEARCH = (
    "select id, title from items where rowid in"
    " (select rowid from [items_fts] where [items_fts] match :search) order by id"
)


def datasette_query(words: str) -> str:
    """datasette's ``escape_fts``: every word quoted, so no FTS syntax applies."""
    return " ".join(f'"{w}"' for w in words.split())


def ingest(server: FixtureServer, folder: Path, round2: bool = False) -> str:
    exportdata._feeds(server, round2=round2)
    path = folder / "feeds.yaml"
    url = f"sqlite:///{folder / 'agg.db'}"
    if not path.exists():
        import yaml

        path.write_text(
            yaml.safe_dump(
                {
                    "settings": {
                        "allow_private_networks": ["127.0.0.0/8"],
                        "per_host_delay": "0s",
                        "workers": 1,
                        "full_text": False,
                        "database_url": url,
                    },
                    "feeds": [
                        {"url": server.url(p), "name": p.strip("/")}
                        for p in ("/alpha.xml", "/beta.xml", "/gamma.xml")
                    ],
                }
            ),
            "utf-8",
        )
    run_once(path, url)
    return url


def titles(db: sqlite_utils.Database, words: str) -> list[str]:
    table = db["items"]
    assert isinstance(table, sqlite_utils.db.Table)
    return sorted(str(r["title"]) for r in table.search(words, quote=True))


def test_sqlite_utils_and_datasette_find_the_index(server: FixtureServer, tmp_path: Path) -> None:
    url = ingest(server, tmp_path)
    path = tmp_path / "agg.db"
    store = open_store(url)
    try:
        store.downgrade("0006")  # a store as every release before 0007 left it
        with sqlite_utils.Database(path) as db:
            assert db["items"].detect_fts() is None  # type: ignore[union-attr]
        store.upgrade()
    finally:
        store.close()
    with sqlite_utils.Database(path) as db:
        assert db["items"].detect_fts() == "items_fts"  # type: ignore[union-attr]
        assert titles(db, "quantum") == ["Quantum sensors at the lab"]
        assert titles(db, "harbour budget") == [
            "Council approves harbour budget",
            "Harbour budget approved by council",
            "Harbour budget: what it means",
        ]
        found = db.execute(DATASETTE_SEARCH, {"search": datasette_query("tram")}).fetchall()
        assert [t for _, t in found] == ["Tram line extension"]
    # the triggers keep the index current after the migration: new, changed, deleted rows
    ingest(server, tmp_path, round2=True)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE items SET title = 'Tram line opened' WHERE title = 'Tram line extension'"
                )
            )
            conn.execute(text("DELETE FROM items WHERE title = 'School roads plan'"))
    finally:
        engine.dispose()
    with sqlite_utils.Database(path) as db:
        assert titles(db, "quantum") == [
            "Quantum computing startup raises funds",
            "Quantum sensors at the lab",
        ]
        assert titles(db, "opened") == ["Tram line opened"]
        assert titles(db, "extension") == []
        assert titles(db, "school") == []
        check = db.execute("INSERT INTO items_fts(items_fts) VALUES ('integrity-check')")
        assert check is not None  # raises when the index and items disagree


def test_a_fresh_store_declares_it_detectably(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    store = open_store(url)
    try:
        store.upgrade()
    finally:
        store.close()
    with sqlite_utils.Database(tmp_path / "fresh.db") as db:
        assert db["items"].detect_fts() == "items_fts"  # type: ignore[union-attr]
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'items_fts'").fetchone()[0]
        assert 'content="items"' in sql and "remove_diacritics 2" in sql
