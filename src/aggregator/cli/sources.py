"""`aggregator preview` and `aggregator discover`: try a source before adding it.

Both fetch through :class:`~aggregator.fetch.Fetcher` with the config's limits and
address guard (``allow_private_networks``), and never open the database. The parsing
stages (feedparser, bs4, dateparser, trafilatura) are imported inside the functions that
use them: every command module is imported for every command.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import typer
import yaml
from pydantic import ValidationError
from rich.table import Table

from ..app import fetch_limits
from ..config import DEFAULT_CONFIG, ENV_CONFIG, Config, SelectorsModel, Settings
from ..errors import FetchError, ParseError
from ..fetch import Fetcher
from ..records import FeedLink, FetchResult, HtmlSelectors, ParsedFeed
from .common import ConfigOpt, app, console, err, fail, load_or_exit

SUMMARY_CHARS = 80


def _settings(config: Path | None) -> Settings:
    """The config's settings when there is a config file, else the defaults."""
    if config is not None or os.environ.get(ENV_CONFIG) or Path(DEFAULT_CONFIG).exists():
        return load_or_exit(config, None).settings
    return Settings()


def _fetcher(settings: Settings) -> Fetcher:
    return Fetcher(fetch_limits(Config(path=None, settings=settings, feeds=())))


def _check(result: FetchResult) -> None:
    if result.status >= 400 or not result.body:
        raise FetchError(
            f"HTTP {result.status} from {result.final_url}"
            + ("" if result.body else " (empty body)"),
            url=result.url,
            status=result.status,
        )


# --------------------------------------------------------------------------- preview


@dataclass(frozen=True)
class Preview:
    feed: ParsedFeed
    final_url: str
    offered: tuple[FeedLink, ...] = ()  # feeds an HTML page links to
    as_listing: bool = False


async def preview_source(
    settings: Settings, url: str, source_type: str | None, selectors: HtmlSelectors | None
) -> Preview:
    from .. import discovery, listing, parse

    async with _fetcher(settings) as fetcher:
        result = await fetcher.fetch(url, page=source_type == "html")
    _check(result)
    body, headers, base = result.body, result.headers, result.final_url
    if source_type == "html" or selectors is not None:
        return Preview(listing.parse_listing(body, headers, base, selectors), base, as_listing=True)
    try:
        return Preview(parse.parse_feed(body, headers, base), base)
    except ParseError:
        if source_type == "feed" or not parse.looks_like_html(body, headers):
            raise
    offered = discovery.feed_links(body, headers, base)
    return Preview(listing.parse_listing(body, headers, base), base, offered, as_listing=True)


def _selectors(values: dict[str, str | None]) -> HtmlSelectors | None:
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        return None
    try:
        model = SelectorsModel.model_validate(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        option = "--" + str(first["loc"][0]).replace("_", "-")
        message = str(first["msg"]).removeprefix("Value error, ")
        raise fail(f"{option}: {message}") from None
    return HtmlSelectors(**model.model_dump())


def _summary_start(summary: str | None) -> str:
    if not summary:
        return ""
    from .. import extract

    text = " ".join(extract.html_to_text(summary).split())
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1].rstrip() + "…"


SelectorOpt = Annotated[
    str | None, typer.Option(metavar="CSS", help="CSS selector (with @attr for attributes)")
]


@app.command()
def preview(
    url: Annotated[str, typer.Argument(help="the page or feed to try")],
    source_type: Annotated[
        Literal["feed", "html"] | None,
        typer.Option(
            "--type",
            metavar="feed|html",
            help="feed or html (default: a feed, else the page's stories)",
        ),
    ] = None,
    item: Annotated[
        str | None, typer.Option(metavar="CSS", help="CSS selector of one story block")
    ] = None,
    title: SelectorOpt = None,
    link: SelectorOpt = None,
    summary: SelectorOpt = None,
    date: SelectorOpt = None,
    link_pattern: Annotated[
        str | None,
        typer.Option("--link-pattern", metavar="REGEX", help="regex story links must match"),
    ] = None,
    limit: Annotated[
        int, typer.Option(metavar="N", help="show at most this many entries", min=1)
    ] = 50,
    config: ConfigOpt = None,
) -> None:
    """Fetch a source once and show what would be ingested (the store is not touched)."""
    selectors = _selectors(
        {
            "item": item,
            "title": title,
            "link": link,
            "summary": summary,
            "date": date,
            "link_pattern": link_pattern,
        }
    )
    if selectors is not None and source_type == "feed":
        raise fail("selectors only apply to --type html")
    settings = _settings(config)
    try:
        result = asyncio.run(preview_source(settings, url, source_type, selectors))
    except (FetchError, ParseError) as exc:
        raise fail(str(exc)) from None
    feed = result.feed
    what = "stories on the page" if result.as_listing else f"entries ({feed.kind})"
    console.print(
        f"[bold]{len(feed.entries)}[/] {what} at {result.final_url}"
        + (f" — {feed.title}" if feed.title else ""),
        highlight=False,
    )
    table = Table(show_header=True, show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("title", overflow="fold")
    table.add_column("link", overflow="fold")
    table.add_column("date", no_wrap=True)
    table.add_column("summary", overflow="fold")
    for index, entry in enumerate(feed.entries[:limit], 1):
        date_text = entry.published or entry.updated
        table.add_row(
            str(index),
            entry.title or "",
            entry.link or "",
            date_text.strftime("%Y-%m-%d %H:%M") if date_text else "",
            _summary_start(entry.summary or entry.content),
        )
    console.print(table)
    if len(feed.entries) > limit:
        console.print(f"… and {len(feed.entries) - limit} more", highlight=False)
    if result.offered:
        console.print("This page is no feed, but it links to these feeds:", highlight=False)
        for offered in result.offered:
            console.print(f"  {offered.url} ({offered.kind})", highlight=False)
    elif result.as_listing and selectors is None and source_type is None:
        console.print(
            "This page is no feed; add it with type: html to follow the stories above.",
            highlight=False,
        )


# --------------------------------------------------------------------------- discover


@dataclass(frozen=True)
class Found:
    url: str
    kind: str
    title: str | None
    linked: bool  # from the page's <link rel=alternate> (else a common path that worked)
    problem: str | None = None  # linked, but it did not load as a feed


async def discover_feeds(settings: Settings, url: str, probe: bool) -> tuple[str, list[Found]]:
    """Feeds a site offers: the page's alternate links, then common paths."""
    from .. import discovery, parse

    async with _fetcher(settings) as fetcher:
        page = await fetcher.fetch(url, page=True)
        _check(page)
        try:
            feed = parse.parse_feed(page.body, page.headers, page.final_url)
        except ParseError:
            pass
        else:  # the URL is a feed already
            return page.final_url, [Found(page.final_url, feed.kind, feed.title, True)]
        links = discovery.feed_links(page.body, page.headers, page.final_url)
        found = list(await asyncio.gather(*(_try_feed(fetcher, link) for link in links)))
        if probe or not links:
            seen = {f.url for f in found}
            candidates = [u for u in discovery.candidate_urls(page.final_url) if u not in seen]
            probed = await asyncio.gather(
                *(_try_feed(fetcher, FeedLink(u, "feed"), linked=False) for u in candidates)
            )
            known = {f.url for f in found}
            for item in probed:
                if item.problem is None and item.url not in known:
                    found.append(item)
                    known.add(item.url)
        return page.final_url, found


async def _try_feed(fetcher: Fetcher, link: FeedLink, *, linked: bool = True) -> Found:
    from .. import parse

    try:
        result = await fetcher.fetch(link.url)
        _check(result)
        feed = parse.parse_feed(result.body, result.headers, result.final_url)
    except (FetchError, ParseError) as exc:
        return Found(link.url, link.kind, link.title, linked, problem=str(exc))
    # a redirect to a feed counts as the feed itself (e.g. /feed → /feed/)
    final = result.final_url if not linked else link.url
    return Found(final, _kind(feed.kind, link.kind), link.title or feed.title, linked)


def _kind(parsed: str, declared: str) -> str:
    if parsed.startswith("atom"):
        return "Atom"
    if parsed.startswith("rss09") or parsed.startswith("rss2"):
        return "RSS"
    if parsed.startswith("rss1"):
        return "RDF"
    if parsed.startswith("json"):
        return "JSON Feed"
    return declared


def feeds_yaml_entries(found: list[Found]) -> str:
    """Ready-to-paste feeds.yaml entries (the working feeds)."""
    entries = []
    for item in found:
        if item.problem is not None:
            continue
        entry: dict[str, str] = {"url": item.url}
        if item.title:
            entry["name"] = item.title
        entries.append(entry)
    if not entries:
        return ""
    text: str = yaml.safe_dump(entries, sort_keys=False, allow_unicode=True, width=1000)
    return text


@app.command()
def discover(
    url: Annotated[str, typer.Argument(help="a page of the site")],
    probe: Annotated[
        bool, typer.Option("--probe", help="also try common feed paths when the page links feeds")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Find the feeds a site offers and print them as feeds.yaml entries."""
    settings = _settings(config)
    try:
        final_url, found = asyncio.run(discover_feeds(settings, url, probe))
    except FetchError as exc:
        raise fail(str(exc)) from None
    working = [f for f in found if f.problem is None]
    for item in found:
        how = "linked from the page" if item.linked else "found at a common path"
        if item.problem is None:
            err.print(f"found {item.kind} feed {item.url} ({how})", highlight=False)
        else:
            err.print(f"linked feed {item.url} does not load: {item.problem}", highlight=False)
    if not working:
        err.print(
            f"no feed found for {final_url}; its stories can be followed as an HTML source:",
            highlight=False,
        )
        console.print(
            yaml.safe_dump([{"url": final_url, "type": "html"}], sort_keys=False),
            end="",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(1)
    console.print("# paste under feeds: in feeds.yaml", highlight=False, markup=False)
    console.print(feeds_yaml_entries(found), end="", highlight=False, markup=False, soft_wrap=True)
