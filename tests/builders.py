"""Small builders for fixture feeds and article pages served by the test server."""

from __future__ import annotations

import hashlib
import random
from html import escape

from aggregator.records import CleanEntry, ParsedEntry

WORDS = [
    "council",
    "members",
    "voted",
    "on",
    "the",
    "new",
    "budget",
    "after",
    "a",
    "long",
    "debate",
    "about",
    "schools",
    "roads",
    "and",
    "the",
    "harbour",
    "while",
    "residents",
    "gathered",
    "outside",
    "the",
    "hall",
    "to",
    "hear",
    "the",
    "decision",
    "that",
    "will",
    "shape",
    "the",
    "city",
    "for",
    "the",
    "coming",
    "decade",
    "according",
    "to",
    "officials",
    "who",
    "spoke",
]


def paragraph(seed: int | str, n: int = 60) -> str:
    # words drawn by a seeded generator: different seeds give different texts (a cyclic
    # pattern would make every page a shifted copy of the others, i.e. one story to dedup)
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def article_page(title: str, seed: int, paragraphs: int = 6) -> str:
    # the first paragraph is paragraph(seed); the others depend on the title too, so pages
    # with different titles are different stories to the dedup stage
    body = "\n".join(
        f"<p>{paragraph(seed if i == 0 else f'{title}|{seed}|{i}')}</p>" for i in range(paragraphs)
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)} | The Daily Test</title></head>
<body>
<header><nav><a href="/">Home</a> <a href="/world">World</a> <a href="/sport">Sport</a></nav></header>
<main><article>
<h1>{escape(title)}</h1>
<p class="byline">By Jane Reporter</p>
{body}
</article></main>
<aside><h2>Most read</h2><ul><li><a href="/x">Something else entirely</a></li></ul></aside>
<footer>Copyright The Daily Test. All rights reserved.</footer>
</body></html>"""


def rss(
    title: str, items: list[dict[str, str]], *, extra_channel: str = "", link: str = "http://x/"
) -> str:
    parts = []
    for item in items:
        fields = "".join(
            f"<{k}>{escape(v)}</{k}>" for k, v in item.items() if k not in ("content",)
        )
        if "content" in item:
            fields += f"<content:encoded><![CDATA[{item['content']}]]></content:encoded>"
        parts.append(f"<item>{fields}</item>")
    return f"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">
<channel><title>{escape(title)}</title><link>{escape(link)}</link>
<description>test</description>{extra_channel}
{"".join(parts)}
</channel></rss>"""


def clean_entries(feed: int, round_: int, n: int, words: int) -> list[CleanEntry]:
    """``n`` new entries of feed ``feed`` in poll ``round_``, each with its own text of
    ``words`` words, as the pipeline hands them to a saver (for store-level tests)."""
    out = []
    for j in range(n):
        key = f"{feed}-{round_}-{j}"
        body = paragraph(key, words)
        entry = ParsedEntry(
            key=f"guid:{key}", guid=key, link=f"https://f{feed}.example/{round_}/{j}", title=key
        )
        out.append(
            CleanEntry(
                entry=entry,
                canonical_url=entry.link,
                summary=None,
                content=None,
                text=body,
                content_hash=hashlib.sha1(body.encode()).hexdigest(),
            )
        )
    return out
