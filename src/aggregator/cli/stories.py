"""`aggregator stories …`: stories merged across sources, and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from ..store.stories import StoryRow
from .common import (
    ConfigOpt,
    DatabaseOpt,
    app,
    console,
    fail,
    fmt_ts,
    load_or_exit,
    open_or_exit,
    open_read_only_or_exit,
    store_or_exit,
)
from .root import PipeConsole
from .tables import WHOLE_LINES, print_table

stories_app = typer.Typer(
    help="Stories: copies of one article from several sources, merged.",
    invoke_without_command=True,
)
app.add_typer(stories_app, name="stories")


def _story_json(story: StoryRow) -> dict[str, object]:
    return {
        "id": story.id,
        "title": story.title,
        "url": story.url,
        "first_seen_at": story.first_seen_at.isoformat(),
        "item_count": story.item_count,
        "representative_item_id": story.representative_item_id,
        "sources": [
            {
                "item_id": s.item_id,
                "feed": s.feed,
                "title": s.title,
                "url": s.url,
                "first_seen_at": s.first_seen_at.isoformat(),
                "reason": s.reason,
                "score": s.score,
                "matched_item_id": s.matched_item_id,
            }
            for s in story.sources
        ],
    }


@stories_app.callback()
def stories_list(
    ctx: typer.Context,
    since: Annotated[
        str,
        typer.Option(
            "--since", metavar="DURATION", help="stories first seen within this duration (24h, 7d)"
        ),
    ] = "24h",
    min_sources: Annotated[
        int,
        typer.Option(
            "--min-sources",
            min=1,
            max=2**63 - 1,
            metavar="N",
            help="only stories from this many feeds",
        ),
    ] = 2,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=2**63 - 1, metavar="N", help="at most this many")
    ] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, one story each")] = False,
    details: Annotated[
        bool,
        typer.Option("--details", help="a table per story: every source, and why it was merged"),
    ] = False,
    config: ConfigOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """List recent stories with their sources (``stories explain ID`` for one story)."""
    if ctx.invoked_subcommand is not None:
        return
    from ..export.when import duration_before  # one guard for every since/until

    try:
        cutoff = duration_before(datetime.now(UTC), since)
    except ValueError as exc:
        raise fail(f"--since: {exc}") from None
    cfg = load_or_exit(config, database)
    store = open_read_only_or_exit(cfg.database_url)
    try:
        rows = store.list_stories(cutoff, min_sources=min_sources, limit=limit)
    finally:
        store.close()
    if as_json:
        for story in rows:
            print(json.dumps(_story_json(story), ensure_ascii=False))
        return
    if not rows:
        console.print(f"no story with {min_sources}+ sources first seen in the last {since}")
        return
    if not details:
        _print_compact(rows)
        return
    for story in rows:
        print_table(
            console,
            ("item", "feed", "title", "url", "first seen", "why"),
            [
                (
                    str(s.item_id),
                    s.feed,
                    s.title or "",
                    s.url or "",
                    fmt_ts(s.first_seen_at),
                    f"{s.reason} {s.score:.2f}" if s.reason and s.score is not None else "",
                )
                for s in story.sources
            ],
            right=("item",),
            title=f"story {story.id}: {story.title or '(untitled)'}",
        )


def _print_compact(rows: list[StoryRow]) -> None:
    """One line per story: id, how many feeds, when first seen, title, the feeds. On a
    terminal the title and the feeds are cut to the line; into a pipe, lines are whole."""
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    table.add_column("story", justify="right", no_wrap=True)
    table.add_column("feeds", justify="right", no_wrap=True)
    table.add_column("first seen (UTC)", no_wrap=True)
    table.add_column("title", no_wrap=True, overflow="ellipsis", ratio=3)
    table.add_column("from", no_wrap=True, overflow="ellipsis", ratio=2)
    for story in rows:
        feeds = list(dict.fromkeys(s.feed for s in story.sources))
        first_seen = (
            story.first_seen_at.astimezone(UTC)
            if story.first_seen_at.tzinfo
            else story.first_seen_at
        )
        table.add_row(
            str(story.id),
            str(len(feeds)),
            f"{first_seen:%Y-%m-%d %H:%M}",
            story.title or "(untitled)",
            ", ".join(feeds),
        )
    out = console
    if console.is_terminal:
        table.expand = True  # the title and the feeds share what the line has left
    else:  # whole lines, however long
        for column in table.columns:
            column.ratio = None
        out = PipeConsole(width=WHOLE_LINES)
    out.print(table, highlight=False, markup=False)


@stories_app.command("explain")
def stories_explain(
    story_id: Annotated[int, typer.Argument(help="the story's id")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
    config: ConfigOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """Show why a story's items were merged: each item's decision (the rule that applied),
    where a URL was refused as an identity why, and story merges."""
    from ..dedup import RULES  # numpy with it: only for this command

    cfg = load_or_exit(config, database)
    store = open_read_only_or_exit(cfg.database_url)
    try:
        found = store.explain_story(story_id)
    finally:
        store.close()
    if found is None:
        raise fail(f"no story {story_id}")
    story = found.story
    if as_json:
        data = _story_json(story)
        data["requested_id"] = found.requested_id
        for source, out in zip(story.sources, data["sources"], strict=True):  # type: ignore[call-overload]
            out["rule"] = RULES.get(source.reason or "new")
            out["url_refusal"] = source.url_refusal
        data["merges"] = [
            {
                "merged_story_id": m.merged_story_id,
                "item_id": m.item_id,
                "reason": m.reason,
                "rule": RULES.get(m.reason or ""),
                "score": m.score,
                "merged_at": m.merged_at.isoformat(),
                "merged_title": m.merged_title,
                "merged_item_count": m.merged_item_count,
            }
            for m in found.merges
        ]
        print(json.dumps(data, ensure_ascii=False))
        return
    if found.requested_id != story.id:
        console.print(f"story {found.requested_id} was merged into story {story.id}")
    console.print(f"[bold]story {story.id}[/]: {story.title or '(untitled)'}", highlight=False)
    console.print(
        f"url {story.url or '-'} · first seen {fmt_ts(story.first_seen_at)} · "
        f"{story.item_count} items · representative item {story.representative_item_id} "
        "(the earliest full version)",
        highlight=False,
    )
    table = Table(show_header=True)
    for column in ("item", "feed", "title", "first seen", "decision"):
        table.add_column(column, overflow="fold")
    for s in story.sources:
        if s.reason in (None, "new"):
            why = "started the story"
        else:
            score = f" {s.score:.2f}" if s.score is not None else ""
            match = f" with item {s.matched_item_id}" if s.matched_item_id else ""
            rule = RULES.get(s.reason)
            why = f"{s.reason}{score}{match}" + (f" (rule: {rule})" if rule else "")
        if s.url_refusal:
            why += f"; URL not taken as identity: {s.url_refusal}"
        table.add_row(str(s.item_id), s.feed, s.title or "", fmt_ts(s.first_seen_at), why)
    console.print(table)
    for m in found.merges:
        rule = RULES.get(m.reason or "")
        console.print(
            f"merged story {m.merged_story_id} ({m.merged_title or 'untitled'}, "
            f"{m.merged_item_count} items) at {fmt_ts(m.merged_at)}: item {m.item_id} "
            f"matched both ({m.reason} {m.score or 0:.2f}"
            + (f"; rule: {rule}" if rule else "")
            + ")",
            highlight=False,
        )


@stories_app.command("rebuild")
def stories_rebuild(
    since: Annotated[
        str | None,
        typer.Option("--since", help="only items first seen within this duration (7d); all"),
    ] = None,
    batch: Annotated[
        int, typer.Option("--batch", min=1, max=10_000, help="items per transaction")
    ] = 200,
    config: ConfigOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """Re-decide the stories of stored items under the current dedup rules (safe while
    the daemon runs: short transactions of --batch items)."""
    from ..export.when import duration_before
    from ..ingest.rebuild import rebuild  # dedup (numpy) with it: only for this command

    start = None
    if since is not None:
        try:
            start = duration_before(datetime.now(UTC), since)
        except ValueError as exc:
            raise fail(f"--since: {exc}") from None
    cfg = load_or_exit(config, database)
    store = open_or_exit(cfg, migrate=True)

    with store_or_exit(store):
        result = rebuild(
            store,
            since=start,
            window=cfg.settings.dedup_window,
            now=datetime.now(UTC),
            batch=batch,
        )
    console.print(
        f"{result.items} items re-decided: {result.moved} moved to another story, "
        f"{result.stories_created} stories started, {result.stories_removed} stories "
        f"removed (their ids resolve to the story that took their items); "
        f"{result.urls_changed} canonical URLs or URL refusals recomputed",
        highlight=False,
    )
