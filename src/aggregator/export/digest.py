"""The HTML digest: one self-contained page (inline CSS, no scripts, no external
resources) listing the stories of a period, ranked by how many sources carried them,
then by time. Every feed-provided string is escaped; links are http(s) only.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, tzinfo
from urllib.parse import urlsplit

from ..store.queries import ExportSummary
from .clean import clean_line
from .model import Entry, FeedMeta

MEDIA_TYPE = "text/html; charset=utf-8"
# First seen is shown beside the published date when the two are further apart than
# this (a late or back-dated story); polling every 30 min makes smaller gaps normal.
SEEN_GAP = timedelta(hours=2)
SUMMARY_AFTER = 50  # a digest of more stories than this starts with a summary
TOP = 5  # top sources, and most-carried stories, in that summary
# Sent as a header by the server and repeated in the page: nothing but inline CSS runs.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'"

STYLE = """
:root{color-scheme:light dark;--bg:#f5f4ef;--card:#fff;--fg:#1f2023;--muted:#62666d;
--accent:#1d5fb0;--line:#e2e0d8;--badge-bg:#e8f0fb;--badge-fg:#174e92}
@media (prefers-color-scheme:dark){:root{--bg:#141518;--card:#1d1f23;--fg:#e7e5e1;
--muted:#a3a7ad;--accent:#8db8f5;--line:#2d3036;--badge-bg:#22334d;--badge-fg:#b9d3fa}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);
font:17px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.wrap{max-width:46rem;margin:0 auto;padding:2.5rem 1.25rem 3rem}
header{border-bottom:2px solid var(--fg);padding-bottom:.9rem;margin-bottom:1.5rem}
h1{font:700 2rem/1.15 Georgia,"Times New Roman",serif;margin:0 0 .4rem;letter-spacing:-.01em}
.period{color:var(--muted);margin:0;font-size:.92rem}
ol{list-style:none;margin:0;padding:0}
.story{background:var(--card);border:1px solid var(--line);border-radius:12px;
padding:1.05rem 1.25rem 1.1rem;margin:0 0 .9rem}
.story h2{font-size:1.16rem;line-height:1.35;margin:0 0 .3rem;overflow-wrap:anywhere}
.story h2 a{color:inherit;text-decoration:none}
.story h2 a:hover,.story h2 a:focus{color:var(--accent);text-decoration:underline}
.meta{font-size:.84rem;color:var(--muted);margin:0 0 .55rem}
.badge{display:inline-block;background:var(--badge-bg);color:var(--badge-fg);font-weight:600;
border-radius:999px;padding:0 .55rem;margin-right:.35rem}
.teaser{margin:0 0 .6rem;overflow-wrap:anywhere}
.sources{font-size:.84rem;color:var(--muted);margin:0;overflow-wrap:anywhere}
.sources a{color:var(--accent);text-decoration:none}
.sources a:hover{text-decoration:underline}
.empty{color:var(--muted);font-style:italic}
.summary{background:var(--card);border:1px solid var(--line);border-radius:12px;
padding:.9rem 1.25rem;margin:0 0 1.4rem;font-size:.92rem}
.summary p{margin:0 0 .4rem}.summary ol{list-style:decimal;padding-left:1.3rem;margin:0}
.summary a{color:var(--accent)}
footer{color:var(--muted);font-size:.8rem;margin-top:2rem;text-align:center}
@media (max-width:520px){body{font-size:16px}.wrap{padding:1.4rem .8rem 2rem}
h1{font-size:1.55rem}.story{padding:.85rem .95rem;border-radius:10px}
.story h2{font-size:1.07rem}}
"""


def _e(value: str) -> str:
    return html.escape(value, quote=True)


def _when(value: datetime, tz: tzinfo) -> str:
    local = value.astimezone(tz)
    return f"{local.day} {local:%b %Y}, {local:%H:%M} {local.tzname() or ''}".strip()


def _time(value: datetime, tz: tzinfo, kind: str = "") -> str:
    css = f' class="{kind}"' if kind else ""
    return f'<time{css} datetime="{_e(value.isoformat())}">{_e(_when(value, tz))}</time>'


def _dates(entry: Entry, tz: tzinfo) -> str:
    """The published date; first seen too when it differs meaningfully (or alone when
    the feed gave no date)."""
    seen = _time(entry.first_seen_at, tz, "seen")
    if entry.published is None:
        return f"first seen {seen}"
    published = _time(entry.published, tz, "published")
    if abs(entry.first_seen_at - entry.published) <= SEEN_GAP:
        return published
    return f"{published} · first seen {seen}"


def _anchor(entry: Entry) -> str:
    return f"story-{entry.story_id}" if entry.kind == "story" else f"item-{entry.item_id}"


def _period(meta: FeedMeta) -> str:
    tz = meta.tz
    if meta.since and meta.until:
        return f"Stories first seen between {_time(meta.since, tz)} and {_time(meta.until, tz)}"
    if meta.since:
        return f"Stories first seen since {_time(meta.since, tz)}"
    if meta.until:
        return f"Stories first seen before {_time(meta.until, tz)}"
    return "All stories"


def story_html(entry: Entry, tz: tzinfo) -> str:
    title = _e(entry.title)
    if entry.url:
        title = f'<a href="{_e(entry.url)}" rel="noopener noreferrer">{title}</a>'
    count = entry.source_count
    badge = f'<span class="badge">{count} source{"s" if count != 1 else ""}</span>'
    sources = []
    for source in entry.sources:
        if source.url:
            sources.append(
                f'<a href="{_e(source.url)}" rel="noopener noreferrer">{_e(source.name)}</a>'
            )
        else:
            sources.append(_e(source.name))
    host = urlsplit(entry.url).hostname if entry.url else None
    site = f' · <span class="site">{_e(host.removeprefix("www."))}</span>' if host else ""
    parts = [
        f'<li class="story" id="{_anchor(entry)}">',
        f"<h2>{title}</h2>",
        f'<p class="meta">{badge}{_dates(entry, tz)}{site}</p>',
    ]
    if entry.teaser:
        parts.append(f'<p class="teaser">{_e(entry.teaser)}</p>')
    parts.append(f'<p class="sources">From {" · ".join(sources)}</p>')
    parts.append("</li>\n")
    return "".join(parts)


def summary_html(summary: ExportSummary, carried: list[Entry]) -> str:
    """Counts, the top sources and the stories carried by the most sources."""
    noun = "stories" if not carried or carried[0].kind == "story" else "items"
    parts = [
        '<section class="summary">',
        f"<p><strong>{summary.entries} {noun}</strong> from {summary.items} "
        f"item{'s' if summary.items != 1 else ''} in {summary.feeds} "
        f"feed{'s' if summary.feeds != 1 else ''}.</p>",
    ]
    if summary.top_feeds:
        top = ", ".join(
            f"{_e(clean_line(n) or '(unnamed feed)')} ({c})" for n, c in summary.top_feeds
        )
        parts.append(f"<p>Top sources: {top}.</p>")
    widest = [e for e in carried if e.source_count > 1]
    if widest:
        parts.append("<p>Carried by the most sources:</p><ol>")
        parts.extend(
            f'<li><a href="#{_anchor(e)}">{_e(e.title)}</a> ({e.source_count} sources)</li>'
            for e in widest
        )
        parts.append("</ol>")
    parts.append("</section>\n")
    return "".join(parts)


def render(
    entries: Iterable[Entry],
    meta: FeedMeta,
    summary: Callable[[], ExportSummary] | None = None,
) -> Iterator[str]:
    """The page. ``summary`` (counts over the whole listing, asked once) puts a summary
    at the top of a digest of more than ``SUMMARY_AFTER`` stories; the entries come
    ranked by sources, so the first few are the most carried ones."""
    yield (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="generator" content="aggregator">\n'
        f"<title>{_e(meta.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        '<div class="wrap">\n<header>\n'
        f"<h1>{_e(meta.title)}</h1>\n"
        f'<p class="period">{_period(meta)}</p>\n</header>\n<main>\n'
    )
    stream = iter(entries)
    counts = summary() if summary is not None else None
    if counts is not None and counts.entries > SUMMARY_AFTER:
        first = list(itertools.islice(stream, TOP))
        yield summary_html(counts, first)
        stream = itertools.chain(first, stream)
    yield "<ol>\n"
    count = 0
    for entry in stream:
        count += 1
        yield story_html(entry, meta.tz)
    yield "</ol>\n"
    if count == 0:
        yield '<p class="empty">No stories in this period.</p>\n'
    yield (
        f"</main>\n<footer>{count} stor{'y' if count == 1 else 'ies'} · generated "
        f"{_time(meta.generated_at, meta.tz)} by aggregator</footer>\n</div>\n</body>\n</html>\n"
    )
