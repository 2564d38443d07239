"""HTML listing pages: the automatic story finder, explicit selectors, the pipeline path."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aggregator.cli import app
from aggregator.cli import common as cli_common
from aggregator.config import parse_config
from aggregator.errors import ConfigError, ParseError
from aggregator.extract import html_to_text
from aggregator.listing import parse_listing
from aggregator.records import HtmlSelectors, ParsedFeed
from builders import article_page, paragraph, rss
from conftest import DATA, write_config
from httpserver import FixtureServer
from test_pipeline import rows, run_once

LISTINGS = DATA / "pages" / "listings"
HTML = {"content-type": "text/html; charset=utf-8"}

STORIES = [
    ("City council approves the harbour budget after a long night", "2026-06-01T09:30:00Z"),
    ("Schools to get new science labs by the autumn term", "2026-06-01T08:00:00Z"),
    ("Residents gather outside the hall as the vote runs late", None),
    ("Why the new ring road is already three years behind", "2026-05-31T17:45:00Z"),
    ("Harbour workers strike over pay: what happens next", "2026-05-31T12:00:00Z"),
]


def teaser(i: int) -> str:
    return f"Teaser {i}: " + paragraph(i, 24)


def news_page(prefix: str = "/news") -> str:
    """The page the issue describes: skip link, header and nav, stories, newsletter, footer."""
    items = []
    for i, (title, date) in enumerate(STORIES):
        when = f'<time datetime="{date}">{date[:10]}</time>' if date else "<span>Updated</span>"
        items.append(
            f"""<article class="story">
  <h2 class="story-title"><a href="{prefix}/2026/story-{i}.html">{html.escape(title)}</a></h2>
  <div class="meta">By <a href="/author/jane" rel="author">Jane Reporter</a> · {when}</div>
  <p class="teaser">{teaser(i)}</p>
  <ul class="story-tags"><li><a href="/tag/council">Council</a></li><li><a href="/tag/harbour">Harbour</a></li></ul>
</article>"""
        )
    stories = "\n".join(items)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Local News | The Daily Test</title>
<link rel="alternate" type="application/rss+xml" title="Comments" href="/comments/feed.xml">
</head>
<body>
<a class="skip-link" href="#content">Skip to content</a>
<header class="site-header">
  <a href="/" class="logo">The Daily Test</a>
  <nav class="main-menu"><ul>
    <li><a href="/news/">News</a></li><li><a href="/news/world/">World news from everywhere</a></li>
    <li><a href="/sport/">Sport</a></li><li><a href="/opinion/latest-columns.html">Opinion and columns</a></li>
  </ul></nav>
</header>
<div class="layout">
<main id="content">
  <h1>Local news</h1>
  {stories}
  <nav class="pagination"><a href="{prefix}/page/2/">Older stories</a> <a href="{prefix}/page/3/">3</a></nav>
</main>
<div class="rail">
  <section><h2>Related</h2><ul>
    <li><a href="/news/2025/old-budget-story.html">Last year's budget row, explained in full</a></li>
    <li><a href="/news/2025/harbour-history.html">A short history of the harbour and its people</a></li>
  </ul></section>
  <section><h2>Most read</h2><ol>
    <li><a href="/news/2026/most-read-1.html">Celebrity chef opens a restaurant by the harbour</a></li>
    <li><a href="/news/2026/most-read-2.html">The ten best walks around the old town this summer</a></li>
  </ol></section>
  <section><h2>Trending</h2><ul>
    <li><a href="/news/2026/trending-1.html">Heatwave warning issued for the weekend ahead</a></li>
    <li><a href="/news/2026/trending-2.html">Football club unveils its new stadium design</a></li>
  </ul></section>
</div>
</div>
<div class="newsletter-signup">
  <h3>Sign Up To Our Daily Digest</h3>
  <p>Get the day's most important stories in your inbox every morning, free of charge.</p>
  <form action="/subscribe"><input name="email"><button>Subscribe</button></form>
  <a href="/newsletters/privacy-notice.html">How we use your email address and data</a>
</div>
<footer><a href="/about-us/">About us</a> <a href="/contact/">Contact</a>
  <a href="/news/2026/footer-promo.html">Advertise with the Daily Test this year</a></footer>
</body></html>"""


def serve_news_site(server: FixtureServer) -> str:
    for i, (title, _) in enumerate(STORIES):
        server.add(
            f"/news/2026/story-{i}.html", article_page(title, seed=10 + i), content_type="text/html"
        )
    return server.add("/news/", news_page(), content_type="text/html")


def titles(feed: ParsedFeed) -> list[str | None]:
    return [e.title for e in feed.entries]


def text_of(summary: str | None) -> str:
    return " ".join(html_to_text(summary or "").split())


# ---------------------------------------------------------------- the page


def test_automatic_finder_yields_exactly_the_stories() -> None:
    base = "https://news.example.com/news/"
    feed = parse_listing(news_page().encode(), HTML, base)
    assert feed.kind == "html" and feed.title == "Local News | The Daily Test"
    assert titles(feed) == [t for t, _ in STORIES]
    assert [e.link for e in feed.entries] == [
        f"https://news.example.com/news/2026/story-{i}.html" for i in range(len(STORIES))
    ]
    assert [e.key for e in feed.entries] == ["link:" + str(e.link) for e in feed.entries]
    assert [text_of(e.summary) for e in feed.entries] == [teaser(i) for i in range(len(STORIES))]
    expected_dates = [
        datetime.fromisoformat(d.replace("Z", "+00:00")) if d else None for _, d in STORIES
    ]
    assert [e.published for e in feed.entries] == expected_dates
    links = " ".join(str(e.link) for e in feed.entries)
    for furniture in ("most-read", "trending", "old-budget", "privacy", "footer", "page/2", "tag/"):
        assert furniture not in links


def test_explicit_selectors_give_the_same_stories() -> None:
    selectors = HtmlSelectors(
        item="main article.story",
        title="h2 a",
        link="h2 a@href",
        summary="p.teaser",
        date="time@datetime",
    )
    auto = parse_listing(news_page().encode(), HTML, "https://news.example.com/news/")
    explicit = parse_listing(
        news_page().encode(), HTML, "https://news.example.com/news/", selectors
    )
    assert explicit.entries == auto.entries


def test_link_pattern_filters_the_stories() -> None:
    selectors = HtmlSelectors(link_pattern=r"/story-[13]\.html$")
    feed = parse_listing(news_page().encode(), HTML, "https://news.example.com/news/", selectors)
    assert titles(feed) == [STORIES[1][0], STORIES[3][0]]


def test_item_selector_that_matches_nothing_is_a_clear_error() -> None:
    with pytest.raises(ParseError, match=r"item selector 'li\.nothing' matched no story"):
        parse_listing(
            news_page().encode(), HTML, "https://x.test/", HtmlSelectors(item="li.nothing")
        )


def test_a_page_without_a_story_list_is_a_parse_error() -> None:
    page = b"<html><body><nav><a href='/a'>A</a><a href='/b'>B</a></nav><p>Hello.</p></body></html>"
    with pytest.raises(ParseError, match="no list of stories"):
        parse_listing(page, HTML, "https://x.test/")


# ---------------------------------------------------------------- other layouts


def card_grid() -> str:
    cards = []
    for i in range(6):
        cards.append(
            f"""<div class="col-md-4"><div class="card post-card">
  <a class="post-card-image-link" href="/stories/card-story-{i}/" aria-hidden="true" tabindex="-1">
    <img class="post-card-image" src="/content/images/card-{i}.jpg" alt=""></a>
  <div class="post-card-content">
    <a class="post-card-content-link" href="/stories/card-story-{i}/">
      <header class="post-card-header"><h3 class="post-card-title">Card story number {i} about the harbour</h3></header>
      <section class="post-card-excerpt"><p>Excerpt of card story {i}, long enough to be a teaser for it.</p></section>
    </a>
    <footer class="post-card-meta"><time class="post-card-meta-date" datetime="2026-05-0{i + 1}">{i + 1} May 2026</time></footer>
  </div></div></div>"""
        )
    rows_ = "".join(f'<div class="row">{"".join(cards[j : j + 3])}</div>' for j in (0, 3))
    return f"""<!doctype html><html><head><title>Stories — Ghost-like</title></head><body>
<header id="gh-head"><nav><a href="/">Home</a><a href="/about/">About</a><a href="/tag/harbour/">Harbour</a></nav></header>
<main id="site-main"><div class="container">{rows_}</div></main>
<aside class="sidebar"><h2>Popular</h2><a href="/stories/popular-one/">A popular story from the archive here</a>
<a href="/stories/popular-two/">Another popular story from the archive here</a></aside>
<footer class="site-footer"><a href="/privacy/">Privacy</a></footer></body></html>"""


def test_card_grid_gives_one_entry_per_card() -> None:
    feed = parse_listing(card_grid().encode(), HTML, "https://ghost.example.org/")
    assert titles(feed) == [f"Card story number {i} about the harbour" for i in range(6)]
    assert [e.link for e in feed.entries] == [
        f"https://ghost.example.org/stories/card-story-{i}/" for i in range(6)
    ]
    assert [e.image for e in feed.entries] == [
        f"https://ghost.example.org/content/images/card-{i}.jpg" for i in range(6)
    ]
    assert text_of(feed.entries[2].summary) == (
        "Excerpt of card story 2, long enough to be a teaser for it."
    )
    assert feed.entries[4].published == datetime(2026, 5, 5, tzinfo=UTC)


def drupal_table() -> str:
    body = "".join(
        f"""<tr class="{"odd" if i % 2 else "even"}">
  <td class="views-field views-field-title"><a href="/node/{100 + i}" hreflang="en">Minutes of the board meeting number {i}</a></td>
  <td class="views-field views-field-created"><time datetime="2026-04-{10 + i}T12:00:00Z">2026-04-{10 + i}</time></td>
  <td class="views-field views-field-uid"><a href="/user/{i}">editor{i}</a></td>
</tr>"""
        for i in range(4)
    )
    return f"""<!DOCTYPE html><html lang="en"><head><title>Board minutes | Drupal site</title></head><body>
<div class="region region-header"><nav role="navigation"><ul class="menu"><li><a href="/node/1">Home page of the site</a></li></ul></nav></div>
<div class="view view-minutes view-display-id-page"><div class="view-content">
<table class="views-table cols-3"><thead><tr><th>Title</th><th>Date</th><th>Author</th></tr></thead>
<tbody>{body}</tbody></table></div>
<nav class="pager" role="navigation"><ul class="pager__items"><li><a href="?page=1">Next page</a></li></ul></nav>
</div></body></html>"""


def test_drupal_views_table_rows_become_entries() -> None:
    feed = parse_listing(drupal_table().encode(), HTML, "https://drupal.example.net/minutes")
    assert titles(feed) == [f"Minutes of the board meeting number {i}" for i in range(4)]
    assert [e.link for e in feed.entries] == [
        f"https://drupal.example.net/node/{100 + i}" for i in range(4)
    ]
    assert [e.published for e in feed.entries] == [
        datetime(2026, 4, 10 + i, 12, tzinfo=UTC) for i in range(4)
    ]


def real(name: str) -> bytes:
    path = LISTINGS / "rsparser-netnewswire" / name
    if not path.exists():  # one copy of a page serves both the parse and the listing tests
        path = DATA / "feeds" / "rsparser-netnewswire" / name
    return path.read_bytes()


def test_wordpress_home_page_furbo() -> None:
    feed = parse_listing(real("furbo.html"), {"content-type": "text/html"}, "http://furbo.org/")
    assert titles(feed) == [
        "The Forensic Shit Show",
        "Strapped In",
        "The New iPod",
        "Clicker 1.1",  # a link post: the ► permalink is the link, the title beside it
        "A Responsive Factory",
    ]
    assert feed.entries[3].link == "http://furbo.org/2015/11/19/clicker-1-1/"
    assert feed.entries[1].published == datetime(2015, 12, 29, tzinfo=UTC)
    # the "Recent Writing" sidebar widget lists more posts: none of them is taken
    assert "http://furbo.org/2015/10/07/ipulse-3/" not in [e.link for e in feed.entries]


def test_hand_made_blog_inessential() -> None:
    feed = parse_listing(real("inessential.html"), {}, "http://inessential.com/")
    assert len(feed.entries) == 10
    assert titles(feed)[:3] == ["Lizcast", "OmniOutliner 4.5", "OmniDev"]
    assert feed.entries[0].link == "http://inessential.com/2016/03/04/lizcast"
    assert feed.entries[0].published == datetime(2016, 3, 4, tzinfo=UTC)
    assert text_of(feed.entries[0].summary).startswith("The Omni Group’s Liz Marley")


def test_link_blog_daring_fireball() -> None:
    feed = parse_listing(real("DaringFireball.html"), {}, "http://daringfireball.net/")
    assert len(feed.entries) == 36
    first = feed.entries[0]
    assert first.link == "http://daringfireball.net/linked/2016/03/03/salihin-kondoker"
    assert first.title == (
        "Apple Hosts Public Letter From San Bernardino Victim to Judge Sheri Pym (PDF)"
    )
    assert all(str(e.link).startswith("http://daringfireball.net/") for e in feed.entries)


def test_two_column_posts_sixcolors() -> None:
    feed = parse_listing(real("sixcolors.html"), {}, "https://sixcolors.com/")
    assert titles(feed)[:2] == [
        "Automate This: Connect to the Web with cURL",
        "Amazon Echo Dot and Sonos? Not… yet.",
    ]
    assert feed.entries[0].published == datetime(2016, 3, 4, 17, 12, tzinfo=UTC)  # 9:12 AM PT


def test_an_article_page_is_no_listing() -> None:
    url = "https://www.theatlantic.com/entertainment/archive/2017/11/coco/546695/"
    with pytest.raises(ParseError):
        parse_listing(real("coco.html"), {}, url)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("item", "div..story", "invalid CSS selector 'div..story'"),
        ("title", "h2 >> a", "invalid CSS selector"),
        ("date", "time[datetime@datetime", "invalid CSS selector"),
        ("item", "article@href", "'@attribute' is not allowed"),
        ("link_pattern", "(unclosed", "invalid regular expression"),
    ],
)
def test_invalid_selectors_are_config_errors_naming_feed_and_field(
    field: str, value: str, message: str
) -> None:
    raw = {
        "feeds": [
            {"url": "https://a.example/feed"},
            {"url": "https://b.example/news", "type": "html", "selectors": {field: value}},
        ]
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "feeds.yaml")
    text = str(info.value)
    assert text.startswith(
        f"feeds.yaml: feed #2 (https://b.example/news), field 'selectors.{field}': "
    )
    assert message in text


def test_valid_selectors_load() -> None:
    raw = {
        "feeds": [
            {
                "url": "https://b.example/news",
                "type": "html",
                "selectors": {"item": "li.story", "link": "a.title@href", "date": "@data-date"},
            }
        ]
    }
    spec = parse_config(raw, "feeds.yaml").feeds[0]
    assert spec.selectors == HtmlSelectors(item="li.story", link="a.title@href", date="@data-date")
    assert HtmlSelectors.split("a.title@href") == ("a.title", "href")
    assert HtmlSelectors.split('a[href$="x@y"]') == ('a[href$="x@y"]', None)


# ---------------------------------------------------------------- through the pipeline


def test_html_source_is_ingested_with_article_text(server: FixtureServer, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'agg.db'}"
    page = serve_news_site(server)
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": page, "type": "html", "name": "Local"}])
    summary = run_once(cfg, db_url)
    assert (summary.polled, summary.failed, summary.new_items) == (1, 0, len(STORIES))
    got = rows(db_url, "SELECT title, url, text_source, text FROM items ORDER BY title")
    assert sorted(r[0] for r in got) == sorted(t for t, _ in STORIES)
    assert {r[1] for r in got} == {server.url(f"/news/2026/story-{i}.html") for i in range(5)}
    assert all(r[2] == "article" for r in got)
    assert paragraph(10)[:60] in str(next(r[3] for r in got if r[0] == STORIES[0][0]))
    # the sidebar's stories were never fetched
    assert not server.hits("/news/2026/most-read-1.html")

    second = run_once(cfg, db_url)
    assert second.new_items == 0 and second.failed == 0


def test_html_source_with_selectors_through_the_pipeline(
    server: FixtureServer, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'agg.db'}"
    page = serve_news_site(server)
    selectors = {"item": "article.story", "title": "h2", "link": "h2 a", "summary": ".teaser"}
    cfg = write_config(
        tmp_path / "feeds.yaml",
        [{"url": page, "type": "html", "full_text": False, "selectors": selectors}],
    )
    summary = run_once(cfg, db_url)
    assert summary.new_items == len(STORIES)
    got = rows(db_url, "SELECT title, summary FROM items ORDER BY title")
    assert [r[0] for r in got] == sorted(t for t, _ in STORIES)
    assert all("Teaser" in str(r[1]) for r in got)


def test_feed_url_that_is_a_page_names_the_feeds_it_links(
    server: FixtureServer, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'agg.db'}"
    server.add("/blog/rss.xml", rss("Blog", []))
    page = server.add(
        "/blog/",
        """<!doctype html><html><head><title>Blog</title>
<link rel="alternate" type="application/rss+xml" title="Blog RSS" href="/blog/rss.xml">
<link rel="alternate" type="application/atom+xml" href="atom.xml"></head><body><p>hi</p></body></html>""",
        content_type="text/html",
    )
    bare = server.add(
        "/bare/", "<!doctype html><html><body>nothing</body></html>", content_type="text/html"
    )
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": page}, {"url": bare}])
    summary = run_once(cfg, db_url)
    assert summary.failed == 2
    errors = dict(summary.failures)
    assert errors[page] == (
        f"The document is an HTML page, not a feed; the page links to these feeds: "
        f"{server.url('/blog/rss.xml')} (RSS, 'Blog RSS'); {server.url('/blog/atom.xml')} (Atom)"
    )
    assert "links to no feed" in errors[bare] and "type: html" in errors[bare]


# ---------------------------------------------------------------- preview


def test_preview_prints_the_stories_without_a_database(
    server: FixtureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # the CLI's console was sized when it was imported: make it wide enough for full titles
    monkeypatch.setattr(cli_common.console, "width", 250)
    page = serve_news_site(server)
    cfg = write_config(tmp_path / "feeds.yaml", [])
    runner = CliRunner()
    result = runner.invoke(
        app, ["preview", page, "--type", "html", "--config", str(cfg)], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    assert "5 stories on the page" in result.output
    for title, _ in STORIES:
        assert title in result.output
    assert "2026-06-01 09:30" in result.output
    assert "Most read" not in result.output and "celebrity" not in result.output.lower()
    assert not list(tmp_path.rglob("*.db"))  # the store was not touched

    # selectors from the command line; a bad one is named
    result = runner.invoke(
        app,
        ["preview", page, "--item", "article.story", "--title", "h2", "--config", str(cfg)],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0 and STORIES[4][0] in result.output
    result = runner.invoke(app, ["preview", page, "--title", "h2 >>", "--config", str(cfg)])
    assert result.exit_code == 2 and "--title: invalid CSS selector" in result.output


def test_preview_respects_the_address_guard(server: FixtureServer, tmp_path: Path) -> None:
    page = serve_news_site(server)
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text("feeds: []\n")  # no allow_private_networks
    result = CliRunner().invoke(app, ["preview", page, "--config", str(cfg)])
    assert result.exit_code == 2
    assert "refused to connect" in result.output
    assert not server.requests
