"""Every export format from a store filled by a real ingestion (tests/exportdata.py):
re-parsed and checked for entry counts, sources, filters and escaping."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import feedparser
import lxml.html
import pytest
from defusedxml import ElementTree as SafeET
from lxml import etree
from typer.testing import CliRunner

import exportdata
from aggregator.cli import app
from aggregator.config import EXPORT_FORMATS, load_config
from aggregator.export import FORMATS, ExportRequest, build_filter, stream, write_atomic
from aggregator.export.rows import COLUMNS
from aggregator.store import open_store
from aggregator.store.queries import ExportFilter, Queries, fts5_query
from exportdata import FORMULA_TITLE, RAW_TITLE, World

world = exportdata.world

# ingestion: 8 + 2 items in two rounds, plus the raw hostile item
ITEMS = 11
STORIES = 9  # the harbour story is carried by three feeds
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def export(world: World, fmt: str, *, per_item: bool = False, **filters: Any) -> str:
    config = load_config(world.config_path)
    store = open_store(world.db_url)
    try:
        now = datetime.now(UTC)
        request = ExportRequest(
            format=fmt, filter=build_filter(now=now, **filters), per_item=per_item
        )
        return "".join(stream(Queries(store), request, now=now, feeds=config.feeds))
    finally:
        store.close()


# ---- checks shared by the formats ------------------------------------------------------


def assert_safe_html(fragment: str) -> None:
    """No script, no event handler, no javascript: URL, no frame in an HTML fragment."""
    if not fragment.strip():
        return
    root = lxml.html.fragment_fromstring(fragment, create_parent="div")
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        assert el.tag not in ("script", "iframe", "style", "object", "embed", "svg"), fragment
        for name, value in el.attrib.items():
            assert not name.lower().startswith("on"), (name, fragment)
            assert not value.strip().lower().startswith(("javascript:", "data:")), fragment


def check_json_feed(doc: dict[str, Any]) -> None:
    """The JSON Feed 1.1 requirements (https://jsonfeed.org/version/1.1)."""
    assert doc["version"] == "https://jsonfeed.org/version/1.1"
    assert isinstance(doc["title"], str) and doc["title"]
    assert isinstance(doc["items"], list)
    for key in ("home_page_url", "feed_url"):
        if key in doc:
            assert re.match(r"^https?://", doc[key])
    ids = set()
    for item in doc["items"]:
        assert isinstance(item["id"], str) and item["id"], item
        ids.add(item["id"])
        assert isinstance(item.get("content_html"), str) or isinstance(
            item.get("content_text"), str
        ), item
        for key in ("url", "external_url", "image", "banner_image"):
            if key in item:
                assert isinstance(item[key], str) and re.match(r"^https?://", item[key]), item
        for key in ("date_published", "date_modified"):
            if key in item:  # RFC 3339
                assert re.match(
                    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$", item[key]
                ), item[key]
        for key in ("title", "summary", "content_text", "content_html", "language"):
            if key in item:
                assert isinstance(item[key], str)
        if "authors" in item:
            assert item["authors"] and all(isinstance(a, dict) and a for a in item["authors"])
        if "tags" in item:
            assert all(isinstance(t, str) for t in item["tags"])
        for key in item:
            assert key in JSON_FEED_ITEM_KEYS or re.match(r"^_[a-zA-Z]", key), key
    assert len(ids) == len(doc["items"]), "item ids must be unique"


JSON_FEED_ITEM_KEYS = {
    "id",
    "url",
    "external_url",
    "title",
    "content_html",
    "content_text",
    "summary",
    "image",
    "banner_image",
    "date_published",
    "date_modified",
    "authors",
    "tags",
    "language",
    "attachments",
}


def parsed_feed(text: str) -> Any:
    parsed = feedparser.parse(text.encode("utf-8"))
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert not CONTROL.search(text)
    return parsed


# ---- Atom / RSS / JSON Feed --------------------------------------------------------------


def test_atom_has_one_entry_per_story_with_every_source(world: World) -> None:
    text = export(world, "atom")
    feed = parsed_feed(text)
    assert feed.version == "atom10"
    assert len(feed.entries) == STORIES
    harbour = [e for e in feed.entries if e.title == "Council approves harbour budget"]
    assert len(harbour) == 1
    via = [link for link in harbour[0].links if link.rel == "via"]
    assert sorted(v.title for v in via) == ["Alpha Times", "Beta Daily", "Gamma Tech"]
    assert harbour[0].link.endswith("/news/harbour-budget")
    assert "Beta Daily" in harbour[0].content[0].value
    ids = [e.id for e in feed.entries]
    assert len(set(ids)) == len(ids)
    # newest first: the round-2 stories come before the round-1 ones
    titles = [e.title for e in feed.entries]
    assert titles.index("Late night ferry strike") < titles.index("School roads plan")


def test_atom_names_an_author_as_rfc_4287_requires(world: World) -> None:
    """4.1.1: atom:feed contains atom:author unless every atom:entry does (the W3C
    validator's "Missing entry element: author"); most stored items have none."""
    root = etree.fromstring(export(world, "atom").encode())
    ns = {"a": "http://www.w3.org/2005/Atom"}
    entries = root.findall("a:entry", ns)
    assert entries and any(e.find("a:author", ns) is None for e in entries)
    assert root.find("a:author/a:name", ns) is not None


def test_atom_per_item_and_filters(world: World) -> None:
    feed = parsed_feed(export(world, "atom", per_item=True))
    assert len(feed.entries) == ITEMS
    alpha = parsed_feed(export(world, "atom", per_item=True, feeds=["Alpha Times"]))
    assert sorted(e.title for e in alpha.entries) == [
        "Council approves harbour budget",
        "Late night ferry strike",
        "School roads plan",
    ]
    # per story, a story matches when one of its items does; its sources stay complete
    beta = parsed_feed(export(world, "atom", feeds=["Beta Daily"]))
    assert sorted(e.title for e in beta.entries) == [
        "Council approves harbour budget",
        "Tram line extension",
    ]
    harbour = next(e for e in beta.entries if "harbour" in e.title)
    assert len([link for link in harbour.links if link.rel == "via"]) == 3


def test_rss_is_valid_and_lists_sources(world: World) -> None:
    text = export(world, "rss")
    feed = parsed_feed(text)
    assert feed.version == "rss20"
    assert len(feed.entries) == STORIES
    harbour = next(e for e in feed.entries if e.title == "Council approves harbour budget")
    for name in ("Alpha Times", "Beta Daily", "Gamma Tech"):
        assert name in harbour.description
    assert harbour.source.title == "Alpha Times"
    assert harbour.id.startswith("tag:aggregator,")
    per_item = parsed_feed(export(world, "rss", per_item=True, tags=["tech"]))
    assert sorted(e.title for e in per_item.entries) == [
        "Harbour budget: what it means",
        "Quantum computing startup raises funds",
        "Quantum sensors at the lab",
    ]


def test_json_feed_follows_the_spec(world: World) -> None:
    doc = json.loads(export(world, "json"))
    check_json_feed(doc)
    assert len(doc["items"]) == STORIES
    harbour = next(i for i in doc["items"] if i["title"] == "Council approves harbour budget")
    ext = harbour["_aggregator"]
    assert ext["kind"] == "story" and ext["source_count"] == 3
    assert sorted(s["feed"] for s in ext["sources"]) == ["Alpha Times", "Beta Daily", "Gamma Tech"]
    assert all(s["url"].startswith(world.base) for s in ext["sources"])
    items = json.loads(export(world, "json", per_item=True))
    check_json_feed(items)
    assert len(items["items"]) == ITEMS
    assert {i["_aggregator"]["kind"] for i in items["items"]} == {"item"}


def test_the_checker_rejects_an_invalid_json_feed() -> None:
    with pytest.raises(AssertionError):
        check_json_feed(
            {
                "version": "https://jsonfeed.org/version/1.1",
                "title": "t",
                "items": [{"id": "1", "title": "no content"}],
            }
        )
    with pytest.raises(AssertionError):
        check_json_feed(
            {
                "version": "https://jsonfeed.org/version/1.1",
                "title": "t",
                "items": [{"id": "1", "content_text": "x", "sources": []}],
            }
        )


@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
def test_hostile_strings_are_escaped_in_feeds(world: World, fmt: str) -> None:
    text = export(world, fmt, per_item=True)
    assert not CONTROL.search(text)
    assert "javascript:" not in text
    if fmt == "json":
        entries = [(i["title"], i["content_html"], i.get("url")) for i in json.loads(text)["items"]]
    else:
        parsed = feedparser.parse(text.encode("utf-8"))
        assert not parsed.bozo
        # feedparser sanitizes on its own: check our raw markup too, below
        entries = [
            (e.title, "", next((x.href for x in e.get("links", []) if x.rel == "alternate"), None))
            for e in parsed.entries
        ]
        for raw in re.findall(
            r"<(?:content|description)[^>]*>(.*?)</(?:content|description)>", text, re.S
        ):
            fragment = raw.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
            fragment = fragment.replace("&amp;", "&")
            assert_safe_html(fragment)
    titles = [t for t, _, _ in entries]
    assert any('<script>alert("t")</script>' in t for t in titles), titles  # shown as text
    assert any(t.startswith('"><script>alert("raw")') for t in titles)
    for _title, content, url in entries:
        assert_safe_html(content)
        assert url is None or url.startswith("http")


# ---- JSONL / CSV -----------------------------------------------------------------------------


def test_jsonl_rows(world: World) -> None:
    lines = export(world, "jsonl").splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == ITEMS
    assert all(list(r) == list(COLUMNS) for r in rows)
    assert [r["item_id"] for r in rows] == sorted(r["item_id"] for r in rows)
    harbour = [r for r in rows if "harbour" in (r["url"] or "")]
    assert len(harbour) == 3 and len({r["story_id"] for r in harbour}) == 1
    assert {r["feed_name"] for r in harbour} == {"Alpha Times", "Beta Daily", "Gamma Tech"}
    raw = next(r for r in rows if r["guid"] == "raw")
    assert raw["title"] == RAW_TITLE.replace(" \x0b\x1b", "").strip()
    assert not CONTROL.search(raw["text"])
    assert all(r["first_seen_at"].endswith("Z") for r in rows)


def test_csv_rows_and_formula_cells(world: World) -> None:
    text = export(world, "csv")
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    rows = list(reader)
    assert len(rows) == ITEMS
    formula = next(r for r in rows if "HYPERLINK" in r["title"])
    assert formula["title"] == "'" + FORMULA_TITLE
    assert not CONTROL.search(text)
    assert {r["feed_name"] for r in rows} == {
        "Alpha Times",
        "Beta Daily",
        "Gamma Tech",
        'Evil <b>Feed</b> "x"',
    }


# ---- filters -----------------------------------------------------------------------------------


def jsonl_titles(world: World, **filters: Any) -> list[str]:
    return sorted(
        json.loads(line)["title"] for line in export(world, "jsonl", **filters).splitlines()
    )


def test_since_until_filter_on_first_seen(world: World) -> None:
    late = jsonl_titles(world, since=world.between.isoformat())
    assert len(late) == 3  # round 2 and the raw item written after it
    assert {"Late night ferry strike", "Quantum computing startup raises funds"} < set(late)
    early = jsonl_titles(world, until=world.between.isoformat())
    assert len(early) == 8 and "Late night ferry strike" not in early
    assert jsonl_titles(world, since="1h") == sorted(jsonl_titles(world))
    assert jsonl_titles(world, until="1h") == []


def test_tag_feed_limit_filters(world: World) -> None:
    assert len(jsonl_titles(world, tags=["news"])) == 8  # alpha 3 + beta 2 + evil 3
    assert len(jsonl_titles(world, tags=["news"], feeds=["Beta Daily"])) == 2
    assert jsonl_titles(world, feeds=["Gamma Tech"], tags=["news"]) == []
    assert len(jsonl_titles(world, limit=4)) == 4
    story_feed = json.loads(export(world, "json", limit=2))
    assert len(story_feed["items"]) == 2


def test_full_text_search(world: World) -> None:
    assert jsonl_titles(world, search="quantum") == [
        "Quantum computing startup raises funds",
        "Quantum sensors at the lab",
    ]
    assert jsonl_titles(world, search="quantum -startup") == ["Quantum sensors at the lab"]
    assert jsonl_titles(world, search='"harbour budget"') == [
        "Council approves harbour budget",
        "Harbour budget approved by council",
        "Harbour budget: what it means",
    ]
    assert jsonl_titles(world, search="measure tiny") == ["Quantum sensors at the lab"]
    # query syntax from the user never reaches the engine raw
    for nasty in ('quantum" OR *', "NEAR(a b)", "-", '"', "'; DROP TABLE items; --", "title:x"):
        export(world, "jsonl", search=nasty)
    stories = json.loads(export(world, "json", search="council"))
    assert [i["title"] for i in stories["items"]] == ["Council approves harbour budget"]
    assert stories["items"][0]["_aggregator"]["source_count"] == 3


def test_fts5_query_quotes_every_token() -> None:
    assert fts5_query("quantum sensors") == '"quantum" AND "sensors"'
    assert fts5_query('"harbour budget" -strike') == '("harbour budget") NOT ("strike")'
    assert fts5_query('a" OR *') == '"a" AND "OR"'
    assert fts5_query("-only") is None
    assert fts5_query("!!!") is None


def test_search_follows_updates(world: World) -> None:
    """The FTS index follows UPDATEs at once (SQLite and PostgreSQL triggers)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(world.db_url)
    try:
        with engine.begin() as conn:
            old = conn.execute(
                text("SELECT id, title FROM items WHERE title = 'Tram line extension'")
            ).one()
            conn.execute(
                text("UPDATE items SET title = 'Tram line zeppelin' WHERE id = :i"), {"i": old.id}
            )
        assert jsonl_titles(world, search="zeppelin") == ["Tram line zeppelin"]
        assert jsonl_titles(world, search="extension") == []
    finally:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE items SET title = :t WHERE id = :i"), {"t": old.title, "i": old.id}
            )
        engine.dispose()
    assert jsonl_titles(world, search="extension") == ["Tram line extension"]


def test_postgres_search_uses_the_gin_index(world: World) -> None:
    if not world.db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    from sqlalchemy.dialects import postgresql

    store = open_store(world.db_url)
    try:
        queries = Queries(store)
        query = queries._items_query(ExportFilter(search="quantum"), newest_first=False, after=None)
        sql = str(
            query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
        )
        with store.engine.connect() as conn:
            conn.exec_driver_sql("SET enable_seqscan = off")
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))
        # the stored vectors' GIN index (migration 0017); no vector is computed per row
        assert "ix_item_search" in plan and "to_tsvector" not in plan, plan
    finally:
        store.close()


# ---- views -------------------------------------------------------------------------------------


def test_views_give_a_stable_surface(world: World) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(world.db_url)
    try:
        with engine.connect() as conn:
            stories = conn.execute(
                text(
                    "SELECT story_id, title, source_count, item_count, representative_item_id,"
                    " first_seen_at, last_seen_at FROM v_stories ORDER BY source_count DESC, story_id"
                )
            ).all()
            items = conn.execute(text("SELECT item_id, feed_name, story_id FROM v_items")).all()
    finally:
        engine.dispose()
    assert len(stories) == STORIES and len(items) == ITEMS
    top = stories[0]
    assert top.title == "Council approves harbour budget"
    assert (top.source_count, top.item_count) == (3, 3)
    rep = next(i for i in items if i.item_id == top.representative_item_id)
    assert rep.feed_name == "Alpha Times" and rep.story_id == top.story_id


# ---- OPML ------------------------------------------------------------------------------------


def test_opml_lists_the_configured_feeds(world: World) -> None:
    text = export(world, "opml")
    root = SafeET.fromstring(text.encode("utf-8"))
    outlines = root.findall("./body/outline")
    assert [o.get("text") for o in outlines] == [
        "Alpha Times",
        "Beta Daily",
        "Gamma Tech",
        'Evil <b>Feed</b> "x"',
    ]
    assert outlines[0].get("xmlUrl") == world.base + "/alpha.xml"
    assert outlines[0].get("category") == "news,local"
    assert root.findtext("./head/title")


# ---- the command line and atomic files -------------------------------------------------------


def test_cli_writes_every_format_atomically(world: World, tmp_path: Path) -> None:
    runner = CliRunner()
    for fmt in FORMATS:
        out = tmp_path / "out" / f"export.{fmt}"
        result = runner.invoke(
            app,
            [
                "export",
                "--format",
                fmt,
                "--config",
                str(world.config_path),
                "--database",
                world.db_url,
                "--output",
                str(out),
                "--tag",
                "news",
                "--since",
                "7d",
            ],
        )
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"export.{f}" for f in FORMATS
    )  # no temporary files left behind
    result = runner.invoke(
        app,
        [
            "export",
            "-f",
            "jsonl",
            "-c",
            str(world.config_path),
            "-d",
            world.db_url,
            "--feed",
            "Alpha Times",
            "--limit",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2
    bad = runner.invoke(
        app,
        [
            "export",
            "-f",
            "jsonl",
            "-c",
            str(world.config_path),
            "-d",
            world.db_url,
            "--feed",
            "Nope",
        ],
    )
    assert bad.exit_code == 2 and "Nope" in bad.output
    bad = runner.invoke(app, ["export", "-f", "pdf", "-d", world.db_url])
    assert bad.exit_code == 2 and "unknown format" in bad.output
    bad = runner.invoke(app, ["export", "-f", "csv", "-d", world.db_url, "--since", "yesterday"])
    assert bad.exit_code == 2 and "yesterday" in bad.output


def test_formats_match_the_config_choices() -> None:
    assert tuple(FORMATS) == EXPORT_FORMATS


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "digest.html"
    write_atomic(target, ["old"])
    target.chmod(0o640)

    def broken() -> Iterator[str]:
        yield "new, half"
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError):
        write_atomic(target, broken())
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["digest.html"]
    write_atomic(target, ["new"])
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640


def test_build_filter_parses_durations_and_timestamps() -> None:
    now = datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
    f = build_filter(now=now, since="24h", until="2026-06-02T06:00:00+02:00")
    assert f.since == now - timedelta(hours=24)
    assert f.until == datetime(2026, 6, 2, 4, 0, tzinfo=UTC)
    assert build_filter(now=now, since="2026-06-01").since == datetime(2026, 6, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="yesterday"):
        build_filter(now=now, since="yesterday")
    with pytest.raises(ValueError):
        build_filter(now=now, limit=0)
