"""`aggregator stories …`: stories merged across sources, and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from ..config import parse_duration
from ..store.fingerprints import StoryRow
from .common import (
    ConfigOpt,
    DatabaseOpt,
    app,
    console,
    fail,
    fmt_ts,
    load_or_exit,
    open_read_only_or_exit,
)

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
        str, typer.Option("--since", help="stories first seen within this duration (24h, 7d)")
    ] = "24h",
    min_sources: Annotated[
        int, typer.Option("--min-sources", min=1, help="only stories from this many feeds")
    ] = 2,
    limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, one story each")] = False,
    config: ConfigOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """List recent stories with their sources (``stories explain ID`` for one story)."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise fail(f"--since: {exc}") from None
    cfg = load_or_exit(config, database)
    store = open_read_only_or_exit(cfg.database_url)
    try:
        rows = store.list_stories(
            datetime.now(UTC) - timedelta(seconds=window), min_sources=min_sources, limit=limit
        )
    finally:
        store.close()
    if as_json:
        for story in rows:
            print(json.dumps(_story_json(story), ensure_ascii=False))
        return
    if not rows:
        console.print(f"no story with {min_sources}+ sources first seen in the last {since}")
        return
    for story in rows:
        table = Table(
            title=f"story {story.id}: {story.title or '(untitled)'}",
            title_justify="left",
            show_header=True,
        )
        for column in ("item", "feed", "title", "url", "first seen", "why"):
            table.add_column(column, overflow="fold")
        for s in story.sources:
            why = f"{s.reason} {s.score:.2f}" if s.reason and s.score is not None else ""
            table.add_row(
                str(s.item_id), s.feed, s.title or "", s.url or "", fmt_ts(s.first_seen_at), why
            )
        console.print(table)


@stories_app.command("explain")
def stories_explain(
    story_id: Annotated[int, typer.Argument(help="the story's id")],
    config: ConfigOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """Show why a story's items were merged: each item's decision, and story merges."""
    cfg = load_or_exit(config, database)
    store = open_read_only_or_exit(cfg.database_url)
    try:
        found = store.explain_story(story_id)
    finally:
        store.close()
    if found is None:
        raise fail(f"no story {story_id}")
    story = found.story
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
            why = f"{s.reason}{score}{match}"
        table.add_row(str(s.item_id), s.feed, s.title or "", fmt_ts(s.first_seen_at), why)
    console.print(table)
    for m in found.merges:
        console.print(
            f"merged story {m.merged_story_id} ({m.merged_title or 'untitled'}, "
            f"{m.merged_item_count} items) at {fmt_ts(m.merged_at)}: item {m.item_id} "
            f"matched both ({m.reason} {m.score or 0:.2f})",
            highlight=False,
        )
