"""Pair-level measurements behind the dedup parameters (no HTTP, no database).

Usage (from the project root)::

    /work/venv/bin/python benchmarks/dedup/pairs.py [--corpora ../shared/corpora]

For every base article of the corpora it builds each kind of copy (``corpus.py``) and
measures, per kind:

1. the verified score (containment of the smaller text in the larger) for shingle sizes
   k = 3…6, and the same for negatives: WikiRef articles about the same event (all pairs
   within a topic) and short articles of one site sharing a long appeal block;
2. candidate recall of the index schemes the issue allows — MinHash LSH with several
   band/row shapes and SimHash (64 bits) with block indexing — and how many false
   candidates each lets through per lookup, and the rows each stores per item.

Prints tables; writes ``benchmarks/dedup/pairs.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import Doc, boilerplate_site, load_all, make_copies  # noqa: E402

from aggregator import dedup  # noqa: E402
from aggregator.dedup import COMMON_DF  # noqa: E402

OUTLETS = [f"Outlet {c}" for c in "ABCDEFG"]


def shingles_k(text: str, k: int) -> list[int]:
    return dedup.shingle_hashes(text, k)


def simhash(shingles: set[int]) -> int:
    weights = [0] * 64
    for h in shingles:
        x = int.from_bytes(hashlib.blake2b(h.to_bytes(8, "big"), digest_size=8).digest(), "big")
        for bit in range(64):
            weights[bit] += 1 if x >> bit & 1 else -1
    return sum(1 << bit for bit in range(64) if weights[bit] > 0)


_M61 = (1 << 61) - 1
_rng = random.Random(1)
_PERMS = [(_rng.randrange(1, _M61), _rng.randrange(0, _M61)) for _ in range(40)]


def classic_minhash(shingles: set[int]) -> list[int]:
    """K independent permutations (a·x + b mod 2^61−1): the textbook MinHash."""
    return [min((a * x + b) % _M61 for x in shingles) for a, b in _PERMS]


def lsh_keys(signature: list[int], bands: int, rows: int) -> set[tuple[int, ...]]:
    return {(b, *signature[b * rows : (b + 1) * rows]) for b in range(bands)}


def quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return {
        "n": len(values),
        "min": round(values[0], 3),
        "p01": round(pick(0.01), 3),
        "p05": round(pick(0.05), 3),
        "median": round(pick(0.5), 3),
        "p95": round(pick(0.95), 3),
        "p99": round(pick(0.99), 3),
        "max": round(values[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    args = parser.parse_args()
    rng = random.Random(7)
    docs = load_all(args.corpora)
    wiki = [d for d in docs if d.topic]
    base = [d for d in docs if not d.topic]
    print(f"{len(docs)} base articles ({len(wiki)} WikiRef)")

    positives: dict[str, list[tuple[str, str, str, str]]] = defaultdict(list)
    for doc in docs:
        for _, copy in make_copies(doc, OUTLETS, rng)[1:]:
            if copy.kind != "tracking":
                text = "\n\n".join(copy.paragraphs)
                positives[copy.kind].append((doc.text, text, doc.title, copy.title))
    negatives: dict[str, list[tuple[str, str, str, str]]] = defaultdict(list)
    by_topic: dict[str, list[Doc]] = defaultdict(list)
    for doc in wiki:
        by_topic[doc.topic or ""].append(doc)
    for group in by_topic.values():
        for a, b in itertools.combinations(group, 2):
            negatives["same-event"].append((a.text, b.text, a.title, b.title))
    for a, b in rng.sample(list(itertools.combinations(base, 2)), 3000):
        negatives["unrelated"].append((a.text, b.text, a.title, b.title))
    site = boilerplate_site(wiki[::2], base[0], 40, rng)
    for a, b in itertools.combinations(site, 2):
        negatives["boilerplate"].append(
            ("\n\n".join(a.paragraphs), "\n\n".join(b.paragraphs), a.title, b.title)
        )

    report: dict[str, object] = {}
    # 1. verified score by shingle size
    print("\ncontainment of the smaller text in the larger (no discount), by shingle size k")
    scores: dict[str, dict[str, object]] = {}
    for k in (3, 4, 5, 6):
        row: dict[str, object] = {}
        for label, pairs in [*positives.items(), *negatives.items()]:
            values = []
            for a, b, _, _ in pairs:
                sa, sb = shingles_k(a, k), shingles_k(b, k)
                values.append(dedup.compare(sa, sb).score if sa and sb else 0.0)
            row[label] = quantiles(values)
        scores[f"k={k}"] = row
        pos_min = min(row[label]["p01"] for label in positives)  # type: ignore[index]
        neg_max = max(row[label]["p99"] for label in negatives)  # type: ignore[index]
        print(f"  k={k}: positives p01 ≥ {pos_min:.3f}   negatives p99 ≤ {neg_max:.3f}")
        for label in (*positives, *negatives):
            q = row[label]
            print(f"      {label:12s} {q}")
    report["containment_by_k"] = scores
    # the same boilerplate pairs once the site's anchor frequencies are known (the store
    # counts, per site, the stories each anchor appeared in; ≥ COMMON_DF = boilerplate)
    texts = ["\n\n".join(c.paragraphs) for c in site]
    df: dict[int, int] = defaultdict(int)
    for t in texts:
        for h in set(dedup.shingle_hashes(t)):
            if dedup.is_anchor(h):
                df[h] += 1
    common = frozenset(h for h, n in df.items() if n >= COMMON_DF)
    discounted = [
        dedup.compare(dedup.shingle_hashes(a), dedup.shingle_hashes(b), common).score
        for a, b in itertools.combinations(texts, 2)
    ]
    report["boilerplate_discounted"] = quantiles(discounted)
    print(f"  boilerplate pairs with the learned discount (k=5): {quantiles(discounted)}")

    # 2. index schemes: candidate recall on positives, false candidates on negatives
    print("\ncandidate generation (k = 5): recall per kind, false-candidate rate, rows per item")
    k = dedup.SHINGLE_WORDS
    sets_pos = [
        (label, set(shingles_k(a, k)), set(shingles_k(b, k)))
        for label, pairs in positives.items()
        for a, b, _, _ in pairs
    ]
    sets_neg = [
        (label, set(shingles_k(a, k)), set(shingles_k(b, k)))
        for label, pairs in negatives.items()
        for a, b, _, _ in pairs
    ]
    sig_cache: dict[int, list[int]] = {}

    def signature(s: set[int]) -> list[int]:
        key = id(s)
        if key not in sig_cache:
            sig_cache[key] = dedup.minhash(s)
        return sig_cache[key]

    schemes: dict[str, dict[str, object]] = {}
    classic_cache: dict[int, list[int]] = {}

    def classic(s: set[int]) -> list[int]:
        if id(s) not in classic_cache:
            classic_cache[id(s)] = classic_minhash(s)
        return classic_cache[id(s)]

    sim_cache: dict[int, int] = {}
    shapes = [(10, 4, signature), (20, 2, signature), (40, 1, signature), (13, 3, signature)]
    shapes.append((20, 2, classic))

    def sim(s: set[int]) -> int:
        if id(s) not in sim_cache:
            sim_cache[id(s)] = simhash(s)
        return sim_cache[id(s)]

    for bands, rows, sig in shapes:

        def hit(a: set[int], b: set[int], bands: int = bands, rows: int = rows, sig=sig) -> bool:  # type: ignore[no-untyped-def]
            return bool(lsh_keys(sig(a), bands, rows) & lsh_keys(sig(b), bands, rows))

        started = time.perf_counter()
        rec = {label: 0 for label in positives}
        tot = {label: 0 for label in positives}
        for label, a, b in sets_pos:
            if a and b:
                tot[label] += 1
                rec[label] += hit(a, b)
        false = {label: 0 for label in negatives}
        ntot = {label: 0 for label in negatives}
        for label, a, b in sets_neg:
            if a and b:
                ntot[label] += 1
                false[label] += hit(a, b)
        name = "one-permutation" if sig is signature else "40 permutations"
        schemes[f"minhash ({name}) b={bands} r={rows}"] = {
            "recall": {lab: round(rec[lab] / max(1, tot[lab]), 4) for lab in rec},
            "false_candidates": {lab: round(false[lab] / max(1, ntot[lab]), 4) for lab in false},
            "rows_per_item": bands,
            "seconds": round(time.perf_counter() - started, 2),
        }
    started = time.perf_counter()
    for blocks, max_dist in ((4, 3), (8, 7)):
        # block indexing finds every pair within max_dist bits (pigeonhole: one block equal)
        rec = {label: 0 for label in positives}
        tot = {label: 0 for label in positives}
        for label, a, b in sets_pos:
            if a and b:
                tot[label] += 1
                rec[label] += bin(sim(a) ^ sim(b)).count("1") <= max_dist
        false = {label: 0 for label in negatives}
        ntot = {label: 0 for label in negatives}
        for label, a, b in sets_neg:
            if a and b:
                ntot[label] += 1
                false[label] += bin(sim(a) ^ sim(b)).count("1") <= max_dist
        schemes[f"simhash 64 bits, {blocks} blocks, ≤{max_dist} bits"] = {
            "recall": {lab: round(rec[lab] / max(1, tot[lab]), 4) for lab in rec},
            "false_candidates": {lab: round(false[lab] / max(1, ntot[lab]), 4) for lab in false},
            "rows_per_item": blocks,
            "seconds": round(time.perf_counter() - started, 2),
        }
    for name, values in schemes.items():
        print(f"  {name}")
        for key, value in values.items():
            print(f"      {key}: {value}")
    report["index_schemes"] = schemes

    # 3. cost of the fingerprint per article (pool side)
    texts = [d.text for d in docs]
    started = time.perf_counter()
    for text in texts:
        dedup.fingerprint(text)
    per = (time.perf_counter() - started) / len(texts) * 1000
    sim_started = time.perf_counter()
    for text in texts[:200]:
        simhash(set(dedup.shingle_hashes(text)))
    sim_per = (time.perf_counter() - sim_started) / min(200, len(texts)) * 1000
    words = statistics.median(d.words for d in docs)
    classic_started = time.perf_counter()
    for text in texts[:200]:
        classic_minhash(set(dedup.shingle_hashes(text)))
    classic_per = (time.perf_counter() - classic_started) / min(200, len(texts)) * 1000
    print(
        f"\nfingerprint (shingles + one-permutation MinHash + bands): {per:.2f} ms per article "
        f"(median {words} words); with 40 permutations instead: {classic_per:.2f} ms; "
        f"SimHash 64: {sim_per:.2f} ms"
    )
    report["classic_minhash_ms"] = round(classic_per, 2)
    report["fingerprint_ms"] = round(per, 2)
    report["simhash_ms"] = round(sim_per, 2)
    report["articles"] = len(docs)
    out = Path(__file__).resolve().parent / "pairs.json"
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
