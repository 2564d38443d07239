"""Story dedup on real feed documents (issue 17): distinct posts are never merged, copies of
one post in a site's Atom and JSON feeds are; ``stories explain`` and ``stories rebuild``.

Fixtures: real feeds copied byte for byte into tests/data/feeds (MIT; see LICENSES.md
there): a podcast whose every episode links to the home page (Taverncast), Scripting News
(50 posts on one page, told apart by fragments), two templated feeds (a fire brigade's
call-outs, Craigslist listings), Daring Fireball in Atom and JSON Feed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aggregator.cli import app
from conftest import DATA, write_config
from httpserver import FixtureServer
from ingest import rows
from test_pipeline import run_once

FEEDS = DATA / "feeds"


def serve(server: FixtureServer, *paths: str) -> list[dict[str, object]]:
    """The fixture documents as feeds of one config, with ``full_text`` off."""
    feeds: list[dict[str, object]] = []
    for path in paths:
        kind = "application/feed+json" if path.endswith(".json") else "application/xml"
        url = server.add("/" + path, (FEEDS / path).read_bytes(), content_type=kind)
        feeds.append({"url": url, "name": path, "full_text": False})
    return feeds


def stories_per_feed(db_url: str) -> dict[str, tuple[int, int]]:
    """feed name -> (items, distinct stories)."""
    found: dict[str, tuple[int, int]] = {}
    for name, n, stories in rows(
        db_url,
        "SELECT feeds.name, count(*), count(DISTINCT items.story_id) FROM items"
        " JOIN feeds ON feeds.id = items.feed_id GROUP BY feeds.name",
    ):
        found[str(name)] = (int(n), int(stories))  # type: ignore[call-overload]
    return found


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_real_feeds_keep_every_distinct_post_its_own_story(
    server: FixtureServer, tmp_path: Path, db_url: str
) -> None:
    """The home-page links of a podcast, fragment permalinks and templated teasers: every
    entry of each feed is its own story (before issue 17: over 100 Taverncast episodes in
    one story by their shared link, Scripting News' 50 posts in 7 stories, call-outs and
    listings merged by their shared template text)."""
    feeds = serve(
        server,
        "rss-parser/itunes-missing-image.rss",
        "rsparser-netnewswire/scriptingNews.rss",
        "codehollow-feedreader/Rss091Stadtfeuerwehr.xml",
        "rss-parser/craigslist.rss",
    )
    run_once(write_config(tmp_path / "feeds.yaml", feeds), db_url)
    found = stories_per_feed(db_url)
    assert set(found) == {str(f["name"]) for f in feeds}
    for name, (n_items, n_stories) in found.items():
        assert n_items > 10, name
        assert n_stories == n_items, (name, found[name])
    # why the podcast's link is no identity is stored with each episode
    refusals = Counter(
        str(r[0])
        for r in rows(
            db_url,
            "SELECT items.dedup_url_refusal FROM items JOIN feeds ON feeds.id = items.feed_id"
            " WHERE feeds.name = 'rss-parser/itunes-missing-image.rss'",
        )
    )
    assert sum(n for reason, n in refusals.items() if "front page" in reason) > 100
    # Scripting News: the fragment tells the posts apart, so it stays in the canonical URL
    urls = rows(
        db_url,
        "SELECT items.canonical_url, items.dedup_url_refusal FROM items"
        " JOIN feeds ON feeds.id = items.feed_id"
        " WHERE feeds.name = 'rsparser-netnewswire/scriptingNews.rss'",
    )
    assert len(urls) == 50
    with_fragment = [u for u, _ in urls if "#" in str(u)]
    assert len(set(with_fragment)) >= 45
    # the few links that several posts share (a day's page, a permalink) are no identity
    shared = Counter(u for u, _ in urls)
    assert all(refusal for u, refusal in urls if shared[u] > 1)


def test_the_same_post_in_atom_and_json_feed_is_one_story(
    server: FixtureServer, tmp_path: Path
) -> None:
    """Daring Fireball's Atom entries link to the page they discuss, its JSON Feed items to
    its own post: no URL in common, one-sentence texts. Same title and same text: one
    story each (before: 43 of 48; texts under 10 shingles were no evidence at all)."""
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    feeds = serve(
        server,
        "rsparser-netnewswire/DaringFireball.atom",
        "rsparser-netnewswire/DaringFireball.json",
    )
    run_once(write_config(tmp_path / "feeds.yaml", feeds), db_url)
    truth = json.loads((FEEDS / "rsparser-netnewswire/DaringFireball.json").read_bytes())
    titles = {item["title"] for item in truth["items"]}
    by_title: dict[str, set[object]] = {}
    for title, story in rows(db_url, "SELECT title, story_id FROM items"):
        by_title.setdefault(str(title), set()).add(story)
    pairs = [t for t in titles if t in by_title]
    assert len(pairs) == 48
    assert all(len(by_title[t]) == 1 for t in pairs), [t for t in pairs if len(by_title[t]) > 1]
    counts = rows(db_url, "SELECT count(*), count(DISTINCT story_id) FROM items")
    assert counts == [(96, 48)]


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_rebuild_splits_wrong_merges_of_an_old_store(
    server: FixtureServer, tmp_path: Path, db_url: str
) -> None:
    """A store whose podcast episodes were merged by their shared home-page link (what the
    rules before issue 17 did) heals with ``stories rebuild``: one story per episode, the
    old story's id still resolves, and ``stories explain`` says why the link was refused."""
    feeds = serve(server, "rss-parser/itunes-missing-image.rss")
    config = write_config(tmp_path / "feeds.yaml", feeds)
    run_once(config, db_url)
    n_items = rows(db_url, "SELECT count(*) FROM items")[0][0]
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.begin() as conn:  # the old rules' result: one story, the URL an identity
        first = conn.execute(text("SELECT min(story_id) FROM items")).scalar_one()
        conn.execute(
            text(
                "UPDATE items SET story_id = :s, dedup_url_refusal = NULL,"
                " dedup_reason = CASE WHEN story_id = :s THEN 'new' ELSE 'canonical_url' END"
            ),
            {"s": first},
        )
        conn.execute(text("DELETE FROM stories WHERE id <> :s"), {"s": first})
    engine.dispose()
    assert rows(db_url, "SELECT count(DISTINCT story_id) FROM items") == [(1,)]
    runner = CliRunner()
    result = runner.invoke(
        app, ["stories", "rebuild", "-c", str(config), "-d", db_url, "--batch", "7"]
    )
    assert result.exit_code == 0, result.output
    assert f"{n_items} items re-decided" in " ".join(result.output.split())
    assert rows(db_url, "SELECT count(DISTINCT story_id) FROM items") == [(n_items,)]
    assert rows(db_url, "SELECT count(*) FROM stories") == [(n_items,)]
    refused = rows(db_url, "SELECT count(*) FROM items WHERE dedup_url_refusal LIKE '%front page%'")
    assert refused[0][0] > 100  # type: ignore[operator]
    explained = runner.invoke(
        app, ["stories", "explain", str(first), "--json", "-c", str(config), "-d", db_url]
    )
    assert explained.exit_code == 0, explained.output
    story = json.loads(explained.output)
    assert story["requested_id"] == first
    (source,) = story["sources"]
    assert source["reason"] == "new" and source["rule"] == "started the story"
    assert "front page" in source["url_refusal"]
    # a second rebuild changes nothing
    again = runner.invoke(app, ["stories", "rebuild", "-c", str(config), "-d", db_url])
    assert again.exit_code == 0, again.output
    assert "0 moved to another story" in " ".join(again.output.split())


def test_rebuild_rejects_a_bad_since(tmp_path: Path) -> None:
    config = write_config(tmp_path / "feeds.yaml", [])
    result = CliRunner().invoke(
        app,
        ["stories", "rebuild", "--since", "soon", "-c", str(config), "-d", "sqlite:///x.db"],
    )
    assert result.exit_code == 2
    assert "--since" in result.output
