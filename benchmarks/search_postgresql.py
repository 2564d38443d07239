"""PostgreSQL full-text indexing of items: the GIN expression index against a generated
``tsvector`` column and a deferred (queued, batched) index (issue 18, item 5).

    python benchmarks/search_postgresql.py --items 5000 --out benchmarks/search_postgresql-2026-12-06.json

Every variant gets a fresh database (``bench_search_<variant>_<pid>``, dropped at the
end) migrated by the product's own migrations (``Store.upgrade``), so ``items`` and its
indexes are the product's; then only the full-text part is changed:

- ``expression``: as migration 0002 makes it, the GIN index on
  ``to_tsvector('simple', left(title || ' ' || text, 100000))`` (no reloptions, so
  ``fastupdate`` is on, PostgreSQL's default, with the server's ``gin_pending_list_limit``);
- ``generated_fastupdate``: that index dropped; a ``tsvector GENERATED ALWAYS AS (<the
  same expression>) STORED`` column ``search_vector`` and a GIN index on it
  ``WITH (fastupdate = on)`` (``--pending-limit-kb`` sets the index's
  ``gin_pending_list_limit``; by default the server's);
- ``generated_nofastupdate``: the same ``WITH (fastupdate = off)``;
- ``deferred``: no full-text work at insert but a queue: a row trigger puts the new id in
  ``search_queue`` (as SQLite's migration 0014); every ``--index-every`` inserted items a
  batch step (``UPDATE items SET search_vector = <expression> FROM search_queue …``, then
  ``DELETE`` of the queue up to the same id, then, with ``--batch-clean``, the default,
  ``gin_clean_pending_list``) fills a plain ``tsvector`` column, indexed by GIN with the
  default ``fastupdate`` (on); the rest of the queue is indexed after the load. The batch
  steps run on the loading connection, in transactions of their own, and are counted in
  the totals;
- ``deferred_table``: the same queue, but the batch step inserts into a table of its own,
  ``item_search(item_id, vector)`` with its GIN index (``INSERT … SELECT … JOIN items``),
  so ``items`` rows are never rewritten: the analogue of SQLite's FTS5 external content;
  searched as SQLite is (``items.id IN (SELECT item_id FROM item_search WHERE …)``);
- ``product``: the product itself since migration 0017 (which made ``deferred_table`` the
  product's design): migrated to the head, nothing changed, the batch step is the save
  path's ``store.search.index_queued`` (then ``gin_clean_pending_list`` as above) and the
  searches are the product's own ``Queries``, untouched;
- ``none``: no full-text index at all (the floor; its searches are not run: each would
  compute the tsvector of every row).

Rows: ``--items`` items over 200 feeds, the same rows in the same order for every
variant, saved as the writer saves new items: ``--batch`` items per transaction in one
executemany of the product's ``insert(items)`` (SQLAlchemy, psycopg 3). Only ``items``
rows are written (no stories, dedup bands or shingle rows: those are the same in every
variant), so the share of the full-text work in a whole save is smaller than here. Texts
are real sentences, recombined (``benchmarks/farm``): those of the Zyte
article-extraction benchmark's ground truth and of WikiRef220's news texts, read from
``--corpora`` at each run; an item has a title of 6-12 words and 150-4,000 words of text
(log-normal, median 700), a feed excerpt of 1-5 KB of HTML, a summary and, for its dedup
shingles, 8 random bytes per shingle of ``dedup.SHINGLE_WORDS`` words.

Measured per variant, on the connection that loads (its backend's pid from
``pg_backend_pid()``): wall time of the insert transactions and of the batch steps, and
the backend's CPU time (utime + stime of ``/proc/<pid>/stat``; the server runs on this
machine); per-transaction latency percentiles; sizes (``pg_relation_size`` and
``pg_total_relation_size``) after the load and after the GIN pending list was flushed.
``ANALYZE items`` runs after the load (timed, with its backend's CPU). Then five searches
(chosen by document frequency, see ``pick_searches``) in two shapes: ``listing`` is the
product's own query (``Queries.iter_items`` with ``ExportFilter(search=…, limit=50)``,
newest first: ``@@ websearch_to_tsquery('simple', …)`` ordered by ``first_seen_at`` desc,
LIMIT 50, through a server-side cursor), with its vector pointed at the variant's column;
``ranked`` is the same condition ordered by ``ts_rank`` (the product does not rank; this
shows what ranking would cost). Latency: the median of ``--runs`` runs after a warm-up
run; a warm-up of ``--slow-ms`` or more is the measurement itself (``runs``: 1), and a
search cancelled by the statement timeout (``--timeout-s``) has ``ms`` null and
``timeout`` true. The plans (``EXPLAIN``; the listing's as its cursor gets it) and the
number of matching items are reported too. Where the index's pending list is not empty
after the load, plans and latencies are taken twice: with that pending list (its pages
and tuples from ``pgstatginindex``), and after ``gin_clean_pending_list`` (its time and
CPU are reported and counted in ``total_with_flush_s``). Autovacuum is off on every
table, so all index work is done by the loading backend and nothing runs behind it. A
``CHECKPOINT`` precedes each load. Ratios are against ``expression`` of the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import importlib.util
import itertools
import json
import math
import os
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any

import psycopg
from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    column,
    func,
    insert,
    literal_column,
    text,
)
from sqlalchemy.exc import SQLAlchemyError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.farm.generate import _title, _words  # noqa: E402
from benchmarks.farm.text import _SENTENCE_END, _WS, Corpus, load_corpus  # noqa: E402

from aggregator.dedup import SHINGLE_WORDS  # noqa: E402
from aggregator.errors import StoreError  # noqa: E402
from aggregator.store import open_store  # noqa: E402
from aggregator.store import search as product_search  # noqa: E402
from aggregator.store.queries import ExportFilter, Queries  # noqa: E402
from aggregator.store.store import Store  # noqa: E402
from aggregator.store.tables import items  # noqa: E402

VARIANTS = (
    "expression",
    "generated_fastupdate",
    "generated_nofastupdate",
    "deferred",
    "deferred_table",
    "product",
    "none",
)
TABLE_VARIANTS = ("deferred_table", "product")  # vectors in item_search
FEEDS = 200
LIMIT = 50
WIKIREF = Path("neardup/wikiref220/texts")
BASE_TIME = datetime(2026, 11, 1, tzinfo=UTC)
TICKS = os.sysconf("SC_CLK_TCK")


def migration_vector() -> str:
    """The expression migration 0002 indexes (unqualified column names)."""
    path = ROOT / "migrations" / "versions" / "0002_views_fts.py"
    spec = importlib.util.spec_from_file_location("migration_0002", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    vector = str(module.PG_SEARCH_VECTOR)
    # the product's vector of migration 0017 (store.search) must be the same expression
    assert product_search.PG_VECTOR.replace("i.", "") == vector
    return vector


VECTOR = migration_vector()  # to_tsvector('simple'::regconfig, left(coalesce(title, '') || …))
QVECTOR = VECTOR.replace("(title", "(items.title").replace("(text", "(items.text")
# The variants are built on the schema before migration 0017 (which made the product's
# search the deferred_table variant): the expression index of 0002.
BASE_REVISION = "0016"


# ---- texts -----------------------------------------------------------------------------


def sentence_pool(corpora: Path) -> tuple[tuple[str, ...], dict[str, int]]:
    """Sentences of the Zyte ground truth (as the farm reads them) and of WikiRef220's
    texts (the same split and filter), and how many came from each."""
    zyte = load_corpus(corpora).sentences
    wiki: list[str] = []
    folder = corpora / WIKIREF
    for path in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
        for paragraph in path.read_text(encoding="utf-8", errors="replace").split("\n"):
            paragraph = _WS.sub(" ", paragraph).strip()
            for sentence in _SENTENCE_END.split(paragraph) if paragraph else []:
                sentence = sentence.strip()
                if 5 <= len(sentence.split()) <= 60 and sentence[-1:] in '.!?"”’)…':
                    wiki.append(sentence)
    pool = tuple(dict.fromkeys((*zyte, *wiki)))  # distinct, in a stable order
    return pool, {"zyte": len(zyte), "wikiref220": len(wiki), "distinct": len(pool)}


def make_rows(pool: tuple[str, ...], n: int, seed: int) -> list[dict[str, Any]]:
    corpus = Corpus(articles=(), sentences=pool)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        rng = Random(f"{seed}:item:{i}")
        words = int(min(4000, max(150, rng.lognormvariate(math.log(700), 0.6))))
        paragraphs = _words(corpus, rng, words)
        title = _title(rng, paragraphs)
        plain = [" ".join(p) for p in paragraphs]
        body = "\n\n".join(plain)
        excerpt, size = [], rng.randint(1000, 5000)
        for para in plain:
            excerpt.append(f"<p>{html.escape(para, quote=False)}</p>")
            if sum(map(len, excerpt)) >= size:
                break
        summary = plain[0] if len(plain[0]) <= 280 else plain[0][:277].rsplit(" ", 1)[0] + "…"
        feed = 1 + i % FEEDS
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60]
        url = f"https://site{feed}.example/2026/{slug}-{i}"
        seen = BASE_TIME + timedelta(seconds=3 * i)
        rows.append(
            {
                "feed_id": feed,
                "entry_key": f"guid:site{feed}-{i}",
                "guid": f"site{feed}-{i}",
                "url": url,
                "canonical_url": url,
                "page_canonical_url": url,
                "title": title,
                "author": None,
                "published_at": seen - timedelta(minutes=rng.randint(1, 600)),
                "summary": summary,
                "content": "\n".join(excerpt),
                "text": body,
                "text_source": "article",
                "language": "en",
                "image_url": f"https://site{feed}.example/img/{i}.jpg",
                "content_hash": hashlib.sha256(body.encode()).hexdigest(),
                # the shingle hashes: 8 random bytes per k-word shingle (as incompressible)
                "shingles": rng.randbytes(8 * max(0, len(body.split()) - SHINGLE_WORDS + 1)),
                "story_id": None,
                "dedup_reason": "new",
                "dedup_score": 0.0,
                "dedup_item_id": None,
                "dedup_url_refusal": None,
                "first_seen_at": seen,
                "updated_at": seen,
            }
        )
    return rows


def pick_searches(
    rows: list[dict[str, Any]], pool: tuple[str, ...], seed: int, sample: int = 5000
) -> tuple[dict[str, str], dict[str, float]]:
    """Five searches chosen by document frequency in the first ``sample`` items (words as
    the 'simple' configuration sees plain ASCII words): a rare word (~0.3 %), a medium
    one (~5 %), a common one (~40 %), two words of ~20 % each, and a quoted two-word
    phrase of a corpus sentence whose words are both in 10-60 % of the items."""
    df: Counter[str] = Counter()
    docs = rows[:sample]
    for row in docs:
        df.update(set(re.findall(r"[a-z]+", f"{row['title']} {row['text']}".lower())))
    share = {w: c / len(docs) for w, c in df.items()}

    def closest(target: float, exclude: tuple[str, ...] = (), min_len: int = 5) -> str:
        words = [w for w in share if len(w) >= min_len and w not in exclude]
        return min(words, key=lambda w: (abs(math.log(share[w] / target)), w))

    rare, medium, common = closest(0.003), closest(0.05), closest(0.4, min_len=4)
    first = closest(0.2, min_len=4)
    second = closest(0.2, exclude=(first,), min_len=4)
    phrase = ""
    rng = Random(f"{seed}:phrase")
    order = list(range(len(pool)))
    rng.shuffle(order)
    for index in order:
        tokens = re.findall(r"[A-Za-z]+|\S", pool[index])
        for a, b in itertools.pairwise(tokens):
            la, lb = a.lower(), b.lower()
            if (
                len(la) >= 4
                and len(lb) >= 4
                and a.isalpha()
                and b.isalpha()
                and 0.1 <= share.get(la, 0) <= 0.6
                and 0.1 <= share.get(lb, 0) <= 0.6
            ):
                phrase = f'"{la} {lb}"'
                break
        if phrase:
            break
    searches = {
        "rare": rare,
        "medium": medium,
        "common": common,
        "two_words": f"{first} {second}",
        "phrase": phrase,
    }
    shares = {
        "rare": share[rare],
        "medium": share[medium],
        "common": share[common],
        "two_words": min(share[first], share[second]),
        "phrase": min(share[w] for w in phrase.strip('"').split()),
    }
    return searches, {k: round(v, 4) for k, v in shares.items()}


# ---- the variants' schema --------------------------------------------------------------

QUEUE_DDL = (
    "CREATE TABLE search_queue (item_id bigint PRIMARY KEY)",
    """
    CREATE FUNCTION items_search_queue() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO search_queue(item_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER items_search_ai AFTER INSERT ON items"
    " FOR EACH ROW EXECUTE FUNCTION items_search_queue()",
    "CREATE TRIGGER items_search_au AFTER UPDATE OF title, text ON items"
    " FOR EACH ROW EXECUTE FUNCTION items_search_queue()",
    "ALTER TABLE search_queue SET (autovacuum_enabled = false)",
)


def fts_index(variant: str) -> str | None:
    return {
        "expression": "ix_items_search",
        "generated_fastupdate": "ix_items_search_vector",
        "generated_nofastupdate": "ix_items_search_vector",
        "deferred": "ix_items_search_vector",
        "deferred_table": "ix_item_search",
        "product": "ix_item_search",
    }.get(variant)


def setup(variant: str, conn: psycopg.Connection[Any], pending_limit_kb: int | None) -> None:
    limit = f", gin_pending_list_limit = {pending_limit_kb}" if pending_limit_kb else ""
    statements = ["ALTER TABLE items SET (autovacuum_enabled = false)"]
    if variant == "product":
        statements.append("ALTER TABLE item_search SET (autovacuum_enabled = false)")
        if pending_limit_kb:
            statements.append(
                f"ALTER INDEX ix_item_search SET (gin_pending_list_limit = {pending_limit_kb})"
            )
    elif variant == "expression":
        if pending_limit_kb:
            statements.append(
                f"ALTER INDEX ix_items_search SET (gin_pending_list_limit = {pending_limit_kb})"
            )
    else:
        statements.append("DROP INDEX ix_items_search")
    if variant.startswith("generated"):
        fastupdate = "on" if variant == "generated_fastupdate" else "off"
        statements += [
            f"ALTER TABLE items ADD COLUMN search_vector tsvector"
            f" GENERATED ALWAYS AS ({VECTOR}) STORED",
            f"CREATE INDEX ix_items_search_vector ON items USING GIN (search_vector)"
            f" WITH (fastupdate = {fastupdate}{limit if fastupdate == 'on' else ''})",
        ]
    elif variant == "deferred":
        statements += [
            "ALTER TABLE items ADD COLUMN search_vector tsvector",
            f"CREATE INDEX ix_items_search_vector ON items USING GIN (search_vector)"
            f"{' WITH (' + limit[2:] + ')' if limit else ''}",
            *QUEUE_DDL,
        ]
    elif variant == "deferred_table":
        statements += [
            "CREATE TABLE item_search (item_id bigint PRIMARY KEY"
            " REFERENCES items(id) ON DELETE CASCADE, vector tsvector NOT NULL)",
            f"CREATE INDEX ix_item_search ON item_search USING GIN (vector)"
            f"{' WITH (' + limit[2:] + ')' if limit else ''}",
            "ALTER TABLE item_search SET (autovacuum_enabled = false)",
            *QUEUE_DDL,
        ]
    for statement in statements:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO feeds (url, name, title, created_at)"
        " SELECT 'https://site' || g || '.example/feed', 'site' || g, 'Site ' || g, now()"
        f" FROM generate_series(1, {FEEDS}) AS g"
    )
    conn.commit()


def index_batch(conn: Connection, variant: str, limit: int, clean: bool) -> int:
    """One batch step of the deferred variants: index up to ``limit`` queued items (the
    oldest first), empty the queue up to them and (``clean``) flush the GIN pending list;
    how many were queued up to there."""
    if variant == "product":  # the save path's own batch
        done = product_search.index_queued(conn, limit)
        if clean:
            conn.execute(text(f"SELECT gin_clean_pending_list('{fts_index(variant)}')"))
        return done
    last = conn.execute(
        text(
            "SELECT max(item_id) FROM (SELECT item_id FROM search_queue"
            " ORDER BY item_id LIMIT :n) AS q"
        ),
        {"n": limit},
    ).scalar()
    if last is None:
        return 0
    if variant == "deferred":
        conn.execute(
            text(
                f"UPDATE items SET search_vector = {QVECTOR} FROM search_queue AS q"
                " WHERE q.item_id = items.id AND q.item_id <= :last"
            ),
            {"last": last},
        )
    else:
        conn.execute(
            text(
                f"INSERT INTO item_search (item_id, vector) SELECT items.id, {QVECTOR}"
                " FROM search_queue AS q JOIN items ON items.id = q.item_id"
                " WHERE q.item_id <= :last"
                " ON CONFLICT (item_id) DO UPDATE SET vector = EXCLUDED.vector"
            ),
            {"last": last},
        )
    done = conn.execute(text("DELETE FROM search_queue WHERE item_id <= :last"), {"last": last})
    if clean:
        conn.execute(text(f"SELECT gin_clean_pending_list('{fts_index(variant)}')"))
    return int(done.rowcount or 0)


# ---- measuring -------------------------------------------------------------------------


def backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a server process on this machine."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


class VariantQueries(Queries):
    """The product's queries, with the search condition on the variant's structure."""

    def __init__(self, store: Store, variant: str) -> None:
        super().__init__(store)
        self.variant = variant

    def _search(self, search: str) -> ColumnElement[bool]:
        if self.variant == "product":
            return super()._search(search)  # the product's own condition, untouched
        if self.variant == "expression":  # the product's condition before migration 0017
            old: ColumnElement[Any] = literal_column(QVECTOR)
            return old.op("@@")(func.websearch_to_tsquery(literal_column("'simple'"), search))
        if self.variant == "deferred_table":
            matches = (
                text(
                    "SELECT item_id FROM item_search"
                    " WHERE vector @@ websearch_to_tsquery('simple', :q)"
                )
                .bindparams(q=search)
                .columns(column("item_id", Integer))
                .scalar_subquery()
            )
            return items.c.id.in_(matches)
        vector: ColumnElement[Any] = literal_column("items.search_vector")
        return vector.op("@@")(func.websearch_to_tsquery(literal_column("'simple'"), search))


def condition_sql(variant: str) -> tuple[str, str, str]:
    """(FROM, WHERE, rank vector) of the raw ranked search and the match count."""
    if variant in TABLE_VARIANTS:
        return (
            "item_search JOIN items ON items.id = item_search.item_id",
            "item_search.vector @@ q",
            "item_search.vector",
        )
    vector = QVECTOR if variant == "expression" else "items.search_vector"
    return "items", f"{vector} @@ q", vector


def plan_summary(node: dict[str, Any]) -> str:
    name = node["Node Type"]
    if "Index Name" in node:
        name += f" {node['Index Name']}"
    elif "Relation Name" in node:
        name += f" {node['Relation Name']}"
    children = [plan_summary(c) for c in node.get("Plans", [])]
    return f"{name}({', '.join(children)})" if children else name


def timed(run: Callable[[], list[int]], runs: int, slow_ms: float) -> dict[str, Any]:
    """One warm-up run, then the median of ``runs`` timed runs; a warm-up of ``slow_ms``
    or more is the measurement itself (``runs``: 1), one cancelled by the statement
    timeout is reported as such."""
    try:
        start = time.perf_counter()
        result = run()
        first = (time.perf_counter() - start) * 1000
    except (StoreError, SQLAlchemyError):
        return {"ms": None, "timeout": True}
    if first >= slow_ms:
        return {"ms": round(first, 1), "runs": 1, "rows": len(result)}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = run()
        times.append((time.perf_counter() - start) * 1000)
    return {
        "ms": round(statistics.median(times), 2),
        "min_ms": round(min(times), 2),
        "runs": runs,
        "rows": len(result),
    }


def measure_searches(
    store: Store, variant: str, searches: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    q = VariantQueries(store, variant)
    from_sql, where_sql, rank_vector = condition_sql(variant)
    ranked = text(
        f"SELECT items.id, ts_rank({rank_vector}, q) AS rank"
        f" FROM {from_sql}, websearch_to_tsquery('simple', :s) AS q WHERE {where_sql}"
        f" ORDER BY rank DESC, items.id DESC LIMIT {LIMIT}"
    )
    out: dict[str, Any] = {}
    for label, search in searches.items():
        f = ExportFilter(search=search, limit=LIMIT)

        def listing(f: ExportFilter = f) -> list[int]:
            return [r.id for r in q.iter_items(f, newest_first=True)]

        def rank(search: str = search) -> list[int]:
            with store.engine.connect() as conn:
                return [r.id for r in conn.execute(ranked, {"s": search})]

        out[label] = {
            "listing": timed(listing, args.runs, args.slow_ms),
            "ranked": timed(rank, args.runs, args.slow_ms),
        }
    return out


def search_plans(
    store: Store, variant: str, searches: dict[str, str], *, count: bool
) -> dict[str, Any]:
    """The plans of the listing (as its server-side cursor gets it) and of the ranked
    search, and (``count``) the number of matching items."""
    q = VariantQueries(store, variant)
    from_sql, where_sql, rank_vector = condition_sql(variant)
    plans: dict[str, Any] = {}
    for label, search in searches.items():
        with store.engine.connect() as conn:
            stmt = q._items_query(
                ExportFilter(search=search, limit=LIMIT), newest_first=True, after=None
            )
            sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            sql = sql.replace("%", "%%")
            listing = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) DECLARE c CURSOR FOR {sql}")
            ranked = conn.execute(
                text(
                    f"EXPLAIN (FORMAT JSON) SELECT items.id, ts_rank({rank_vector}, q) AS rank"
                    f" FROM {from_sql}, websearch_to_tsquery('simple', :s) AS q"
                    f" WHERE {where_sql} ORDER BY rank DESC, items.id DESC LIMIT {LIMIT}"
                ),
                {"s": search},
            )
            plans[label] = {
                "listing_plan": plan_summary(listing.scalar_one()[0]["Plan"]),
                "ranked_plan": plan_summary(ranked.scalar_one()[0]["Plan"]),
            }
            conn.rollback()
            if not count:
                continue
            try:
                matches = conn.execute(
                    text(
                        f"SELECT count(*) FROM {from_sql}, websearch_to_tsquery('simple', :s)"
                        f" AS q WHERE {where_sql}"
                    ),
                    {"s": search},
                ).scalar_one()
                plans[label]["matches"] = int(matches)
            except SQLAlchemyError:
                plans[label]["matches"] = None  # cancelled by the statement timeout
            conn.rollback()
    return plans


def sizes(conn: psycopg.Connection[Any], variant: str) -> dict[str, int]:
    def one(sql: str) -> int:
        row = conn.execute(sql).fetchone()
        return int(row[0] or 0) if row else 0

    out = {
        "items_heap": one("SELECT pg_relation_size('items')"),
        "items_toast": one(
            "SELECT coalesce(pg_total_relation_size(reltoastrelid), 0) FROM pg_class"
            " WHERE oid = 'items'::regclass"
        ),
        "items_indexes": one("SELECT pg_indexes_size('items')"),
        "items_total": one("SELECT pg_total_relation_size('items')"),
    }
    index = fts_index(variant)
    out["fts_index"] = one(f"SELECT pg_relation_size('{index}')") if index else 0
    out["other_indexes"] = out["items_indexes"] - (
        out["fts_index"] if variant not in TABLE_VARIANTS else 0
    )
    if variant.startswith("generated") or variant == "deferred":
        out["search_vector_column"] = one("SELECT sum(pg_column_size(search_vector)) FROM items")
    for table in ("search_queue", "item_search"):
        if one(f"SELECT count(*) FROM pg_class WHERE relname = '{table}'"):
            out[table] = one(f"SELECT pg_total_relation_size('{table}')")
    out["store_total"] = out["items_total"] + out.get("search_queue", 0) + out.get("item_search", 0)
    out["dead_rows"] = one("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'items'")
    return out


def pending(conn: psycopg.Connection[Any], index: str) -> dict[str, Any]:
    row = conn.execute(
        f"SELECT version, pending_pages, pending_tuples FROM pgstatginindex('{index}')"
    ).fetchone()
    assert row is not None
    options = conn.execute(f"SELECT reloptions FROM pg_class WHERE relname = '{index}'").fetchone()
    return {
        "pending_pages": int(row[1]),
        "pending_tuples": int(row[2]),
        "reloptions": options[0] if options else None,
    }


@contextmanager
def fresh_database(admin: psycopg.Connection[Any], name: str) -> Iterator[str]:
    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run_variant(
    variant: str,
    rows: list[dict[str, Any]],
    searches: dict[str, str],
    args: argparse.Namespace,
    admin: psycopg.Connection[Any],
) -> dict[str, Any]:
    name = f"bench_search_{variant}_{os.getpid()}"
    with fresh_database(admin, name):
        url = f"postgresql+psycopg://{args.user}@{args.host}:{args.port}/{name}"
        conninfo = f"host={args.host} port={args.port} user={args.user} dbname={name}"
        store = open_store(url, pool_size=2)
        try:
            store.upgrade("head" if variant == "product" else BASE_REVISION)
            with psycopg.connect(conninfo) as ddl:
                ddl.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
                setup(variant, ddl, args.pending_limit_kb)
                ddl.execute("CHECKPOINT")
            deferred = variant.startswith("deferred") or variant == "product"
            tx_ms: list[float] = []
            step_ms: list[float] = []
            insert_s = index_s = insert_cpu = index_cpu = 0.0
            with store.engine.connect() as conn:
                pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
                conn.commit()
                queued = 0
                for start in range(0, len(rows), args.batch):
                    chunk = rows[start : start + args.batch]
                    cpu0, t0 = backend_cpu(pid), time.perf_counter()
                    with conn.begin():
                        conn.execute(insert(items), chunk)
                    elapsed = time.perf_counter() - t0
                    insert_s += elapsed
                    insert_cpu += backend_cpu(pid) - cpu0
                    tx_ms.append(elapsed * 1000)
                    queued += len(chunk)
                    last_chunk = start + args.batch >= len(rows)
                    if deferred and (queued >= args.index_every or last_chunk):
                        cpu0, t0 = backend_cpu(pid), time.perf_counter()
                        while True:  # the last step drains what is left (the save path's stop)
                            with conn.begin():
                                done = index_batch(
                                    conn, variant, args.index_every, args.batch_clean
                                )
                            if not last_chunk or done == 0:
                                break
                        elapsed = time.perf_counter() - t0
                        index_s += elapsed
                        index_cpu += backend_cpu(pid) - cpu0
                        step_ms.append(elapsed * 1000)
                        queued = 0
            result: dict[str, Any] = {
                "variant": variant,
                "items": len(rows),
                "transactions": len(tx_ms),
                "insert_s": round(insert_s, 3),
                "insert_ms_per_item": round(insert_s * 1000 / len(rows), 4),
                "insert_cpu_s": round(insert_cpu, 2),
                "index_steps": len(step_ms),
                "index_s": round(index_s, 3),
                "index_cpu_s": round(index_cpu, 2),
                "total_s": round(insert_s + index_s, 3),
                "ms_per_item": round((insert_s + index_s) * 1000 / len(rows), 4),
                "server_cpu_s": round(insert_cpu + index_cpu, 2),
                "server_cpu_ms_per_item": round((insert_cpu + index_cpu) * 1000 / len(rows), 4),
                "tx_ms": {
                    "p50": round(percentile(tx_ms, 50), 2),
                    "p95": round(percentile(tx_ms, 95), 2),
                    "p99": round(percentile(tx_ms, 99), 2),
                    "max": round(max(tx_ms), 2),
                },
            }
            if step_ms:
                result["index_step_ms"] = {
                    "p50": round(percentile(step_ms, 50), 2),
                    "max": round(max(step_ms), 2),
                }
            index = fts_index(variant)
            with psycopg.connect(conninfo, autocommit=True) as conn2:
                result["sizes_after_load"] = sizes(conn2, variant)
                analyze_pid = int(conn2.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
                cpu0, t0 = backend_cpu(analyze_pid), time.perf_counter()
                conn2.execute("ANALYZE items")
                if variant in TABLE_VARIANTS:
                    conn2.execute("ANALYZE item_search")
                result["analyze_s"] = round(time.perf_counter() - t0, 3)
                result["analyze_cpu_s"] = round(backend_cpu(analyze_pid) - cpu0, 2)
                if index is not None:
                    result["pending_after_load"] = pending(conn2, index)
                # the searches' connections (new ones) get a statement timeout
                conn2.execute(f"ALTER DATABASE {name} SET statement_timeout = '{args.timeout_s}s'")
            store.engine.dispose()
            flush_s = flush_cpu = 0.0
            if variant != "none" and index is not None:
                if result["pending_after_load"]["pending_pages"] > 0:
                    result["plans_pending"] = search_plans(store, variant, searches, count=False)
                    result["latency_pending"] = measure_searches(store, variant, searches, args)
                with psycopg.connect(conninfo, autocommit=True) as conn2:
                    conn2.execute("SET statement_timeout = 0")
                    flush_pid = int(conn2.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
                    cpu0, t0 = backend_cpu(flush_pid), time.perf_counter()
                    row = conn2.execute(f"SELECT gin_clean_pending_list('{index}')").fetchone()
                    flush_s = time.perf_counter() - t0
                    flush_cpu = backend_cpu(flush_pid) - cpu0
                    result["flush"] = {
                        "pages_removed": int(row[0]) if row else 0,
                        "s": round(flush_s, 3),
                        "cpu_s": round(flush_cpu, 2),
                    }
                    result["pending_after_flush"] = pending(conn2, index)
                result["plans"] = search_plans(store, variant, searches, count=True)
                result["latency"] = measure_searches(store, variant, searches, args)
            result["total_with_flush_s"] = round(insert_s + index_s + flush_s, 3)
            result["server_cpu_with_flush_s"] = round(insert_cpu + index_cpu + flush_cpu, 2)
            with psycopg.connect(conninfo, autocommit=True) as conn2:
                conn2.execute("SET statement_timeout = 0")
                result["sizes"] = sizes(conn2, variant)
            return result
        finally:
            store.close()


def ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    base = next((r for r in results if r["variant"] == "expression"), None)
    if base is None:
        return {}

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    out: dict[str, Any] = {}
    for r in results:
        entry: dict[str, Any] = {
            "insert_ms_per_item": ratio(r["insert_ms_per_item"], base["insert_ms_per_item"]),
            "ms_per_item": ratio(r["ms_per_item"], base["ms_per_item"]),
            "total_with_flush": ratio(r["total_with_flush_s"], base["total_with_flush_s"]),
            "server_cpu": ratio(r["server_cpu_s"], base["server_cpu_s"]),
            "server_cpu_with_flush": ratio(
                r["server_cpu_with_flush_s"], base["server_cpu_with_flush_s"]
            ),
            "tx_p95": ratio(r["tx_ms"]["p95"], base["tx_ms"]["p95"]),
            "store_total": ratio(r["sizes"]["store_total"], base["sizes"]["store_total"]),
        }
        if "latency" in r and "latency" in base:
            for label, lat in r["latency"].items():
                for shape in ("listing", "ranked"):
                    entry[f"{label}_{shape}_ms"] = ratio(
                        lat[shape]["ms"], base["latency"][label][shape]["ms"]
                    )
        out[r["variant"]] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=30, help="items per insert transaction")
    parser.add_argument(
        "--index-every", type=int, default=300, help="deferred: items between batch steps"
    )
    parser.add_argument(
        "--batch-clean",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="deferred: each batch step ends with gin_clean_pending_list",
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs per search")
    parser.add_argument(
        "--slow-ms",
        type=float,
        default=500.0,
        help="a search whose warm-up run takes this long is not run again",
    )
    parser.add_argument(
        "--timeout-s", type=int, default=3, help="statement timeout of the searches"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--pending-limit-kb",
        type=int,
        default=None,
        help="gin_pending_list_limit of the fastupdate indexes (default: the server's)",
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--admin-db", default="postgres")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")

    started = time.perf_counter()
    pool, pool_counts = sentence_pool(args.corpora)
    rows = make_rows(pool, args.items, args.seed)
    searches, shares = pick_searches(rows, pool, args.seed)
    words = [len(r["text"].split()) for r in rows]
    generated_s = time.perf_counter() - started

    admin = psycopg.connect(
        f"host={args.host} port={args.port} user={args.user} dbname={args.admin_db}",
        autocommit=True,
    )
    server: dict[str, Any] = {}
    for setting in (
        "server_version",
        "shared_buffers",
        "gin_pending_list_limit",
        "work_mem",
        "maintenance_work_mem",
        "synchronous_commit",
        "autovacuum",
        "max_wal_size",
    ):
        server[setting] = admin.execute(f"SHOW {setting}").fetchone()[0]  # type: ignore[index]
    results = []
    for variant in variants:
        t0 = time.perf_counter()
        result = run_variant(variant, rows, searches, args, admin)
        result["variant_wall_s"] = round(time.perf_counter() - t0, 1)
        results.append(result)
        print(
            f"{variant}: {result['ms_per_item']} ms/item, cpu {result['server_cpu_s']} s,"
            f" {result['variant_wall_s']} s",
            file=sys.stderr,
        )
    admin.close()

    report = {
        "benchmark": "search_postgresql",
        "command": "python benchmarks/search_postgresql.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "server": server,
        "cpus": os.cpu_count(),
        "items": args.items,
        "batch": args.batch,
        "index_every": args.index_every,
        "batch_clean": args.batch_clean,
        "runs": args.runs,
        "slow_ms": args.slow_ms,
        "timeout_s": args.timeout_s,
        "pending_limit_kb": args.pending_limit_kb,
        "vector": VECTOR,
        "corpus_sentences": pool_counts,
        "text_words": {
            "median": int(statistics.median(words)),
            "mean": round(statistics.fmean(words), 1),
            "min": min(words),
            "max": max(words),
            "text_chars_mean": round(statistics.fmean(len(r["text"]) for r in rows), 1),
        },
        "searches": searches,
        "search_word_shares_in_sample": shares,
        "generate_s": round(generated_s, 1),
        "results": results,
        "ratios_vs_expression": ratios(results),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out = json.dumps(report, indent=2, ensure_ascii=False)
    print(out)
    if args.out:
        args.out.write_text(out + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
