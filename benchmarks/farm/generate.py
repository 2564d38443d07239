"""Generate a farm of N feeds and their article pages on disk (deterministic for a seed).

Layout of the output folder::

    farm.json                 what was generated: seed, address, every feed's path and kind
    site/s0000/feed.rss       one folder per site: its feed (.rss, .atom, .rdf or .json) ...
    site/s0000/a/00-….html    ... and one article page per entry

The mix (per feed, drawn from the seed): about 50 % RSS 2.0 with ``content:encoded``, 33 %
Atom 1.0, 9 % RSS 1.0 (RDF), 8 % JSON Feed 1.1; 10–50 entries each, every entry carrying
1–5 KB of HTML content and linking to an article page of 400–1500 words inside realistic
boilerplate (cookie banner, header, navigation, breadcrumbs, byline, share bar, newsletter
box, related links, comments, sidebar, footer, scripts). About a tenth of the entries are
copies of one story carried by several feeds (same title and text, each on its own site and
URL; half of the copies name the wire original as ``<link rel=canonical>``).

URLs inside the documents are absolute and name ``host:port`` chosen at generation time;
``serve`` listens there (and the latency proxy on ``port + 1`` rewrites them to its own port).

With ``hosts=N`` (N > 1) the sites are spread over N loopback addresses, 127.0.1.1 …
127.0.1.N, site i on address i mod N (its feed, its article pages and the ``/wire/``
canonical of a shared story on the address of that story's number mod N), so each address
is a site of its own for dedup (anchor counts per host) and for per-host limits, as on the
web. ``hosts=1`` (the default) keeps everything on ``host`` (127.0.0.1).
"""

from __future__ import annotations

import html
import json
import multiprocessing
import os
import re
import shutil
import signal
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from random import Random

from .text import FIRST_NAMES, LAST_NAMES, SECTIONS, Corpus, load_corpus

KINDS = (("rss2", 0.50), ("atom", 0.33), ("rdf", 0.09), ("json", 0.08))
FEED_FILE = {"rss2": "feed.rss", "atom": "feed.atom", "rdf": "feed.rdf", "json": "feed.json"}
SHARED_SHARE = 0.10  # share of entries that are copies of a story carried by several feeds
BASE_DATE = datetime(2024, 6, 3, 8, 0, tzinfo=UTC)
SITE_NOUNS = (
    "Ledger Herald Dispatch Observer Review Chronicle Post Journal Courier Gazette Times "
    "Report Daily Wire Bulletin Tribune Sentinel Monitor Record Standard"
).split()
_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class FeedInfo:
    path: str  # URL path of the feed document, e.g. /s0001/feed.rss
    kind: str
    entries: int
    shared: int  # how many of its entries are copies of a shared story


@dataclass(frozen=True)
class Entry:
    index: int
    title: str
    url: str
    canonical: str
    author: str
    section: str
    published: datetime
    paragraphs: tuple[str, ...]
    shared: bool


# ---- text ------------------------------------------------------------------------------


def _words(corpus: Corpus, rng: Random, target: int) -> list[list[str]]:
    """Paragraphs (lists of sentences) of about ``target`` words, each sentence drawn at
    random from the whole corpus. Consecutive runs would make unrelated pages share long
    passages (the corpus has ~5,700 sentences for ~60,000 pages): near-duplicates that a
    dedup stage would rightly merge. Drawn at random, two pages share under 1 % of text."""
    pool = corpus.sentences
    paragraphs: list[list[str]] = []
    count = 0
    while count < target:
        para: list[str] = []
        for _ in range(rng.randint(1, 5)):
            sentence = pool[rng.randrange(len(pool))]
            para.append(sentence)
            count += sentence.count(" ") + 1
            if count >= target:
                break
        paragraphs.append(para)
    return paragraphs


def _title(rng: Random, paragraphs: list[list[str]]) -> str:
    """A headline made of the first words of one of the story's opening sentences."""
    opening = [s for para in paragraphs[:3] for s in para]
    words = rng.choice(opening).split()
    title = " ".join(words[: rng.randint(6, 12)]).rstrip('.,;:!?"”’)—–-')
    return title[:1].upper() + title[1:]


def _name(rng: Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def _slug(title: str) -> str:
    return _SLUG.sub("-", title.lower()).strip("-")[:60] or "story"


def _story(corpus: Corpus, seed: int, index: int) -> tuple[str, tuple[str, ...], str]:
    """A shared story: (title, paragraphs as HTML, author), the same in every shard."""
    rng = Random(f"{seed}:story:{index}")
    title, paragraphs = _text(corpus, rng, rng.randint(400, 1500))
    return title, paragraphs, _name(rng)


def _text(corpus: Corpus, rng: Random, words: int) -> tuple[str, tuple[str, ...]]:
    """(headline, paragraphs as HTML) of about ``words`` words."""
    out: list[str] = []
    paragraphs = _words(corpus, rng, words)
    for n, para in enumerate(paragraphs):
        body = html.escape(" ".join(para), quote=False)
        if n and n % 6 == 0 and len(para) > 1:
            heading = " ".join(para[0].split()[:5]).rstrip(".,;:")
            out.append(f"<h2>{html.escape(heading, quote=False)}</h2>")
        if n == 3 and len(para) > 1:
            out.append(f"<blockquote><p>{body}</p></blockquote>")
        else:
            out.append(f"<p>{body}</p>")
    return _title(rng, paragraphs), tuple(out)


# ---- one site --------------------------------------------------------------------------


def host_list(host: str, hosts: int) -> tuple[str, ...]:
    """The farm's addresses: ``(host,)`` for one, else 127.0.1.1 … 127.0.1.N."""
    if hosts <= 1:
        return (host,)
    if hosts > 254:
        raise SystemExit("at most 254 hosts (127.0.1.1 … 127.0.1.254)")
    return tuple(f"127.0.1.{i + 1}" for i in range(hosts))


class Site:
    def __init__(
        self, corpus: Corpus, seed: int, index: int, n_feeds: int, bases: tuple[str, ...]
    ) -> None:
        self.corpus = corpus
        self.seed = seed
        self.index = index
        self.rng = Random(f"{seed}:feed:{index}")
        rng = self.rng
        self.n_shared = max(1, n_feeds)  # ~3 copies per shared story on average
        self.name = f"The {rng.choice(LAST_NAMES)} {rng.choice(SITE_NOUNS)}"
        self.slug = f"s{index:04d}"
        self.bases = bases
        self.base = bases[index % len(bases)]
        self.home = f"{self.base}/{self.slug}/"
        r = rng.random()
        acc = 0.0
        self.kind = KINDS[-1][0]
        for kind, share in KINDS:
            acc += share
            if r < acc:
                self.kind = kind
                break
        self.feed_url = f"{self.home}{FEED_FILE[self.kind]}"
        self.theme = rng.randrange(3)
        self.sections = rng.sample(SECTIONS, 7)
        self.every_hours = rng.choice((1, 2, 3, 6, 12, 24))

    def entries(self, story_cache: dict[int, tuple[str, tuple[str, ...], str]]) -> list[Entry]:
        rng = self.rng
        out: list[Entry] = []
        for j in range(rng.randint(10, 50)):
            published = (
                BASE_DATE
                - timedelta(
                    hours=self.every_hours * j + rng.random() * self.every_hours * 0.5,
                    minutes=self.index % 60,
                )
            ).replace(microsecond=0)
            section = rng.choice(self.sections)
            if rng.random() < SHARED_SHARE:
                story = rng.randrange(self.n_shared)
                if story not in story_cache:
                    story_cache[story] = _story(self.corpus, self.seed, story)
                title, paragraphs, author = story_cache[story]
                url = f"{self.home}a/{j:02d}-{_slug(title)}.html"
                canonical = (
                    f"{self.bases[story % len(self.bases)]}/wire/{story:05d}-{_slug(title)}.html"
                    if rng.random() < 0.5
                    else url
                )
                out.append(
                    Entry(j, title, url, canonical, author, section, published, paragraphs, True)
                )
                continue
            title, paragraphs = _text(self.corpus, rng, rng.randint(400, 1500))
            url = f"{self.home}a/{j:02d}-{_slug(title)}.html"
            out.append(Entry(j, title, url, url, _name(rng), section, published, paragraphs, False))
        return out

    # -- feed content --------------------------------------------------------------------
    def content(self, entry: Entry) -> str:
        """1–5 KB of HTML: the first paragraphs (never the whole article) and a link."""
        target = self.rng.randint(1000, 5000)
        parts: list[str] = []
        size = 0
        for para in entry.paragraphs[:-1]:
            parts.append(para)
            size += len(para)
            if size >= target:
                break
        parts.append(f'<p><a href="{entry.url}">Continue reading…</a></p>')
        return "\n".join(parts)

    @staticmethod
    def summary(entry: Entry) -> str:
        text = re.sub(r"<[^>]+>", "", entry.paragraphs[0])
        text = html.unescape(text)
        return text if len(text) <= 280 else text[:277].rsplit(" ", 1)[0] + "…"

    def feed(self, entries: list[Entry]) -> str:
        return getattr(self, f"_feed_{self.kind}")(entries)

    def _feed_rss2(self, entries: list[Entry]) -> str:
        e = html.escape
        items = []
        for entry in entries:
            items.append(
                f"<item><title>{e(entry.title)}</title><link>{entry.url}</link>"
                f'<guid isPermaLink="true">{entry.url}</guid>'
                f"<pubDate>{format_datetime(entry.published)}</pubDate>"
                f"<dc:creator>{e(entry.author)}</dc:creator><category>{entry.section}</category>"
                f"<description>{e(self.summary(entry))}</description>"
                f"<content:encoded>{_cdata(self.content(entry))}</content:encoded></item>"
            )
        newest = format_datetime(entries[0].published)
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:atom="http://www.w3.org/2005/Atom">\n'
            f"<channel><title>{e(self.name)}</title><link>{self.home}</link>"
            f"<description>News and analysis from {e(self.name)}</description>"
            f"<language>en</language><lastBuildDate>{newest}</lastBuildDate>"
            f'<atom:link href="{self.feed_url}" rel="self" type="application/rss+xml"/>\n'
            + "\n".join(items)
            + "\n</channel></rss>\n"
        )

    def _feed_atom(self, entries: list[Entry]) -> str:
        e = html.escape
        items = []
        for entry in entries:
            when = entry.published.isoformat()
            items.append(
                f"<entry><title>{e(entry.title)}</title>"
                f"<id>tag:{self.slug}.farm.test,2024:{entry.index}</id>"
                f'<link rel="alternate" type="text/html" href="{entry.url}"/>'
                f"<published>{when}</published><updated>{when}</updated>"
                f"<author><name>{e(entry.author)}</name></author>"
                f'<category term="{entry.section}"/>'
                f'<summary type="html">{e(self.summary(entry))}</summary>'
                f'<content type="html">{e(self.content(entry))}</content></entry>'
            )
        return (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            '<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">\n'
            f"<title>{e(self.name)}</title><id>{self.home}</id>"
            f"<updated>{entries[0].published.isoformat()}</updated>"
            f'<link rel="alternate" type="text/html" href="{self.home}"/>'
            f'<link rel="self" type="application/atom+xml" href="{self.feed_url}"/>\n'
            + "\n".join(items)
            + "\n</feed>\n"
        )

    def _feed_rdf(self, entries: list[Entry]) -> str:
        e = html.escape
        seq = "".join(f'<rdf:li rdf:resource="{x.url}"/>' for x in entries)
        items = []
        for entry in entries:
            items.append(
                f'<item rdf:about="{entry.url}"><title>{e(entry.title)}</title>'
                f"<link>{entry.url}</link><description>{e(self.summary(entry))}</description>"
                f"<dc:date>{entry.published.isoformat()}</dc:date>"
                f"<dc:creator>{e(entry.author)}</dc:creator><dc:subject>{entry.section}</dc:subject>"
                f"<content:encoded>{_cdata(self.content(entry))}</content:encoded></item>"
            )
        return (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            'xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:content="http://purl.org/rss/1.0/modules/content/">\n'
            f'<channel rdf:about="{self.feed_url}"><title>{e(self.name)}</title>'
            f"<link>{self.home}</link><description>Latest from {e(self.name)}</description>"
            f"<items><rdf:Seq>{seq}</rdf:Seq></items></channel>\n"
            + "\n".join(items)
            + "\n</rdf:RDF>\n"
        )

    def _feed_json(self, entries: list[Entry]) -> str:
        doc = {
            "version": "https://jsonfeed.org/version/1.1",
            "title": self.name,
            "home_page_url": self.home,
            "feed_url": self.feed_url,
            "language": "en",
            "items": [
                {
                    "id": entry.url,
                    "url": entry.url,
                    "title": entry.title,
                    "summary": self.summary(entry),
                    "content_html": self.content(entry),
                    "date_published": entry.published.isoformat(),
                    "authors": [{"name": entry.author}],
                    "tags": [entry.section],
                }
                for entry in entries
            ],
        }
        return json.dumps(doc, ensure_ascii=False, indent=1) + "\n"

    # -- article pages -------------------------------------------------------------------
    def page(self, entry: Entry, entries: list[Entry]) -> str:
        rng = self.rng
        e = html.escape
        cls = ("site", "masthead", "top")[self.theme]
        nav = "".join(f'<li><a href="{self.home}{s.lower()}/">{s}</a></li>' for s in self.sections)
        others = [x for x in entries if x is not entry]
        related = "".join(
            f'<li><a href="{x.url}">{e(x.title)}</a></li>'
            for x in rng.sample(others, min(5, len(others)))
        )
        popular = "".join(
            f'<li><a href="{x.url}">{e(x.title)}</a></li>'
            for x in rng.sample(others, min(5, len(others)))
        )
        comments = []
        for _ in range(rng.choice((0, 0, 1, 2, 3, 5, 8))):
            pool = self.corpus.sentences
            said = " ".join(pool[rng.randrange(len(pool))] for _ in range(rng.randint(1, 3)))
            comments.append(
                f'<div class="comment"><div class="comment-meta"><span class="comment-author">'
                f"{_name(rng)}</span> <time>{rng.randint(1, 23)} hours ago</time></div>"
                f'<p>{e(said, quote=False)}</p><a class="reply" href="#">Reply</a></div>'
            )
        when = entry.published
        img = f"{self.home}img/{entry.index:02d}.jpg"
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(entry.title)} | {e(self.name)}</title>
<link rel="canonical" href="{entry.canonical}">
<meta name="description" content="{e(self.summary(entry))}">
<meta name="author" content="{e(entry.author)}">
<meta property="og:type" content="article">
<meta property="og:title" content="{e(entry.title)}">
<meta property="og:url" content="{entry.canonical}">
<meta property="og:image" content="{img}">
<meta property="og:site_name" content="{e(self.name)}">
<meta property="article:published_time" content="{when.isoformat()}">
<meta property="article:section" content="{entry.section}">
<link rel="stylesheet" href="/static/{cls}.css">
<link rel="alternate" type="application/rss+xml" title="{e(self.name)}" href="{self.feed_url}">
<script>window.dataLayer=window.dataLayer||[];function gtag(){{dataLayer.push(arguments);}}gtag('js',new Date());gtag('config','G-{self.index:06d}');</script>
</head>
<body class="{cls}-article">
<div id="cookie-banner" class="cookie-consent" role="dialog"><p>We use cookies and similar technologies to improve your experience, measure audiences and show you personalised content. You can change your choice at any time in Privacy settings.</p><button class="accept">Accept all</button> <button class="manage">Manage preferences</button></div>
<header class="{cls}-header"><a class="logo" href="{self.home}">{e(self.name)}</a>
<nav class="{cls}-nav" aria-label="Main"><ul><li><a href="{self.home}">Home</a></li>{nav}</ul></nav>
<form class="search" action="{self.home}search"><input type="search" name="q" placeholder="Search"><button>Search</button></form>
<a class="subscribe" href="{self.home}subscribe">Subscribe</a> <a class="login" href="{self.home}login">Sign in</a></header>
<div class="breadcrumbs"><a href="{self.home}">Home</a> › <a href="{self.home}{entry.section.lower()}/">{entry.section}</a></div>
<div class="layout">
<main id="content">
<article class="{cls}-story">
<h1 class="headline">{e(entry.title)}</h1>
<div class="byline">By <a rel="author" href="{self.home}authors/{_slug(entry.author)}">{e(entry.author)}</a> · <time datetime="{when.isoformat()}">{when.strftime("%d %B %Y, %H:%M")}</time></div>
<figure class="lead"><img src="{img}" alt="{e(entry.title)}" width="1200" height="675"><figcaption>Photo: {_name(rng)} / Agency</figcaption></figure>
<div class="article-body">
{chr(10).join(entry.paragraphs)}
</div>
<div class="share-bar">Share this article: <a href="#">Facebook</a> <a href="#">X</a> <a href="#">LinkedIn</a> <a href="#">Email</a></div>
<div class="tags">Topics: <a href="{self.home}{entry.section.lower()}/">{entry.section}</a></div>
</article>
<section class="newsletter"><h2>Sign up for our newsletter</h2><p>The best of {e(self.name)}, in your inbox every morning.</p><form><input type="email" placeholder="Your email"><button>Sign up</button></form></section>
<section class="related"><h2>Related stories</h2><ul>{related}</ul></section>
<section class="comments" id="comments"><h2>{len(comments)} comments</h2>{"".join(comments)}<p><a href="{self.home}login">Sign in to comment</a></p></section>
</main>
<aside class="sidebar"><section class="most-read"><h3>Most read</h3><ol>{popular}</ol></section><div class="ad">Advertisement</div><section class="follow"><h3>Follow us</h3><a href="#">Facebook</a> <a href="#">Instagram</a> <a href="#">YouTube</a></section></aside>
</div>
<footer class="{cls}-footer"><ul><li><a href="{self.home}about">About us</a></li><li><a href="{self.home}contact">Contact</a></li><li><a href="{self.home}privacy">Privacy policy</a></li><li><a href="{self.home}terms">Terms of use</a></li><li><a href="{self.home}careers">Careers</a></li></ul><p>© 2024 {e(self.name)}. All rights reserved.</p></footer>
<script src="/static/app.js" defer></script>
</body>
</html>
"""


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


# ---- the whole farm ----------------------------------------------------------------------

_corpus: Corpus | None = None


def _init(corpora: str) -> None:
    global _corpus
    # a worker ends by SIGTERM when the pool closes: not through a handler the parent set
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _corpus = load_corpus(Path(corpora))


def _write_sites(
    job: tuple[int, list[int], int, tuple[str, ...], str],
) -> list[tuple[int, FeedInfo, int, int]]:
    seed, indices, n_feeds, bases, root = job
    assert _corpus is not None
    cache: dict[int, tuple[str, tuple[str, ...], str]] = {}
    out = []
    for i in indices:
        site = Site(_corpus, seed, i, n_feeds, bases)
        entries = site.entries(cache)
        folder = Path(root) / "site" / site.slug
        (folder / "a").mkdir(parents=True, exist_ok=True)
        size = 0
        for entry in entries:
            text = site.page(entry, entries).encode()
            (folder / "a" / entry.url.rsplit("/", 1)[1]).write_bytes(text)
            size += len(text)
        feed = site.feed(entries).encode()
        feed_path = folder / FEED_FILE[site.kind]
        feed_path.write_bytes(feed)
        stamp = entries[0].published.timestamp()
        os.utime(feed_path, (stamp, stamp))
        info = FeedInfo(
            f"/{site.slug}/{FEED_FILE[site.kind]}",
            site.kind,
            len(entries),
            sum(1 for x in entries if x.shared),
        )
        out.append((i, info, size, len(feed)))
    return out


@dataclass
class Farm:
    root: Path
    seed: int
    host: str  # the first (or only) address
    port: int
    feeds: list[FeedInfo]
    stats: dict[str, float]
    hosts: tuple[str, ...] = ()  # every address (site i on hosts[i % len(hosts)])

    def __post_init__(self) -> None:
        if not self.hosts:
            self.hosts = (self.host,)

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def latency_port(self) -> int:
        return self.port + 1

    def urls(self, *, latency: bool = False, limit: int | None = None) -> list[str]:
        port = self.latency_port if latency else self.port
        n = len(self.hosts)
        return [
            f"http://{self.hosts[i % n]}:{port}{f.path}" for i, f in enumerate(self.feeds[:limit])
        ]

    @classmethod
    def load(cls, root: Path) -> Farm:
        meta = json.loads((root / "farm.json").read_text())
        return cls(
            root=root,
            seed=meta["seed"],
            host=meta["host"],
            port=meta["port"],
            feeds=[FeedInfo(**f) for f in meta["feeds"]],
            stats=meta["stats"],
            hosts=tuple(meta.get("hosts") or (meta["host"],)),
        )


def generate(
    out: Path,
    *,
    feeds: int = 2000,
    seed: int = 1,
    corpora: Path,
    host: str = "127.0.0.1",
    port: int = 18080,
    jobs: int | None = None,
    hosts: int = 1,
) -> Farm:
    """Write the farm into ``out`` (replacing a previous one) and return its description."""
    if len(str(port + 1)) != len(str(port)):
        raise SystemExit("choose a port whose successor has as many digits (e.g. 18080)")
    load_corpus(corpora)  # fail early with a clear message
    started = time.monotonic()
    if (out / "site").exists():
        shutil.rmtree(out / "site")
    out.mkdir(parents=True, exist_ok=True)
    addresses = host_list(host, hosts)
    bases = tuple(f"http://{h}:{port}" for h in addresses)
    jobs = jobs or os.cpu_count() or 1
    chunk = 25
    work = [
        (seed, list(range(s, min(feeds, s + chunk))), feeds, bases, str(out))
        for s in range(0, feeds, chunk)
    ]
    results: list[tuple[int, FeedInfo, int, int]] = []
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs, initializer=_init, initargs=(str(corpora),)) as pool:
        for part in pool.imap_unordered(_write_sites, work):
            results.extend(part)
    results.sort(key=lambda r: r[0])
    infos = [r[1] for r in results]
    kinds: dict[str, int] = {}
    for info in infos:
        kinds[info.kind] = kinds.get(info.kind, 0) + 1
    stats: dict[str, float] = {
        "feeds": feeds,
        "hosts": len(addresses),
        "entries": sum(i.entries for i in infos),
        "shared_entries": sum(i.shared for i in infos),
        "page_bytes": sum(r[2] for r in results),
        "feed_bytes": sum(r[3] for r in results),
        "seconds": round(time.monotonic() - started, 1),
        **{f"kind_{k}": v for k, v in sorted(kinds.items())},
    }
    farm = Farm(out, seed, addresses[0], port, infos, stats, addresses)
    meta = {
        "seed": seed,
        "host": addresses[0],
        "hosts": list(addresses),
        "port": port,
        "stats": stats,
        "text": "sentences of the Zyte article-extraction benchmark ground truth (MIT), recombined",
        "feeds": [asdict(i) for i in infos],
    }
    (out / "farm.json").write_text(json.dumps(meta, indent=1))
    return farm
