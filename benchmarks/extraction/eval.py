"""Word-4-gram F1 of article extraction against gold text.

Usage (from the project root)::

    PYTHONPATH=src python benchmarks/extraction/eval.py [--corpora ../shared/corpora]
        [--set mozilla|cleaneval|zyte|all] [--config NAME] [--jobs 2]

Tuning sets: Mozilla readability test pages (gold = text of expected.html) and the CleanEval
subset (gold = GoldStandard text without the URL line and <p>/<h>/<l> markers). Every
configuration runs on them. Final check: the Zyte article-extraction benchmark
(gold = ground-truth.json articleBody) where only ``ours`` and ``default`` run (plus the
benchmark's published trafilatura 2.0.0 output as a sanity row): settings are never chosen
there.

Metric: for each page, precision/recall/F1 over the multisets of lowercased word 4-grams
(words = ``\\w+`` runs) of the extracted text vs the gold text; an empty extraction scores 0;
pages whose gold has fewer than 4 words are skipped. Macro average over pages.

Prints a table and writes ``benchmarks/extraction/results.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import logging
import multiprocessing
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import trafilatura
from lxml import html as lxml_html
from trafilatura.deduplication import LRUCache

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from aggregator.errors import ExtractError  # noqa: E402
from aggregator.extract import SETTINGS, extract_article  # noqa: E402

TUNING_SETS = ("mozilla", "cleaneval")
FINAL_SETS = ("zyte",)
FINAL_CONFIGS = ("default", "ours")
N = 4

Extractor = Callable[[bytes, str], str | None]


def _traf(**kwargs: Any) -> Extractor:
    def run(html: bytes, url: str) -> str | None:
        extra = dict(kwargs)
        if extra.pop("dedup", False):
            extra["deduplicate"] = LRUCache(maxsize=1024)  # per page, not the global cache
        result: str | None = trafilatura.extract(html, url=url, **extra)
        return result

    return run


def _ours(**changes: Any) -> Extractor:
    settings = dataclasses.replace(SETTINGS, **changes)

    def run(html: bytes, url: str) -> str | None:
        try:
            return extract_article(html, url, settings=settings).text
        except ExtractError:
            return None

    return run


CONFIGS: dict[str, Extractor] = {
    # plain trafilatura.extract(html, url=...) with the library defaults
    "default": _traf(),
    "precision": _traf(favor_precision=True),
    "recall": _traf(favor_recall=True),
    "no_tables": _traf(include_tables=False),
    "no_comments": _traf(include_comments=False),
    "no_comments+dedup": _traf(include_comments=False, dedup=True),
    "no_comments+precision": _traf(include_comments=False, favor_precision=True),
    "no_comments+recall": _traf(include_comments=False, favor_recall=True),
    "no_comments+no_tables": _traf(include_comments=False, include_tables=False),
    # our extract_article (its defaults = the chosen settings) and variants around it
    "ours": _ours(),
    "ours-no_boilerplate": _ours(drop_boilerplate=False),
    "ours-no_title_byline": _ours(drop_title_byline=False),
    "ours-no_truncate": _ours(truncate_related=False),
    "ours-no_postprocessing": _ours(
        drop_boilerplate=False, drop_title_byline=False, truncate_related=False
    ),
    "ours+precision": _ours(favor_precision=True, favor_recall=False),
    "ours-recall": _ours(favor_recall=False),
    "ours+dedup": _ours(deduplicate=True),
    "ours-tables": _ours(include_tables=not SETTINGS.include_tables),
    "ours-markup": _ours(include_formatting=False, include_links=False),
    "ours+images": _ours(include_images=True),
}


# --- corpora ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Page:
    dataset: str
    page_id: str
    path: str  # input file (gz or plain)
    url: str
    gold: str


_TEXT_WRAPPER_START = re.compile(rb"^\s*<text\b[^>]*>", re.I)
_TEXT_WRAPPER_END = re.compile(rb"</text>\s*$", re.I)
_CLEANEVAL_MARKER = re.compile(r"<[phl]>", re.I)


def _html_text(markup: str) -> str:
    root = lxml_html.fragment_fromstring(markup, create_parent="div")
    return " ".join(root.itertext())


def mozilla_pages(corpora: Path) -> Iterator[Page]:
    base = corpora / "extraction" / "mozilla-readability-test-pages"
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        expected = d / "expected.html.gz"
        source = d / "source.html.gz"
        if not (expected.exists() and source.exists()):
            continue
        gold = _html_text(gzip.decompress(expected.read_bytes()).decode("utf-8", "replace"))
        yield Page("mozilla", d.name, str(source), f"http://fakehost/test/{d.name}.html", gold)


def cleaneval_pages(corpora: Path) -> Iterator[Page]:
    base = corpora / "extraction" / "cleaneval-final-subset"
    for src in sorted((base / "input").glob("*.html.gz"), key=lambda p: int(p.name.split(".")[0])):
        n = src.name.split(".")[0]
        gold_file = base / "GoldStandard" / f"{n}.txt"
        if not gold_file.exists():
            continue
        lines = gold_file.read_text("utf-8", errors="replace").splitlines()
        url = "http://example.org/"
        if lines and lines[0].startswith("URL:"):
            url = lines[0][4:].strip() or url
            lines = lines[1:]
        gold = _CLEANEVAL_MARKER.sub(" ", "\n".join(lines))
        yield Page("cleaneval", n, str(src), url, gold)


def zyte_pages(corpora: Path) -> Iterator[Page]:
    base = corpora / "extraction" / "zyte-article-extraction-benchmark"
    truth = json.loads((base / "ground-truth.json").read_text("utf-8"))
    for page_id in sorted(truth):
        src = base / "html" / f"{page_id}.html.gz"
        if src.exists():
            item = truth[page_id]
            yield Page("zyte", page_id, str(src), item.get("url") or "", item["articleBody"])


LOADERS = {"mozilla": mozilla_pages, "cleaneval": cleaneval_pages, "zyte": zyte_pages}


def read_input(page: Page) -> bytes:
    data = Path(page.path).read_bytes()
    if page.path.endswith(".gz"):
        data = gzip.decompress(data)
    if page.dataset == "cleaneval":  # strip CleanEval's <text id=... encoding=...> wrapper
        data = _TEXT_WRAPPER_END.sub(b"", _TEXT_WRAPPER_START.sub(b"", data, count=1), count=1)
    return data


# --- metric -----------------------------------------------------------------------------------

_WORD = re.compile(r"\w+")


def ngrams(text: str, n: int = N) -> Counter[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def prf(pred: str | None, gold_grams: Counter[tuple[str, ...]]) -> tuple[float, float, float]:
    pred_grams = ngrams(pred or "")
    if not pred_grams:
        return 0.0, 0.0, 0.0
    overlap = sum((pred_grams & gold_grams).values())
    p = overlap / sum(pred_grams.values())
    r = overlap / sum(gold_grams.values())
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


# --- running ----------------------------------------------------------------------------------


def evaluate_page(job: tuple[Page, tuple[str, ...]]) -> dict[str, Any]:
    page, config_names = job
    html = read_input(page)
    gold_grams = ngrams(page.gold)
    out: dict[str, Any] = {"dataset": page.dataset, "id": page.page_id, "scores": {}}
    if not gold_grams:
        out["skipped"] = True
        return out
    for name in config_names:
        start = time.perf_counter()
        text = CONFIGS[name](html, page.url)
        elapsed = time.perf_counter() - start
        p, r, f = prf(text, gold_grams)
        out["scores"][name] = {"p": p, "r": r, "f1": f, "empty": not text, "seconds": elapsed}
    return out


def published_baseline(corpora: Path, pages: list[Page]) -> dict[str, Any] | None:
    """The Zyte benchmark's own published trafilatura 2.0.0 output, scored the same way."""
    path = (
        corpora / "extraction/zyte-article-extraction-benchmark/baseline-output/trafilatura.json.gz"
    )
    if not path.exists():
        return None
    output = json.loads(gzip.decompress(path.read_bytes()))["output"]
    scores = []
    for page in pages:
        gold_grams = ngrams(page.gold)
        if gold_grams:
            body = (output.get(page.page_id) or {}).get("articleBody")
            scores.append(prf(body, gold_grams))
    return _aggregate(
        [{"p": p, "r": r, "f1": f, "empty": False, "seconds": 0.0} for p, r, f in scores]
    )


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    return {
        "pages": n,
        "precision": round(sum(r["p"] for r in rows) / n, 4),
        "recall": round(sum(r["r"] for r in rows) / n, 4),
        "f1": round(sum(r["f1"] for r in rows) / n, 4),
        "empty": sum(1 for r in rows if r["empty"]),
        "seconds": round(sum(r["seconds"] for r in rows), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_corpora = (ROOT / ".." / "shared" / "corpora").resolve()
    parser.add_argument("--corpora", type=Path, default=default_corpora)
    parser.add_argument("--set", choices=[*LOADERS, "all"], default="all", dest="which")
    parser.add_argument("--config", choices=sorted(CONFIGS), action="append")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("results.json"))
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # trafilatura logs "discarding data" per failed page
    if not args.corpora.exists():
        parser.error(f"corpora folder not found: {args.corpora}")

    sets = list(LOADERS) if args.which == "all" else [args.which]
    jobs: list[tuple[Page, tuple[str, ...]]] = []
    pages_by_set: dict[str, list[Page]] = {}
    for name in sets:
        configs = tuple(CONFIGS) if name in TUNING_SETS else FINAL_CONFIGS
        if args.config:
            configs = tuple(c for c in configs if c in args.config)
        pages_by_set[name] = list(LOADERS[name](args.corpora))
        jobs.extend((page, configs) for page in pages_by_set[name])

    start = time.perf_counter()
    with multiprocessing.Pool(args.jobs) as pool:
        results = pool.map(evaluate_page, jobs, chunksize=2)
    wall = time.perf_counter() - start

    table: dict[str, dict[str, Any]] = {}
    for name in sets:
        rows = [r for r in results if r["dataset"] == name and not r.get("skipped")]
        configs = {c for r in rows for c in r["scores"]}
        table[name] = {
            c: _aggregate([r["scores"][c] for r in rows]) for c in CONFIGS if c in configs
        }
        table[name]["_skipped_pages"] = sum(
            1 for r in results if r["dataset"] == name and r.get("skipped")
        )
        if name == "zyte":
            baseline = published_baseline(args.corpora, pages_by_set[name])
            if baseline:
                table[name]["published-trafilatura-2.0.0"] = baseline

    _print_table(table)
    tuning = [s for s in TUNING_SETS if s in table]
    if tuning:
        macro = {
            c: round(sum(table[s][c]["f1"] for s in tuning) / len(tuning), 4)
            for c in CONFIGS
            if all(c in table[s] for s in tuning)
        }
        print("\nmean F1 over tuning sets:", ", ".join(f"{c} {v:.4f}" for c, v in macro.items()))
        table["_tuning_mean_f1"] = macro  # type: ignore[assignment]
    if "zyte" in table and {"ours", "default"} <= set(table["zyte"]):
        delta = table["zyte"]["ours"]["f1"] - table["zyte"]["default"]["f1"]
        print(f"zyte final check: ours - default = {delta:+.4f} F1 (target >= +0.01)")
    report = {
        "metric": "word-4-gram P/R/F1 (lowercased \\w+ words, multisets), macro over pages",
        "trafilatura": trafilatura.__version__,
        "settings": dataclasses.asdict(SETTINGS),
        "command": "PYTHONPATH=src python "
        + " ".join(["benchmarks/extraction/eval.py", *sys.argv[1:]]),
        "wall_seconds": round(wall, 1),
        "jobs": args.jobs,
        "results": table,
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    print(f"\nwrote {args.output} ({wall:.0f}s wall, {args.jobs} processes)")
    return 0


def _print_table(table: dict[str, dict[str, Any]]) -> None:
    for name, rows in table.items():
        print(f"\n{name} ({rows.get('_skipped_pages', 0)} pages skipped: gold < {N} words)")
        print(f"  {'config':<28} {'pages':>5} {'P':>7} {'R':>7} {'F1':>7} {'empty':>5} {'sec':>7}")
        for config, agg in rows.items():
            if config.startswith("_"):
                continue
            print(
                f"  {config:<28} {agg['pages']:>5} {agg['precision']:>7.4f} {agg['recall']:>7.4f}"
                f" {agg['f1']:>7.4f} {agg['empty']:>5} {agg['seconds']:>7.1f}"
            )


if __name__ == "__main__":
    raise SystemExit(main())
