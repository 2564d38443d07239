"""`aggregator preview` and `aggregator discover`: try a source before adding it.

Both fetch through :class:`~aggregator.fetch.Fetcher` with the config's limits, proxy
and address guard (``allow_private_networks``), and never open the database. A URL that
is a configured feed is previewed with that feed's own HTTP options and filters. The parsing
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
from rich.text import Text

from ..app import fetch_limits
from ..config import (
    DEFAULT_CONFIG,
    ENV_CONFIG,
    Config,
    SelectorsModel,
    Settings,
)
from ..configopts import FilterRuleModel, filter_rules
from ..errors import FetchError, ParseError
from ..fetch import Fetcher
from ..filters import EntryFields, decide, fingerprint
from ..records import (
    FeedLink,
    FeedSpec,
    FetchResult,
    FilterRule,
    FilterRules,
    HtmlSelectors,
    HttpOptions,
    ParsedEntry,
    ParsedFeed,
    url_key,
)
from .common import ConfigOpt, app, console, err, fail, load_or_exit

SUMMARY_CHARS = 80


def _config(config: Path | None) -> Config:
    """The config when there is a config file, else the defaults."""
    if config is not None or os.environ.get(ENV_CONFIG) or Path(DEFAULT_CONFIG).exists():
        return load_or_exit(config, None)
    return Config(path=None, settings=Settings(), feeds=())


def _fetcher(settings: Settings | Config) -> Fetcher:
    if isinstance(settings, Settings):
        settings = Config(path=None, settings=settings, feeds=())
    return Fetcher(fetch_limits(settings))


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
    settings: Settings | Config,
    url: str,
    source_type: str | None,
    selectors: HtmlSelectors | None,
    options: HttpOptions | None = None,
) -> Preview:
    from .. import discovery, listing, parse

    async with _fetcher(settings) as fetcher:
        result = await fetcher.fetch(url, page=source_type == "html", options=options)
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


def configured_feed(config: Config, url: str) -> FeedSpec | None:
    """The configured feed ``url`` names (spelled as ``feeds.yaml`` compares URLs)."""
    key = url_key(url)
    return next((spec for spec in config.feeds if url_key(spec.url) == key), None)


def preview_rules(
    config: Config, spec: FeedSpec | None, block: list[str], keep: list[str]
) -> FilterRules | None:
    """The filters a preview applies: the configured feed's (else the global ones), then
    the rules given as options. A bad regex in an option exits with code 2."""
    rules: tuple[FilterRule, ...] = (
        spec.filters.rules
        if spec is not None and spec.filters is not None
        else (filter_rules(config.settings.filters, "settings.filters") if spec is None else ())
    )
    for option, patterns in (("block", block), ("keep", keep)):
        for pattern in patterns:
            try:
                model = FilterRuleModel.model_validate({option: pattern})
            except ValidationError as exc:
                message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
                raise fail(f"--{option} {pattern!r}: {message}") from None
            rules += (model.rule(f"--{option}"),)
    return FilterRules(rules, fingerprint(rules)) if rules else None


def dropped_by(rules: FilterRules | None, entry: ParsedEntry) -> str | None:
    """Why the filters would drop the entry (None: kept), read as the daemon reads it:
    from the sanitized summary and content."""
    if rules is None:
        return None
    from .. import extract

    base = entry.base or entry.link or ""
    fields = EntryFields.of(
        title=entry.title,
        link=entry.link,
        author=entry.author,
        tags=entry.tags,
        summary_html=extract.sanitize_html(entry.summary, base) if entry.summary else None,
        content_html=extract.sanitize_html(entry.content, base) if entry.content else None,
    )
    return decide(rules, fields)


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
    block: Annotated[
        list[str] | None,
        typer.Option("--block", metavar="REGEX", help="try a block rule (title, summary, content)"),
    ] = None,
    keep: Annotated[
        list[str] | None,
        typer.Option("--keep", metavar="REGEX", help="try a keep rule (title, summary, content)"),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Fetch a source once and show what would be ingested (the store is not touched).

    A configured feed is fetched with its own HTTP options, and the entries its filters
    would drop are marked; --block / --keep add rules to try."""
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
    cfg = _config(config)
    spec = configured_feed(cfg, url)
    rules = preview_rules(cfg, spec, block or [], keep or [])
    options = spec.http if spec is not None else None
    try:
        result = asyncio.run(preview_source(cfg, url, source_type, selectors, options))
    except (FetchError, ParseError) as exc:
        raise fail(str(exc)) from None
    feed = result.feed
    drops = [dropped_by(rules, entry) for entry in feed.entries]
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
    if rules is not None:
        table.add_column("filters", overflow="fold")
    for index, entry in enumerate(feed.entries[:limit], 1):
        date_text = entry.published or entry.updated
        row: list[str | Text] = [
            str(index),
            entry.title or "",
            entry.link or "",
            date_text.strftime("%Y-%m-%d %H:%M") if date_text else "",
            _summary_start(entry.summary or entry.content),
        ]
        if rules is not None:
            reason = drops[index - 1]
            row.append(Text("kept" if reason is None else f"DROPPED: {reason}"))
        table.add_row(*row)
    console.print(table)
    if rules is not None:
        dropped = sum(1 for reason in drops if reason is not None)
        whose = "this feed's filters" if spec is not None else "the filters"
        console.print(
            f"{dropped} of {len(feed.entries)} entries would be dropped by {whose} "
            f"({len(rules.rules)} rules)",
            highlight=False,
            markup=False,
        )
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


async def discover_feeds(
    settings: Settings | Config, url: str, probe: bool
) -> tuple[str, list[Found]]:
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
    settings = _config(config)  # with settings.http_proxy
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
