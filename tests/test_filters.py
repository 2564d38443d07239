"""Entry filters (issue 19, part 2): rules, validation, and the filter step of a poll:
before any article page, remembered by key, never an item, a changed rule applied from
the next poll; counts in the log line, `feeds list`, `/metrics`; `preview` marks them."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import httpx
import pytest
import yaml

from aggregator.config import load_config, parse_config
from aggregator.errors import ConfigError
from aggregator.filters import (
    SCAN_CHARS,
    Budget,
    EntryFields,
    decide,
    fingerprint,
    words_pattern,
)
from aggregator.metrics import Metrics
from aggregator.records import FilterRule, FilterRules
from aggregator.server import create_app
from aggregator.store import open_store
from builders import rss
from conftest import write_config
from httpserver import FixtureServer
from ingest import aggregator, rows, run_once
from test_metrics_docs import running


def rules(*specs: dict[str, object]) -> FilterRules:
    config = parse_config({"feeds": [{"url": "https://a.example/f", "filters": list(specs)}]})
    found = config.feeds[0].filters
    assert found is not None
    return found


def entry(**values: str) -> EntryFields:
    return EntryFields.of(
        title=values.get("title"),
        link=values.get("link"),
        author=values.get("author"),
        tags=values.get("tags", "").split(",") if values.get("tags") else (),
        summary_html=values.get("summary"),
        content_html=values.get("content"),
    )


def test_block_keep_words_and_fields() -> None:
    r = rules(
        {"block": "(?i)webinar"},
        {"keep": "(?i)peru|lima", "fields": ["title", "summary"]},
        {"block_words": ["C++", "free trial"], "fields": ["title", "tags"]},
    )
    assert decide(r, entry(title="Lima news")) is None
    assert decide(r, entry(title="Lima WEBINAR")) == 'filters[0] block "(?i)webinar"'
    assert decide(r, entry(title="Paris news")) == "no keep rule matched"
    # keep reads title and summary only; the summary's HTML is read as text
    assert decide(r, entry(title="x", summary="<p>from <b>Peru</b></p>")) is None
    assert decide(r, entry(title="x", content="<p>Peru</p>")) == "no keep rule matched"
    # block rules read their fields only; words are whole words, case-insensitive
    assert decide(r, entry(title="Lima", link="https://a.example/webinar")) is None
    assert decide(r, entry(title="Lima: a FREE   trial")) is not None
    assert decide(r, entry(title="Lima", tags="news,c++")) is not None
    assert decide(r, entry(title="Lima freetrial, C+")) is None
    assert re.search(words_pattern(["e-mail"]), "send an E-Mail") is not None


def test_a_rule_scans_a_bounded_text() -> None:
    r = rules({"block": "needle"})
    far = "x " * SCAN_CHARS + "needle"
    assert decide(r, entry(title="t", content=f"<p>{far}</p>")) is None
    assert decide(r, entry(title="t", content="<p>needle</p>")) is not None


def test_a_runaway_pattern_times_out_and_keeps_the_entry() -> None:
    r = rules({"block": "(a|aa)+b"}, {"block": "(?i)spam"})
    budget = Budget()
    assert decide(r, entry(title="a" * 40), budget) is None  # kept: the rule gave up
    assert budget.timed_out == {'filters[0] block "(a|aa)+b"'}
    # not asked again within the poll; the other rules still work
    assert decide(r, entry(title="a" * 40 + " spam"), budget) == 'filters[1] block "(?i)spam"'
    keep = rules({"keep": "(a|aa)+b"})
    assert decide(keep, entry(title="a" * 40), Budget()) is None  # a keep rule: kept too


def test_the_fingerprint_follows_the_rules() -> None:
    a = rules({"block": "a"}).fingerprint
    assert a == rules({"block": "a"}).fingerprint
    assert a != rules({"block": "b"}).fingerprint
    assert a != rules({"keep": "a"}).fingerprint
    assert a != rules({"block": "a", "fields": ["title"]}).fingerprint
    assert fingerprint(()) != a


def test_invalid_rules_name_file_line_feed_and_field(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "settings:\n"
        "  filters:\n"
        "    - block: '(?i)ok'\n"
        "feeds:\n"
        "  - url: https://a.example/feed.xml\n"
        "    filters:\n"
        "      - block: '(unclosed'\n"
        "      - keep: 'x'\n"
        "        fields: [body]\n"
        "      - block: 'a'\n"
        "        keep: 'b'\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: 3 problems:"
    assert lines[1].startswith(
        "  line 7: feed #1 (https://a.example/feed.xml), field 'filters.0.block': "
        "invalid regular expression: missing ) at position 9"
    )
    assert "line 9: feed #1 (https://a.example/feed.xml), field 'filters.1.fields.0'" in lines[2]
    assert "field 'filters.2': a rule has exactly one of block, keep" in lines[3]
    path.write_text("settings:\n  filters:\n    - block: '*'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 3: field 'settings.filters.0.block': invalid"):
        load_config(path)


def feed_items(server: FixtureServer, titles: list[str]) -> str:
    entries = [
        {
            "title": title,
            "link": server.url(f"/page/{i}"),
            "guid": f"g{i}",
            "description": f"About {title}",
        }
        for i, title in enumerate(titles)
    ]
    for i in range(len(titles)):
        text = f"<html><body><article><p>{'Article text here. ' * 30}</p></article></body></html>"
        server.add(f"/page/{i}", text, content_type="text/html")
    return server.add("/feed.xml", rss("Feed", entries))


def page_hits(server: FixtureServer) -> list[str]:
    return sorted(r.path for r in server.requests if r.path.startswith("/page/"))


def test_filters_drop_entries_before_their_pages_and_remember_them(
    server: FixtureServer, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    titles = ["Lima harbour opens", "Sponsored: buy now", "Webinar on Lima", "Peru rains"]
    url = feed_items(server, titles)
    feed = {"url": url, "name": "Andes", "filters": [{"block": "(?i)webinar"}]}
    settings = {"filters": [{"block": "(?i)\\bsponsored\\b"}]}
    cfg = write_config(tmp_path / "feeds.yaml", [feed], **settings)
    caplog.set_level(logging.INFO, logger="aggregator.poll")

    first = run_once(cfg, db_url)
    assert first.new_items == 2 and first.failed == 0
    # the blocked entries cost no page request (pages 1 and 2 are theirs)
    assert page_hits(server) == ["/page/0", "/page/3"]
    assert sorted(r[0] for r in rows(db_url, "SELECT title FROM items")) == [
        "Lima harbour opens",
        "Peru rains",
    ]
    blocked = rows(db_url, "SELECT rule, title FROM blocked_entries ORDER BY entry_key")
    assert blocked == [
        ('settings.filters[0] block "(?i)\\bsponsored\\b"', "Sponsored: buy now"),
        ('filters[0] block "(?i)webinar"', "Webinar on Lima"),
    ]
    polls = [r for r in caplog.records if getattr(r, "event", None) == "poll"]
    assert (polls[-1].blocked, polls[-1].blocked_new) == (2, 2)  # type: ignore[attr-defined]
    assert "2 entries blocked by filters" in polls[-1].getMessage()
    stamps = rows(db_url, "SELECT blocked_at FROM blocked_entries ORDER BY entry_key")

    # a new entry: the document is fetched again; the remembered ones are not evaluated
    # again (their rows stay as they were) nor fetched
    server.clear()
    url = feed_items(server, [*titles, "Lima webinar again"])
    caplog.clear()
    second = run_once(cfg, db_url)
    assert second.new_items == 0
    assert page_hits(server) == []
    assert rows(db_url, "SELECT blocked_at FROM blocked_entries ORDER BY entry_key")[:2] == stamps
    polls = [r for r in caplog.records if getattr(r, "event", None) == "poll"]
    assert (polls[-1].blocked, polls[-1].blocked_new) == (3, 1)  # type: ignore[attr-defined]

    # a changed rule applies from the next poll: the webinars are kept now, and fetched
    feed["filters"] = [{"block": "(?i)nothing-matches-this"}]
    write_config(tmp_path / "feeds.yaml", [feed], **settings)
    server.clear()
    third = run_once(cfg, db_url)
    assert third.new_items == 2
    assert page_hits(server) == ["/page/2", "/page/4"]
    assert rows(db_url, "SELECT title FROM blocked_entries") == [("Sponsored: buy now",)]
    assert rows(db_url, "SELECT count(*) FROM items") == [(4,)]

    # without rules, a feed forgets its blocked entries (when the config is loaded)
    write_config(tmp_path / "feeds.yaml", [{**feed, "filters": []}])
    run_once(cfg, db_url)
    assert rows(db_url, "SELECT count(*) FROM blocked_entries") == [(0,)]

    # an entry that leaves the document is forgotten
    write_config(tmp_path / "feeds.yaml", [feed], **settings)
    ad = {"title": "Sponsored again", "link": server.url("/ad"), "guid": "ad"}
    server.add("/feed.xml", rss("Feed", [ad]))
    run_once(cfg, db_url)
    assert rows(db_url, "SELECT title FROM blocked_entries") == [("Sponsored again",)]
    only = {"title": "Only one", "link": server.url("/x"), "guid": "z"}
    server.add("/feed.xml", rss("Feed", [only]))
    run_once(cfg, db_url)
    assert rows(db_url, "SELECT count(*) FROM blocked_entries") == [(0,)]


def test_counts_in_feeds_list_metrics_and_preview(server: FixtureServer, tmp_path: Path) -> None:
    url = feed_items(server, ["Good one", "Sponsored thing", "Another sponsored"])
    feed = {"url": url, "name": "Daily", "full_text": False}
    cfg = write_config(tmp_path / "feeds.yaml", [feed], filters=[{"block_words": ["sponsored"]}])
    db = f"sqlite:///{tmp_path / 'f.db'}"
    run_once(cfg, db)
    listed = aggregator("feeds", "list", "--config", str(cfg), "--database", db, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    header = next(line for line in listed.stdout.splitlines() if "url" in line)
    names = [c.strip() for c in header.strip("┃ ").split("┃")]
    daily = next(line for line in listed.stdout.splitlines() if "Daily" in line)
    cells = [c.strip() for c in daily.strip("│ ").split("│")]
    assert cells[names.index("blocked")] == "2" and cells[names.index("items")] == "1"

    store = open_store(db)
    try:
        config = load_config(cfg, db)
        metrics = Metrics()
        with running(create_app(store, lambda: config, metrics=metrics)) as base:
            body = httpx.get(base + "/metrics", timeout=30).text
    finally:
        store.close()
    assert 'aggregator_feed_entries_blocked{feed="Daily"} 2.0' in body

    preview = aggregator("preview", url, "--config", str(cfg), "--block", "(?i)good", cwd=tmp_path)
    assert preview.returncode == 0, preview.stderr
    assert "3 of 3 entries would be dropped by this feed's filters (2 rules)" in preview.stdout
    assert "DROPPED: settings.filters[0] block_words [sponsored]" in preview.stdout
    assert "DROPPED: --block" in preview.stdout
    bad = aggregator("preview", url, "--config", str(cfg), "--keep", "(x", cwd=tmp_path)
    assert bad.returncode == 2 and "--keep '(x': invalid regular expression" in bad.stderr


def test_the_metrics_counter_counts_entries_blocked_when_first_evaluated(
    server: FixtureServer, tmp_path: Path
) -> None:
    import asyncio

    from aggregator.scheduler import run_once as run_once_async

    url = feed_items(server, ["Fine", "Webinar"])
    cfg = write_config(
        tmp_path / "feeds.yaml",
        [{"url": url, "full_text": False, "filters": [{"block": "Webinar"}]}],
    )
    config = load_config(cfg, f"sqlite:///{tmp_path / 'm.db'}")
    store = open_store(config.database_url)
    metrics = Metrics()
    try:
        store.upgrade()
        asyncio.run(run_once_async(config, store, on_done=metrics.observe_poll))
    finally:
        store.close()
    from prometheus_client import generate_latest

    assert "aggregator_entries_blocked_total 1.0" in generate_latest(metrics.registry).decode()


def test_a_json_log_line_carries_the_counts(server: FixtureServer, tmp_path: Path) -> None:
    url = feed_items(server, ["Fine", "Webinar"])
    cfg = write_config(
        tmp_path / "feeds.yaml",
        [{"url": url, "full_text": False, "filters": [{"block": "Webinar"}]}],
    )
    db = f"sqlite:///{tmp_path / 'j.db'}"
    result = aggregator("run", "--once", "--config", str(cfg), "--database", db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    poll = next(
        line for line in map(json.loads, result.stderr.splitlines()) if line["event"] == "poll"
    )
    assert (poll["blocked"], poll["blocked_new"]) == (1, 1)
    assert yaml.safe_load(cfg.read_text())["feeds"][0]["filters"] == [{"block": "Webinar"}]


def test_rules_records_are_plain_values() -> None:
    rule = FilterRule("block", "x", ("title",), "r")
    assert decide(FilterRules((rule,), "f"), entry(title="x")) == "r"
    assert decide(None, entry(title="x")) is None
