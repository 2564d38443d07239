"""End-to-end dedup evaluation: real texts, copies on several outlets, ``aggregator run --once``.

Usage (from the project root)::

    /work/venv/bin/python benchmarks/dedup/eval.py [--corpora ../shared/corpora]
        [--database sqlite:///…] [--seed 1] [--keep DIR] [--output FILE]

1. Base articles: Zyte, Mozilla, CleanEval and WikiRef220 texts (``corpus.py``). Base texts
   that are themselves copies of each other (the corpora hold a few: a WikiRef article on two
   sites, Mozilla test pages saved twice) are one story in the truth; the script reports them.
2. Each base article is published by one outlet and copied by two to four others, each copy of
   another kind (syndicated, truncated, updated, reflowed, tracking — see ``corpus.py``).
   WikiRef articles about one event are different stories. One more outlet, a "gazette",
   carries a long appeal block inside every article body: its usual articles first (a
   history), then short ones where the appeal is most of the text — every one its own story.
3. Seven outlets, each an HTTP server on its own loopback address (127.0.0.2 …), with its own
   page template and an RSS feed; the real ``aggregator run --once`` ingests them all into a
   fresh database.
4. Scores against the truth: pairwise precision and recall over item pairs, B-cubed
   precision/recall/F1, recall per kind of copy, and false merges among the negatives.

Writes ``benchmarks/dedup/eval.json`` (or ``--output``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from html import escape
from pathlib import Path

import yaml
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from corpus import Doc, boilerplate_site, load_all, make_copies  # noqa: E402

from aggregator import dedup  # noqa: E402
from httpserver import FixtureServer  # noqa: E402

OUTLETS = [
    "Daily Planet",
    "Gotham Gazette",
    "Metro Times",
    "Coast Herald",
    "Valley News",
    "Wire Post",
]
TEMPLATES = {
    0: "<article><h1>{title}</h1><p class='byline'>By Staff</p>{body}</article>",
    1: "<div class='story'><h2 class='headline'>{title}</h2><div class='text'>{body}</div>"
    "<p class='share'>Share this story</p></div>",
    2: "<main><section class='content'><h1>{title}</h1>{body}</section></main>",
    3: "<div id='main'><div class='post'><h1 class='entry-title'>{title}</h1>"
    "<div class='entry-content'>{body}</div></div></div>",
    4: "<article class='news'><header><h1>{title}</h1><time>today</time></header>"
    "<div class='article-body'>{body}</div><footer>Tags: news</footer></article>",
    5: "<div role='main'><h1>{title}</h1><div class='body'>{body}</div></div>",
    6: "<article><h1>{title}</h1><div class='content'>{body}</div></article>",
}


def page_html(outlet: int, name: str, title: str, paragraphs: tuple[str, ...]) -> str:
    body = "\n".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    main = TEMPLATES[outlet].format(title=escape(title), body=body)
    nav = " ".join(f"<a href='/{s}'>{s.title()}</a>" for s in ("world", "business", "sport"))
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{escape(title)} | {escape(name)}</title></head><body>
<header><nav>{nav}</nav></header>
{main}
<aside><h3>Most read at {escape(name)}</h3><ul><li><a href="/x">Something else</a></li></ul></aside>
<footer>© {escape(name)}. All rights reserved.</footer></body></html>"""


def rss(name: str, items: list[dict[str, str]]) -> str:
    parts = []
    for item in items:
        parts.append(
            "<item>" + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in item.items()) + "</item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>{escape(name)}</title><link>http://example.org/</link><description>x</description>"
        + "".join(parts)
        + "</channel></rss>"
    )


def truth_groups(docs: list[Doc]) -> dict[str, str]:
    """Base docs that are copies of each other (containment ≥ 0.5) share one truth id.

    Except the Mozilla test pages whose titles differ: they are different pages of a test
    suite that share a lorem-ipsum filler body (8 of them), not one article; a reader would
    not call "Base URL test" and "RTL Test" one story (issue 17: the filler is the site's
    boilerplate). Until issue 17 the truth merged them."""
    titles = {d.id: d.title for d in docs}
    sets = {d.id: set(dedup.shingle_hashes(d.text)) for d in docs}
    parent = {d.id: d.id for d in docs}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    index: dict[int, set[str]] = defaultdict(set)
    for doc_id, s in sets.items():
        for h in s:
            if dedup.is_anchor(h):
                index[h].add(doc_id)
    pairs: set[tuple[str, str]] = set()
    for ids in index.values():
        if 1 < len(ids) < 50:
            pairs.update(itertools.combinations(sorted(ids), 2))
    for a, b in pairs:
        sa, sb = sets[a], sets[b]
        if sa and sb and len(sa & sb) / min(len(sa), len(sb)) >= 0.5:
            filler = a.startswith("mozilla:") and b.startswith("mozilla:")
            if filler and dedup.title_similarity(titles[a], titles[b]) < dedup.TITLE_MATCH:
                continue
            parent[find(a)] = find(b)
    return {d.id: find(d.id) for d in docs}


def pairwise(labels_true: list[str], labels_pred: list[object]) -> dict[str, float]:
    tp = fp = fn = 0
    for i, j in itertools.combinations(range(len(labels_true)), 2):
        same_t = labels_true[i] == labels_true[j]
        same_p = labels_pred[i] == labels_pred[j]
        tp += same_t and same_p
        fp += same_p and not same_t
        fn += same_t and not same_p
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return {"precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fn}


def bcubed(labels_true: list[str], labels_pred: list[object]) -> dict[str, float]:
    by_t: dict[str, set[int]] = defaultdict(set)
    by_p: dict[object, set[int]] = defaultdict(set)
    for i, (t, p) in enumerate(zip(labels_true, labels_pred, strict=True)):
        by_t[t].add(i)
        by_p[p].add(i)
    precision = recall = 0.0
    for t, p in zip(labels_true, labels_pred, strict=True):
        both = len(by_t[t] & by_p[p])
        precision += both / len(by_p[p])
        recall += both / len(by_t[t])
    n = len(labels_true)
    precision, recall = precision / n, recall / n
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--database", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the database and config in this folder")
    parser.add_argument("--output", type=Path, default=HERE / "eval.json")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    docs = load_all(args.corpora)
    truth = truth_groups(docs)
    merged_in_truth = sum(1 for d in docs if truth[d.id] != d.id)
    # a few WikiRef and Zyte articles are kept aside for the gazette (its own stories)
    wiki = [d for d in docs if d.topic]
    gazette_docs = rng.sample(wiki, 30)
    appeal_doc = next(d for d in docs if d.id.startswith("mozilla:") and d.words > 400)
    reserved = {d.id for d in gazette_docs} | {appeal_doc.id}
    base = [d for d in docs if d.id not in reserved]

    servers = [FixtureServer(f"127.0.0.{i + 2}").start() for i in range(len(OUTLETS) + 1)]
    work = Path(tempfile.mkdtemp(prefix="dedup-eval-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        feeds: dict[int, list[dict[str, str]]] = defaultdict(list)
        records: dict[str, tuple[str, str, str]] = {}  # item link path -> (truth, kind, base id)
        for doc in base:
            published: list[tuple[int, str]] = []
            for outlet_name, copy in make_copies(doc, OUTLETS, rng):
                outlet = OUTLETS.index(outlet_name)
                server = servers[outlet]
                slug = f"/{outlet}/{doc.id.replace(':', '-')}-{copy.kind}"
                if copy.kind == "tracking":
                    _, origin_url = published[0]
                    link = f"{origin_url}?utm_source=partner&utm_medium=rss&utm_campaign={outlet}"
                    path = slug  # a new GUID on this outlet's feed, the origin's page
                else:
                    html = page_html(outlet, outlet_name, copy.title, copy.paragraphs)
                    link = server.add(slug + ".html", html, content_type="text/html")
                    path = slug
                    published.append((outlet, link))
                guid = f"tag:outlet{outlet}:{path}"
                feeds[outlet].append({"title": copy.title, "link": link, "guid": guid})
                records[guid] = (truth[doc.id], copy.kind, doc.id)
        gazette = len(OUTLETS)
        history = gazette_docs[:10]
        shorts = boilerplate_site(gazette_docs[10:], appeal_doc, 20, rng)
        history_copies = boilerplate_site(history, appeal_doc, 10, rng, article_words=10_000)
        for copy in [*history_copies, *shorts]:
            slug = f"/{gazette}/{copy.story.replace(':', '-')}"
            html = page_html(gazette, "The Appeal Gazette", copy.title, copy.paragraphs)
            link = servers[gazette].add(slug + ".html", html, content_type="text/html")
            guid = f"tag:outlet{gazette}:{slug}"
            feeds[gazette].append({"title": copy.title, "link": link, "guid": guid})
            kind = "gazette-short" if copy in shorts else "gazette-long"
            records[guid] = (f"gazette:{copy.story}", kind, copy.story)
        feed_list = []
        for outlet, items in feeds.items():
            name = OUTLETS[outlet] if outlet < len(OUTLETS) else "The Appeal Gazette"
            url = servers[outlet].add("/feed.xml", rss(name, items))
            feed_list.append({"url": url, "name": f"{outlet}"})
        config = work / "feeds.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "settings": {
                        "allow_private_networks": ["127.0.0.0/8"],
                        "per_host_delay": "0s",
                        "per_host_concurrency": 16,
                        "concurrency": 32,
                        "max_entries_per_feed": 5000,
                        "workers": os.cpu_count() or 2,
                    },
                    "feeds": feed_list,
                }
            ),
            encoding="utf-8",
        )
        database = args.database or f"sqlite:///{work / 'eval.db'}"
        print(
            f"{len(docs)} base articles ({merged_in_truth} are copies of another base text in "
            f"the corpora), {len(records)} items on {len(feeds)} outlets; ingesting …",
            flush=True,
        )
        started = time.perf_counter()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "aggregator",
                "run",
                "--once",
                "-c",
                str(config),
                "-d",
                database,
            ],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            print(result.stdout[-3000:], result.stderr[-3000:])
            raise SystemExit("aggregator run --once failed")
        engine = create_engine(database)
        with engine.connect() as conn:
            got = conn.execute(text("SELECT guid, story_id, dedup_reason FROM items")).all()
            n_stories = conn.execute(text("SELECT count(*) FROM stories")).scalar_one()
        engine.dispose()
    finally:
        for server in servers:
            server.stop()

    labels_true: list[str] = []
    labels_pred: list[object] = []
    kinds: list[str] = []
    reasons: dict[str, int] = defaultdict(int)
    for guid, story_id, reason in got:
        if guid not in records:
            continue
        t, kind, _ = records[guid]
        labels_true.append(t)
        labels_pred.append(story_id)
        kinds.append(kind)
        reasons[reason] += 1
    missing = len(records) - len(labels_true)
    pw = pairwise(labels_true, labels_pred)
    b3 = bcubed(labels_true, labels_pred)
    # recall per kind: is the copy in the same story as its origin?
    origin_story: dict[str, object] = {}
    for t, p, k in zip(labels_true, labels_pred, kinds, strict=True):
        if k == "origin":
            origin_story.setdefault(t, p)
    per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for t, p, k in zip(labels_true, labels_pred, kinds, strict=True):
        if k in ("origin", "gazette-short", "gazette-long") or t not in origin_story:
            continue
        per_kind[k][1] += 1
        per_kind[k][0] += p == origin_story[t]
    # negatives: WikiRef articles of one event, gazette articles
    topic = {d.id: d.topic for d in docs}
    story_of: dict[tuple[str, str], object] = {}
    for (_t, p, k), (_, _, base_id) in zip(
        zip(labels_true, labels_pred, kinds, strict=True),
        (records[g[0]] for g in got if g[0] in records),
        strict=True,
    ):
        if k in ("origin", "gazette-short", "gazette-long"):
            story_of[(k, base_id)] = p
    same_event_pairs = same_event_merged = 0
    origins = [(b, p) for (k, b), p in story_of.items() if k == "origin" and topic.get(b)]
    for (a, pa), (b, pb) in itertools.combinations(origins, 2):
        if topic[a] == topic[b] and truth[a] != truth[b]:
            same_event_pairs += 1
            same_event_merged += pa == pb
    gazette = [p for (k, _), p in story_of.items() if k.startswith("gazette")]
    gazette_false = len(gazette) - len(set(gazette))
    report = {
        "command": "benchmarks/dedup/eval.py " + " ".join(sys.argv[1:]),
        "items": len(labels_true),
        "items_missing": missing,
        "truth_stories": len(set(labels_true)),
        "stories": n_stories,
        "base_copies_in_corpora": merged_in_truth,
        "pairwise": pw,
        "bcubed": b3,
        "recall_per_kind": {k: round(v[0] / v[1], 4) for k, v in sorted(per_kind.items())},
        "copies_per_kind": {k: v[1] for k, v in sorted(per_kind.items())},
        "same_event_pairs": same_event_pairs,
        "same_event_merged": same_event_merged,
        "gazette_articles": len(gazette),
        "gazette_false_merges": gazette_false,
        "reasons": dict(reasons),
        "ingest_seconds": round(elapsed, 1),
    }
    print(json.dumps(report, indent=1))
    args.output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
