"""Story dedup through the real pipeline and store: three feeds carrying copies, story
merges, the ``stories`` commands, and two worker processes ingesting copies at once."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from html import escape
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from aggregator.cli import app
from aggregator.config import load_config
from aggregator.ingest.direct import save_now
from aggregator.records import PollToSave
from aggregator.scheduler import utcnow
from aggregator.store import open_store
from builders import rss
from conftest import DATA, write_config
from httpserver import FixtureServer
from ingest import rows
from test_pipeline import run_once

ARTICLES = json.loads((DATA / "dedup" / "zyte-articles.json").read_text(encoding="utf-8"))
TITLES = {
    "duvet-gizmodo": "A man developed 'feather duvet lung' after getting new bedding",
    "omar-thehill": "New York man pleads guilty to threatening to kill Omar",
    "omar-nbcnews": "New York man pleads guilty to threatening to kill Rep. Ilhan Omar",
    "wework-techcrunch": "New York State attorney general reportedly investigating WeWork",
    "wework-venturebeat": "New York State attorney general investigating WeWork and former CEO",
}


def paragraphs(name: str) -> list[str]:
    return [p.strip() for p in str(ARTICLES[name]["articleBody"]).split("\n") if p.strip()]


def page(outlet: str, title: str, parts: list[str], canonical: str | None = None) -> str:
    """An article page in the outlet's own template."""
    body = "\n".join(f"<p>{escape(p)}</p>" for p in parts)
    link = f'<link rel="canonical" href="{escape(canonical)}">' if canonical else ""
    if outlet == "a":
        main = f"<article><h1>{escape(title)}</h1><p class=by>By Staff</p>{body}</article>"
    elif outlet == "b":
        main = f'<div class="story-body"><h2>{escape(title)}</h2>{body}<p>Share this</p></div>'
    else:
        main = f'<main><section class="content"><h1>{escape(title)}</h1>{body}</section></main>'
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{escape(title)} | Outlet {outlet.upper()}</title>{link}</head><body>
<header><nav><a href="/">Home</a> <a href="/news">News</a> <a href="/sport">Sport</a></nav></header>
{main}
<aside><h3>Most read</h3><ul><li><a href="/x">Another story</a></li></ul></aside>
<footer>Copyright Outlet {outlet.upper()}. All rights reserved.</footer></body></html>"""


def publish(server: FixtureServer, outlet: str, posts: list[tuple[str, str, list[str]]]) -> str:
    """Serve the outlet's pages and its RSS feed; posts are (slug, title, paragraphs)."""
    items = []
    for slug, title, parts in posts:
        url = server.add(
            f"/{outlet}/{slug}.html", page(outlet, title, parts), content_type="text/html"
        )
        items.append({"title": title, "link": url, "guid": f"{outlet}-{slug}"})
    return server.add(f"/{outlet}/feed.xml", rss(f"Outlet {outlet}", items))


def groups(db_url: str) -> set[frozenset[str]]:
    """The stories as sets of item URLs (path only)."""
    out: dict[object, set[str]] = {}
    for story_id, url in rows(db_url, "SELECT story_id, url FROM items"):
        out.setdefault(story_id, set()).add(str(url).split("/", 3)[3].split("?")[0])
    return {frozenset(v) for v in out.values()}


def test_three_feeds_carrying_copies_end_with_the_right_stories(
    server: FixtureServer, tmp_path: Path, db_url: str
) -> None:
    duvet, omar = paragraphs("duvet-gizmodo"), paragraphs("omar-thehill")
    half = [*omar[: len(omar) // 2], "Read more at Outlet A …"]
    updated = [*duvet[:3], "This story has been updated with a statement.", *duvet[3:]]
    updated[1] = updated[1].replace("the", "a", 1)
    reflowed = [" ".join(omar[i : i + 2]) for i in range(0, len(omar), 2)]
    feed_a = publish(
        server,
        "a",
        [
            ("duvet", TITLES["duvet-gizmodo"], duvet),
            ("omar", TITLES["omar-thehill"], omar),
            ("wework", TITLES["wework-techcrunch"], paragraphs("wework-techcrunch")),
        ],
    )
    feed_b = publish(
        server,
        "b",
        [
            (
                "duvet-lung",
                TITLES["duvet-gizmodo"].upper(),
                [*duvet, "Originally published by Outlet A."],
            ),
            ("omar-plea", f"Outlet B: {TITLES['omar-thehill']}", half),
            ("omar-nbc", TITLES["omar-nbcnews"], paragraphs("omar-nbcnews")),
        ],
    )
    feed_c = publish(
        server,
        "c",
        [
            ("duvet-update", TITLES["duvet-gizmodo"], updated),
            ("omar-threat", TITLES["omar-thehill"], reflowed),
            ("wework-ag", TITLES["wework-venturebeat"], paragraphs("wework-venturebeat")),
        ],
    )
    # the same page as outlet A's, linked with tracking parameters under a new GUID
    tracking = server.url("/a/wework.html") + "?utm_source=twitter&utm_medium=social"
    server.add(
        "/c/feed.xml",
        server.routes["/c/feed.xml"]
        .body.decode()
        .replace(
            "</channel>",
            f"<item><title>WeWork probe</title><link>{escape(tracking)}</link>"
            "<guid>c-wework-share</guid></item></channel>",
        ),
    )
    cfg = write_config(
        tmp_path / "feeds.yaml",
        [{"url": feed_a, "name": "A"}, {"url": feed_b, "name": "B"}, {"url": feed_c, "name": "C"}],
    )
    summary = run_once(cfg, db_url)
    assert summary.failed == 0 and summary.new_items == 10
    assert groups(db_url) == {
        frozenset({"a/duvet.html", "b/duvet-lung.html", "c/duvet-update.html"}),
        frozenset({"a/omar.html", "b/omar-plea.html", "c/omar-threat.html"}),
        frozenset({"a/wework.html"}),  # two items: the tracking link is the same page
        frozenset({"b/omar-nbc.html"}),
        frozenset({"c/wework-ag.html"}),
    }
    assert summary.new_stories == 5
    stories = rows(db_url, "SELECT id, title, url, item_count FROM stories ORDER BY id")
    assert sorted(s[3] for s in stories) == [1, 1, 2, 3, 3]
    # the representative is a full version, never the truncated copy
    omar_story = next(s for s in stories if "omar" in str(s[2]) and s[3] == 3)
    assert not str(omar_story[2]).endswith("/b/omar-plea.html")
    reasons = rows(db_url, "SELECT dedup_reason FROM items WHERE dedup_reason != 'new'")
    assert sorted(r[0] for r in reasons) == ["canonical_url", "text", "text", "text", "text"]
    # every band of every item is in the index, with the item's first_seen_at
    assert rows(db_url, "SELECT count(DISTINCT item_id) FROM dedup_bands") == [(10,)]


def test_a_later_item_merges_two_stories_and_the_merge_is_recorded(
    server: FixtureServer, tmp_path: Path, db_url: str, request: pytest.FixtureRequest
) -> None:
    duvet = paragraphs("duvet-gizmodo")
    n = len(duvet)
    versions = {
        "x": ("early", "Hospital puzzled by a patient's lungs", duvet[: int(n * 0.7)]),
        "y": ("late", "Doctors trace illness to new bedding", duvet[int(n * 0.3) :]),
        "z": ("full", TITLES["duvet-gizmodo"], duvet),
    }
    feeds = {"x": publish(server, "x", [versions["x"]])}
    for outlet, host in (("y", "127.0.0.2"), ("z", "127.0.0.3")):  # three sites
        other = FixtureServer(host).start()
        request.addfinalizer(other.stop)
        feeds[outlet] = publish(other, outlet, [versions[outlet]])
    for step, outlet in enumerate("xyz", 1):
        cfg = write_config(
            tmp_path / f"feeds{step}.yaml",
            [{"url": feeds[o], "name": f"Outlet {o.upper()}"} for o in "xyz"[:step]],
        )
        run_once(cfg, db_url)
        if outlet == "y":  # overlapping partial versions with different titles: two stories
            assert len(rows(db_url, "SELECT id FROM stories")) == 2
    stories = rows(db_url, "SELECT id, title, url, item_count, representative_item_id FROM stories")
    assert len(stories) == 1
    story_id, title, url, count, rep = stories[0]
    assert count == 3
    assert (title, str(url).rsplit("/", 1)[-1]) == (TITLES["duvet-gizmodo"], "full.html")
    full_item = rows(db_url, "SELECT id FROM items WHERE url LIKE '%/z/full.html'")[0][0]
    assert rep == full_item  # the earliest FULL version, though it came last
    merges = rows(db_url, "SELECT story_id, merged_story_id, item_id, reason FROM story_merges")
    assert len(merges) == 1 and merges[0][0] == story_id and merges[0][2] == full_item

    cli = CliRunner()
    env = {"COLUMNS": "200"}
    listed = cli.invoke(
        app,
        ["stories", "--since", "1h", "--min-sources", "3", "--json", "-c", str(cfg), "-d", db_url],
        env=env,
    )
    assert listed.exit_code == 0, listed.output
    (line,) = listed.output.strip().splitlines()
    story = json.loads(line)
    assert story["id"] == story_id and len(story["sources"]) == 3
    assert {s["feed"] for s in story["sources"]} == {"Outlet X", "Outlet Y", "Outlet Z"}
    explained = cli.invoke(
        app, ["stories", "explain", str(merges[0][1]), "-c", str(cfg), "-d", db_url], env=env
    )
    assert explained.exit_code == 0, explained.output
    assert f"was merged into story {story_id}" in explained.output
    assert "merged story" in explained.output and "text" in explained.output
    none = cli.invoke(app, ["stories", "--min-sources", "4", "-c", str(cfg), "-d", db_url], env=env)
    assert none.exit_code == 0 and "no story" in none.output


def test_boilerplate_learned_from_the_site_keeps_short_articles_apart(
    server: FixtureServer, tmp_path: Path, db_url: str
) -> None:
    appeal = paragraphs("wework-venturebeat")[:4]  # stands in for a long donation appeal
    # the site's usual articles carry the appeal: different stories (the appeal is a
    # minority of each), and they teach the store that its shingles are the site's boilerplate
    history = [
        (f"long-{i}", f"Long story {name}", [*paragraphs(name), *appeal])
        for i, name in enumerate(["duvet-gizmodo", "omar-nbcnews", "wework-techcrunch"])
    ]
    feed = publish(server, "s", history)
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": feed}])
    run_once(cfg, db_url)
    assert len(rows(db_url, "SELECT id FROM stories")) == 3
    learned = rows(db_url, "SELECT count(*) FROM dedup_shingles WHERE df >= 3")[0][0]
    assert int(str(learned)) > 0
    # then two short articles where the appeal is most of the text
    shorts = []
    for i, name in enumerate(["omar-thehill", "duvet-livescience"]):
        words = " ".join(paragraphs(name)).split()[:40]
        shorts.append((f"short-{i}", f"Short story {i}", [" ".join(words) + ".", *appeal]))
    feed = publish(server, "s", history + shorts)
    run_once(cfg, db_url)
    got = rows(db_url, "SELECT dedup_reason FROM items WHERE url LIKE '%short-%' ORDER BY id")
    assert [r[0] for r in got] == ["new", "new"]
    assert len(rows(db_url, "SELECT id FROM stories")) == 5


# ---- two worker processes at once --------------------------------------------------------


def _barrier_feed(server: FixtureServer, path: str, body: str, barrier: threading.Barrier) -> str:
    data = body.encode()

    def handler(h: BaseHTTPRequestHandler) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=30)  # both workers get their feed at the same moment
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return server.add(path, handler=handler)


WORKER = """
import asyncio, sys
from aggregator.config import load_config
from aggregator.scheduler import Runner, utcnow
from aggregator.store import open_store

config = load_config(sys.argv[1], sys.argv[2])
store = open_store(config.database_url)

async def main() -> None:
    state = next(s for s in store.feed_states(utcnow(), due_only=False) if s.url == sys.argv[3])
    runner = Runner(config, store)
    # warm the process pool first, so both workers reach the store at the same moment
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(runner.app.pool, sorted, [2, 1]) for _ in range(4)))
    try:
        outcome = await runner.poll(state)
    finally:
        await runner.close()
    assert outcome is not None and outcome.ok, outcome
    print(outcome)

asyncio.run(main())
store.close()
"""


@pytest.mark.slow
def test_two_processes_ingesting_copies_at_once_leave_one_story(
    server: FixtureServer, tmp_path: Path, db_url: str
) -> None:
    barrier = threading.Barrier(2)
    urls = []
    for worker, restyle in enumerate([str.upper, lambda t: f"{t} | Outlet W1"]):
        items = [
            {
                "title": restyle(TITLES["duvet-gizmodo"]),
                "link": f"http://127.0.0.1:9/w{worker}/copy",
                "guid": f"w{worker}-copy",
                "content": "".join(f"<p>{escape(p)}</p>" for p in paragraphs("duvet-gizmodo")),
            }
        ]
        # then other items (each worker its own): the transaction stays open after the copy
        others = [n for n in ARTICLES if not n.startswith("duvet")][worker * 2 : worker * 2 + 2]
        for j, name in enumerate(others):
            for k in range(6):
                items.append(
                    {
                        "title": f"{name} part {k}",
                        "link": f"http://127.0.0.1:9/w{worker}/{j}-{k}",
                        "guid": f"w{worker}-{j}-{k}",
                        "content": "".join(f"<p>{escape(p)}</p>" for p in paragraphs(name)[k::6]),
                    }
                )
        urls.append(_barrier_feed(server, f"/w{worker}.xml", rss(f"w{worker}", items), barrier))
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": u, "full_text": False} for u in urls])
    # the database and feeds exist; then two processes each poll one feed, both feeds are
    # served at the same moment, and both write a copy of one article
    config = load_config(cfg, db_url)
    store = open_store(db_url)
    store.upgrade()
    store.sync_feeds(config.feeds, utcnow())
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(cfg), db_url, url],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for url in urls
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out)
    copies = rows(db_url, "SELECT story_id FROM items WHERE guid LIKE '%-copy'")
    assert len(copies) == 2, outputs
    assert copies[0][0] == copies[1][0], "two workers left two stories for one article"
    reasons = rows(db_url, "SELECT dedup_reason FROM items WHERE guid LIKE '%-copy' ORDER BY id")
    assert [r[0] for r in reasons] == ["new", "text"]
    assert rows(db_url, "SELECT count(*) FROM items") == [(2 + 2 * 12,)]


def test_migration_0006_recomputes_every_stored_fingerprint(
    server: FixtureServer, tmp_path: Path, db_url: str
) -> None:
    """Fingerprints written by the blake2b hashing of 0005 and before are recomputed from
    the items' texts: shingles, LSH band rows (first-seen times kept), anchor counts."""
    from aggregator import dedup
    from aggregator.dedup import site_key

    feed = publish(
        server,
        "a",
        [
            ("duvet", TITLES["duvet-gizmodo"], paragraphs("duvet-gizmodo")),
            ("omar", TITLES["omar-thehill"], paragraphs("omar-thehill")),
        ],
    )
    run_once(write_config(tmp_path / "feeds.yaml", [{"url": feed}]), db_url)
    expected_bands = set(rows(db_url, "SELECT band, item_id FROM dedup_bands"))
    expected_counts = set(rows(db_url, "SELECT site, shingle, df FROM dedup_shingles"))
    assert len(expected_bands) >= 2 * 15 and expected_counts
    store = open_store(db_url)
    try:
        store.downgrade("0005")
        engine = create_engine(db_url)
        with engine.begin() as conn:  # what the old hashing left behind
            conn.execute(text("UPDATE items SET shingles = NULL"))
            conn.execute(text("UPDATE dedup_bands SET band = band + 1"))
            conn.execute(text("UPDATE dedup_shingles SET shingle = shingle + 1, df = 7"))
        engine.dispose()
        store.upgrade()
    finally:
        store.close()
    assert set(rows(db_url, "SELECT band, item_id FROM dedup_bands")) == expected_bands
    assert set(rows(db_url, "SELECT site, shingle, df FROM dedup_shingles")) == expected_counts
    for text_, url, blob in rows(db_url, "SELECT text, url, shingles FROM items"):
        fp = dedup.fingerprint(str(text_))
        assert fp is not None and bytes(blob) == fp.shingles  # type: ignore[arg-type]
        site = site_key(str(url))
        assert {(site, a, 1) for a in fp.anchors} <= expected_counts
    first_seen = rows(
        db_url,
        "SELECT count(*) FROM dedup_bands b JOIN items i ON i.id ="
        " b.item_id WHERE b.first_seen_at = i.first_seen_at",
    )
    assert first_seen[0][0] == len(expected_bands)


def test_index_rows_store_times_as_the_items_do(tmp_path: Path, db_url: str) -> None:
    """Band rows (written through the driver) keep ``first_seen_at`` exactly as the items
    table does, also at a whole second, so the dedup window finds them: a copy saved by a
    second poll one second later joins the first item's story."""
    from datetime import UTC, datetime, timedelta

    from aggregator.records import FeedUpdate
    from test_dedup import entry

    cfg = write_config(tmp_path / "feeds.yaml", [{"url": "http://127.0.0.1:9/a.xml"}])
    config = load_config(cfg, db_url)
    first = datetime(2026, 1, 5, 8, 0, 0, tzinfo=UTC)  # microsecond 0
    store = open_store(db_url)
    try:
        store.upgrade()
        store.sync_feeds(config.feeds, first)
        feed_id = store.list_feeds()[0].id
        text_ = body_text = "\n".join(paragraphs("duvet-gizmodo"))
        for n, polled in enumerate((first, first + timedelta(seconds=1))):
            update = FeedUpdate(polled_at=polled, status=200, ok=True, next_check_at=polled)
            clean = entry(text_, TITLES["duvet-gizmodo"], f"http://127.0.0.{n + 2}/duvet")
            save_now(store, PollToSave(feed_id, update, (clean,)))
            text_ = body_text + "\nThis story was updated."
    finally:
        store.close()
    assert rows(
        db_url,
        "SELECT count(*) FROM dedup_bands b JOIN items i ON i.id = b.item_id"
        " WHERE b.first_seen_at <> i.first_seen_at",
    ) == [(0,)]
    reasons = rows(db_url, "SELECT dedup_reason FROM items ORDER BY id")
    assert reasons == [("new",), ("republished",)]  # two entries of one feed
    assert rows(db_url, "SELECT count(DISTINCT story_id) FROM items") == [(1,)]


def test_anchor_counts_read_with_a_threshold_leave_out_only_the_rarer_pairs(
    db_url: str,
) -> None:
    """``index.anchor_counts`` (driver SQL, ``IN`` lists padded to a few sizes) gives the
    exact counts, and with ``min_df`` only the pairs seen that often: what ``Prefetch``
    reads for a candidate's site, where only a common anchor matters."""
    from collections import Counter
    from datetime import UTC, datetime

    from aggregator.store import index

    store = open_store(db_url)
    try:
        store.upgrade()
        now = datetime(2026, 1, 5, 8, 0, 0, tzinfo=UTC)
        counts = Counter({(7, a): a % 5 for a in range(1, 300)} | {(8, 3): 9})
        counts = Counter({pair: n for pair, n in counts.items() if n})
        with store.tx() as conn:
            index.count_anchors(conn, counts, now)
        # pairs of two sites, some never counted, in no order, with repeats
        asked = [(7, a) for a in range(299, 0, -1)] + [(8, 3), (8, 4), (7, 3), (9, 1)]
        with store.read() as conn:
            exact = index.anchor_counts(conn, asked)
            common = index.anchor_counts(conn, asked, 3)
    finally:
        store.close()
    assert exact == {pair: n for pair, n in counts.items()}
    assert common == {pair: n for pair, n in counts.items() if n >= 3}
    assert (7, 5) not in exact and (8, 4) not in exact and (9, 1) not in exact
    assert index.padded([4, 9, 2]) == [4, 9, 2, 2] and len(index.padded(list(range(33)))) == 64


def test_prefetch_counts_anchors_as_at_the_polls_start_plus_its_own_stories(
    db_url: str,
) -> None:
    """``Prefetch`` reads anchor counts only when a decision needs them, possibly after
    some of the poll's new stories are written: it must count each of those stories
    once (the database's count then holds them already), so an anchor becomes common at
    exactly ``dedup.COMMON_DF`` stories of its site."""
    from collections import Counter
    from datetime import UTC, datetime, timedelta

    from aggregator import dedup
    from aggregator.ingest.candidates import Prefetch
    from aggregator.store import index
    from test_dedup import candidate, entry

    text_ = "\n".join(paragraphs("duvet-gizmodo"))
    link = "http://127.0.0.1:1/a/duvet"
    clean = entry(text_, TITLES["duvet-gizmodo"], link)
    site = dedup.site_key(link)
    assert site is not None and clean.fingerprint is not None
    pairs = Counter({(site, a): 1 for a in set(clean.fingerprint.anchors)})
    found = [candidate(text_, "x", link="http://127.0.0.1:1/a/other")]
    now = datetime(2026, 1, 5, 8, 0, 0, tzinfo=UTC)
    store = open_store(db_url)
    try:
        store.upgrade()
        with store.tx() as conn:
            index.count_anchors(conn, pairs, now)  # one story of the site before the poll
            prefetch = Prefetch([clean], now - timedelta(days=2)).load(conn, [site])
            prefetch.count(clean, site)  # a new story of the poll, written at once
            index.count_anchors(conn, pairs, now)
            prefetch.flushed(pairs)
            assert prefetch.common_anchors(clean, found, site) == frozenset()  # 2 stories
            prefetch.count(clean, site)  # a third, not written yet
            common = prefetch.common_anchors(clean, found, site)
            conn.rollback()
    finally:
        store.close()
    assert common == frozenset(clean.fingerprint.anchors)
