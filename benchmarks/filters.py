"""Entry filters: what the filter step costs the main process (``filters.Screen``).

Runs the step over N entries not seen before (the worst case: a feed's first poll), each
with a title, tags and a summary and content of realistic size, under a config's rules:
the global one, a feed block rule, a keep rule on two fields and a block_words rule.
Also a pathological pattern, to show what the scan bound does to it.

    python benchmarks/filters.py [--entries 10000] [--content-chars 6000]
"""

from __future__ import annotations

import argparse
import random
import time

from aggregator.config import parse_config
from aggregator.filters import EntryFields, Screen, decide
from aggregator.records import CleanEntry, ParsedEntry

WORDS = "the council harbour budget lima peru rain andes market energy school vote".split()


def entries(n: int, chars: int, rng: random.Random) -> list[CleanEntry]:
    made = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(chars // 6))[:chars]
        made.append(
            CleanEntry(
                entry=ParsedEntry(
                    key=f"guid:{i}",
                    title=" ".join(rng.choice(WORDS) for _ in range(8)),
                    link=f"https://example.org/{i}",
                    tags=("news", rng.choice(WORDS)),
                ),
                canonical_url=None,
                summary=f"<p>{text[:300]}</p>",
                content="".join(f"<p>{text[j : j + 500]}</p>" for j in range(0, chars, 500)),
                text=None,
                content_hash="h",
            )
        )
    return made


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--content-chars", type=int, default=6000)
    args = parser.parse_args()
    config = parse_config(
        {
            "settings": {"filters": [{"block": "(?i)\\bsponsored\\b"}]},
            "feeds": [
                {
                    "url": "https://example.org/feed.xml",
                    "filters": [
                        {"block": "(?i)webinar"},
                        {"keep": "(?i)peru|lima", "fields": ["title", "summary"]},
                        {"block_words": ["free trial", "C++"]},
                    ],
                }
            ],
        }
    )
    rules = config.feeds[0].filters
    batch = entries(args.entries, args.content_chars, random.Random(1))
    started = time.perf_counter()
    screen = Screen(rules, {})
    kept = sum(1 for clean in batch if not screen.drops(clean))
    elapsed = time.perf_counter() - started
    print(
        f"{args.entries} new entries, {args.content_chars} chars of content each: "
        f"{elapsed:.3f} s ({elapsed / args.entries * 1e6:.0f} µs per entry); "
        f"kept {kept}, dropped {screen.blocked}"
    )
    started = time.perf_counter()
    screen = Screen(rules, {b.key: rules.fingerprint for b in screen.added})  # type: ignore[union-attr]
    sum(1 for clean in batch if not screen.drops(clean))
    elapsed = time.perf_counter() - started
    print(f"the next poll of the same document (dropped ones remembered): {elapsed:.3f} s")
    bad = (
        parse_config(
            {
                "feeds": [
                    {
                        "url": "https://e.org/f",
                        "filters": [{"block": "(a+)+$", "fields": ["content"]}],
                    }
                ]
            }
        )
        .feeds[0]
        .filters
    )
    for length in (22, 24, 26):
        fields = EntryFields.of(
            title=None,
            link=None,
            author=None,
            tags=(),
            summary_html=None,
            content_html="a" * length + "!",
        )
        started = time.perf_counter()
        decide(bad, fields)
        print(f"(a+)+$ over {length} a's and a '!': {time.perf_counter() - started:.3f} s")


if __name__ == "__main__":
    main()
