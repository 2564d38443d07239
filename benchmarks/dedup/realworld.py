"""Story dedup on real feeds: wrong merges and cross-format recall, ``aggregator run --once``.

Usage (from the project root)::

    python benchmarks/dedup/realworld.py [--corpora ../shared/corpora]
        [--database sqlite:///…] [--keep DIR] [--output FILE]

1. The real-world feed documents of ``corpora/feeds`` (the rows of ``manifest.tsv`` whose
   format is not html, opml or other: 505 documents) are served as they are, each on its
   own path of one HTTP server on 127.0.0.1, and listed in a ``feeds.yaml`` with
   ``full_text: false`` (the entries' own texts only: no article page is fetched).
2. One ``aggregator run --once`` ingests them into a fresh database.
3. From the stored items and stories it reports:

   a. ``same_feed_wrong``: items in one story with an item of the SAME feed whose title
      differs (titles compared as their words, case-folded). A feed lists each of its
      posts once: two differently titled entries of one feed are two posts.
   b. ``cross_feed_low_overlap``: items in one story with an item of ANOTHER feed whose
      title shares < 30 % of its words (share of the shorter title's words found in the
      other) AND whose text shares < half of its word 4-grams (share of the smaller
      text's 4-grams found in the other; no text on either side counts as 0).
   c. ``cross_format_recall``: the same post published by one site in several documents
      (RSS, Atom, JSON Feed; the groups of ``neardup/SOURCES.md`` that lie inside
      ``feeds/``). The truth is read from the files themselves, independently of the
      aggregator: feedparser for RSS/Atom, ``json`` for JSON Feed (feedparser does not read
      it). Two entries of two documents of a group are the same post when they have the
      same id, or the same title (words, case-folded) that no other entry of either
      document has. Recall = share of those pairs stored in one story.

Corpus licences (``corpora/README.md``): the GPL/AGPL sets (feeder-android,
nextcloud-news) are read here for measurement only; nothing of them is copied into the
project.

Writes ``benchmarks/dedup/realworld.json`` (or ``--output``).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tests"))

from httpserver import FixtureServer  # noqa: E402

EXCLUDED_FORMATS = {"html", "opml", "other"}
TITLE_SHARE = 0.30
TEXT_SHARE = 0.50
# the same post in several documents of one site (neardup/SOURCES.md, "Near-duplicate
# material already inside feeds/"); documents that are not feeds (the .html pages) are out
GROUPS: dict[str, tuple[str, ...]] = {
    "daringfireball": (
        "rsparser-netnewswire/DaringFireball.rss",
        "rsparser-netnewswire/DaringFireball.atom",
        "rsparser-netnewswire/DaringFireball.json",
    ),
    "allthis": ("rsparser-netnewswire/allthis.atom", "rsparser-netnewswire/allthis.json"),
    "pauldix": (
        "feedjira/PaulDixExplainsNothing.xml",
        "feedjira/PaulDixExplainsNothingAlternate.xml",
        "feedjira/PaulDixExplainsNothingWFW.xml",
    ),
    "tpm": (
        "node-feedparser/tpm.atom",
        "node-feedparser/tpm-with-empty-base.atom",
        "node-feedparser/tpm-with-fragment-base.atom",
    ),
    "cowboyprogrammer": (
        "feeder-android/rss_cowboy.xml",
        "feeder-android/atom_cowboy.xml",
        "feeder-android/cowboy_feed.json",
        "feeder-android/cowboyprogrammer_atom.xml",
        "feeder-android/cowboyprogrammer_deleted_middle_atom.xml",
        "feeder-android/cowboyprogrammer_feed.json",
    ),
    "fz": ("feeder-android/rss_fz.xml", "feeder-android/rss_fz_2022.xml"),
    "golem": ("feeder-android/rss_golem_2.xml", "feeder-android/golem-de.xml"),
}
_WORD = re.compile(r"\w+")


def words(value: str | None) -> list[str]:
    if not value:
        return []
    value = unicodedata.normalize("NFKC", value).replace("’", "").replace("'", "")
    return _WORD.findall(value.casefold())


def title_key(title: str | None) -> str:
    return " ".join(words(title))


def share(a: set[Any], b: set[Any]) -> float:
    """Share of the smaller set found in the other (0 when either is empty)."""
    if not a or not b:
        return 0.0
    return len(a & b) / min(len(a), len(b))


def grams(value: str | None, n: int = 4) -> set[tuple[str, ...]]:
    w = words(value)
    if len(w) < n:
        return {tuple(w)} if w else set()
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def documents(corpora: Path) -> list[tuple[str, str]]:
    """(path relative to feeds/, format) of the real-world feed documents."""
    with (corpora / "feeds" / "manifest.tsv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [(r["path"], r["format"]) for r in rows if r["format"] not in EXCLUDED_FORMATS]


def content_type(fmt: str) -> str:
    if fmt == "jsonfeed":
        return "application/feed+json"
    if fmt == "json":
        return "application/json"
    return "application/xml"


# ---- the truth of the cross-format groups -------------------------------------------


@dataclass(frozen=True)
class TruthEntry:
    doc: str
    id: str | None
    link: str | None
    title: str | None


def truth_entries(path: Path, doc: str) -> list[TruthEntry]:
    raw = path.read_bytes()
    if path.suffix == ".json":
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError:
            return []
        return [
            TruthEntry(doc, it.get("id"), it.get("url"), it.get("title"))
            for it in data.get("items", [])
            if isinstance(it, dict)
        ]
    import feedparser

    parsed = feedparser.parse(raw)
    return [TruthEntry(doc, e.get("id"), e.get("link"), e.get("title")) for e in parsed.entries]


def same_post_pairs(corpora: Path) -> dict[str, list[tuple[TruthEntry, TruthEntry]]]:
    out: dict[str, list[tuple[TruthEntry, TruthEntry]]] = {}
    for name, docs in GROUPS.items():
        entries = {d: truth_entries(corpora / "feeds" / d, d) for d in docs}
        pairs: list[tuple[TruthEntry, TruthEntry]] = []
        for da, db in itertools.combinations(docs, 2):
            titles_a = Counter(title_key(e.title) for e in entries[da])
            titles_b = Counter(title_key(e.title) for e in entries[db])
            for a in entries[da]:
                for b in entries[db]:
                    key = title_key(a.title)
                    same_title = (
                        (key != "" and key == title_key(b.title))
                        and titles_a[key] == 1
                        and titles_b[key] == 1
                    )
                    same_id = a.id is not None and a.id == b.id
                    if same_id or same_title:
                        pairs.append((a, b))
        out[name] = pairs
    return out


# ---- the run -------------------------------------------------------------------------


def run(corpora: Path, database: str | None, work: Path) -> tuple[str, float, dict[str, str]]:
    """Serve the documents, ``aggregator run --once``; (database URL, seconds, url -> doc)."""
    server = FixtureServer("127.0.0.1").start()
    try:
        feed_list = []
        by_url: dict[str, str] = {}
        for path, fmt in documents(corpora):
            body = (corpora / "feeds" / path).read_bytes()
            url = server.add("/" + path, body, content_type=content_type(fmt))
            by_url[url] = path
            feed_list.append({"url": url, "name": path, "full_text": False})
        config = work / "feeds.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "settings": {
                        "allow_private_networks": ["127.0.0.0/8"],
                        "per_host_delay": "0s",
                        "per_host_concurrency": 16,
                        "concurrency": 32,
                    },
                    "feeds": feed_list,
                }
            ),
            encoding="utf-8",
        )
        url = database or f"sqlite:///{work / 'realworld.db'}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "aggregator", "run", "--once", "-c", str(config), "-d", url],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            print(result.stdout[-3000:], result.stderr[-3000:])
            raise SystemExit("aggregator run --once failed")
        return url, elapsed, by_url
    finally:
        server.stop()


@dataclass(frozen=True)
class Item:
    id: int
    feed: str
    guid: str | None
    url: str | None
    title: str | None
    text: str | None
    story: int
    reason: str | None


def read_items(database: str, by_url: dict[str, str]) -> list[Item]:
    engine = create_engine(database)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT items.id, feeds.url AS feed_url, feeds.configured_url, items.guid,"
                    " items.url, items.title, items.text, items.story_id, items.dedup_reason"
                    " FROM items JOIN feeds ON feeds.id = items.feed_id ORDER BY items.id"
                )
            ).all()
    finally:
        engine.dispose()
    return [
        Item(
            r.id,
            by_url.get(r.configured_url or "") or by_url.get(r.feed_url) or _doc(r.feed_url),
            r.guid,
            r.url,
            r.title,
            r.text,
            r.story_id,
            r.dedup_reason,
        )
        for r in rows
    ]


def _doc(url: str) -> str:
    """The document a served feed URL names (its path without the leading slash)."""
    return urlsplit(url).path.lstrip("/")


def score(
    items: list[Item], pairs: dict[str, list[tuple[TruthEntry, TruthEntry]]]
) -> dict[str, Any]:
    stories: dict[int, list[Item]] = defaultdict(list)
    for item in items:
        stories[item.story].append(item)
    same_feed: set[int] = set()
    cross: set[int] = set()
    cross_pairs = 0
    examples_same: list[dict[str, Any]] = []
    examples_cross: list[dict[str, Any]] = []
    gram_cache: dict[int, set[tuple[str, ...]]] = {}
    for members in stories.values():
        if len(members) < 2:
            continue
        for a, b in itertools.combinations(members, 2):
            if a.feed == b.feed:
                if title_key(a.title) != title_key(b.title):
                    if len(examples_same) < 40 and not ({a.id, b.id} <= same_feed):
                        examples_same.append(_example(a, b))
                    same_feed.update((a.id, b.id))
                continue
            if share(set(words(a.title)), set(words(b.title))) >= TITLE_SHARE:
                continue
            ga = gram_cache.setdefault(a.id, grams(a.text))
            gb = gram_cache.setdefault(b.id, grams(b.text))
            if share(ga, gb) >= TEXT_SHARE:
                continue
            cross_pairs += 1
            if len(examples_cross) < 40 and not ({a.id, b.id} <= cross):
                examples_cross.append(_example(a, b))
            cross.update((a.id, b.id))
    # recall on the cross-format groups
    index: dict[tuple[str, str], list[Item]] = defaultdict(list)
    for item in items:
        if item.guid:
            index[(item.feed, "id:" + item.guid)].append(item)
        index[(item.feed, "title:" + title_key(item.title))].append(item)
    recall: dict[str, dict[str, Any]] = {}
    total = merged = unmatched = 0
    missed: list[dict[str, Any]] = []
    for name, group_pairs in pairs.items():
        got = ok = 0
        for a, b in group_pairs:
            ia, ib = _find(index, a), _find(index, b)
            if ia is None or ib is None:
                unmatched += 1
                continue
            got += 1
            if ia.story == ib.story:
                ok += 1
            elif len(missed) < 40:
                missed.append(_example(ia, ib))
        recall[name] = {"pairs": got, "merged": ok, "recall": round(ok / got, 4) if got else None}
        total += got
        merged += ok
    n = len(items)
    return {
        "items": n,
        "stories": len(stories),
        "reasons": dict(Counter(i.reason for i in items)),
        "same_feed_wrong": len(same_feed),
        "same_feed_wrong_pct": round(100 * len(same_feed) / n, 3) if n else 0.0,
        # of them, those that did not start their story (merged into it)
        "same_feed_wrong_merged": sum(1 for i in items if i.id in same_feed and i.reason != "new"),
        "cross_feed_low_overlap": len(cross),
        "cross_feed_low_overlap_pct": round(100 * len(cross) / n, 3) if n else 0.0,
        "cross_feed_low_overlap_pairs": cross_pairs,
        "cross_format_pairs": total,
        "cross_format_merged": merged,
        "cross_format_recall": round(merged / total, 4) if total else None,
        "cross_format_unmatched": unmatched,
        "cross_format_groups": recall,
        "examples_same_feed": examples_same,
        "examples_cross_feed": examples_cross,
        "examples_missed": missed,
    }


WORD_BUCKETS = (5, 10, 20, 30, 40, 50, 75, 100, 200)


def threshold_study(items: list[Item]) -> list[dict[str, Any]]:
    """How long must a text be for a text-only match between two feeds to be evidence?

    Every pair of items of different feeds whose texts contain one another (the smaller's
    5-word shingles found in the larger: >= 70 %, the text rule's threshold, no boilerplate
    discount), bucketed by the smaller text's word count: how many of those pairs have
    titles sharing under 30 % of their words (a reader would call them different posts).
    Shingles found in more than 100 items are not used to find pairs (boilerplate)."""
    from aggregator import dedup

    shingles: dict[int, set[int]] = {}
    size: dict[int, int] = {}
    postings: dict[int, list[int]] = defaultdict(list)
    for item in items:
        values = set(dedup.shingle_array(item.text or "").tolist())
        if not values:
            continue
        shingles[item.id] = values
        size[item.id] = len(words(item.text))
        for value in values:
            postings[value].append(item.id)
    by_id = {i.id: i for i in items}
    seen: set[tuple[int, int]] = set()
    buckets: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # bucket -> [pairs, differ]
    for ids in postings.values():
        if len(ids) > 100:
            continue
        for a, b in itertools.combinations(ids, 2):
            if (a, b) in seen or by_id[a].feed == by_id[b].feed:
                continue
            seen.add((a, b))
            sa, sb = shingles[a], shingles[b]
            if len(sa & sb) / min(len(sa), len(sb)) < 0.70:
                continue
            smaller = min(size[a], size[b])
            bucket = max(w for w in WORD_BUCKETS if w <= smaller) if smaller >= 5 else 0
            buckets[bucket][0] += 1
            ta, tb = set(words(by_id[a].title)), set(words(by_id[b].title))
            buckets[bucket][1] += share(ta, tb) < TITLE_SHARE
    return [
        {"smaller_text_words_from": k, "pairs": v[0], "titles_differ": v[1]}
        for k, v in sorted(buckets.items())
    ]


def _find(index: dict[tuple[str, str], list[Item]], entry: TruthEntry) -> Item | None:
    if entry.id:
        found = index.get((entry.doc, "id:" + entry.id))
        if found and len(found) == 1:
            return found[0]
    found = index.get((entry.doc, "title:" + title_key(entry.title)))
    if found and len(found) == 1:
        return found[0]
    return None


def _example(a: Item, b: Item) -> dict[str, Any]:
    return {
        "story": a.story,
        "feeds": [a.feed, b.feed],
        "titles": [a.title, b.title],
        "urls": [a.url, b.url],
        "reasons": [a.reason, b.reason],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--database", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--keep", type=Path, help="keep the database and config in this folder")
    parser.add_argument("--output", type=Path, default=HERE / "realworld.json")
    parser.add_argument(
        "--examples",
        action="store_true",
        help="also write examples of wrong merges and misses (titles and URLs of the corpus "
        "feeds: keep that file out of the project, some sets are measurement-only)",
    )
    parser.add_argument(
        "--score-only", action="store_true", help="score --database as it is (no run)"
    )
    args = parser.parse_args()
    corpora = args.corpora.resolve()
    if args.score_only:
        if not args.database:
            raise SystemExit("--score-only needs --database")
        database, elapsed, by_url = args.database, 0.0, {}
    else:
        work = Path(tempfile.mkdtemp(prefix="dedup-real-")) if args.keep is None else args.keep
        work.mkdir(parents=True, exist_ok=True)
        database, elapsed, by_url = run(corpora, args.database, work)
    report: dict[str, Any] = {
        "command": "benchmarks/dedup/realworld.py " + " ".join(sys.argv[1:]),
        "documents": len(by_url) or None,
    }
    stored = read_items(database, by_url)
    report.update(score(stored, same_post_pairs(corpora)))
    report["text_match_by_length"] = threshold_study(stored)
    report["ingest_seconds"] = round(elapsed, 1)
    summary = {k: v for k, v in report.items() if not k.startswith("examples")}
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    written = report if args.examples else summary
    args.output.write_text(
        json.dumps(written, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    main()
