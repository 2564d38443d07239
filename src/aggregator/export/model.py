"""What the entry formats render: one ``Entry`` per story (or per item), already clean.

Conversion from store records happens once, here; the renderers (Atom, RSS, JSON
Feed, the HTML digest) only lay out values that are safe to show.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Literal

from ..records import FeedSpec
from ..store.queries import ItemRecord, SourceRecord, StoryRecord
from .clean import (
    clean_line,
    clean_text,
    html_to_line,
    safe_url,
    sanitize_html,
    teaser,
    text_to_html,
)

TAG_AUTHORITY = "tag:aggregator,2026:"
UNTITLED = "(untitled)"


@dataclass(frozen=True)
class Source:
    """A feed that carried the entry; ``url`` is that feed's link to it (safe or None)."""

    name: str
    feed_url: str | None
    url: str | None
    first_seen_at: datetime


@dataclass(frozen=True)
class Entry:
    id: str  # a tag: URI, stable for the story or item
    kind: Literal["story", "item"]
    story_id: int | None
    item_id: int  # the item shown (the story's representative)
    title: str
    url: str | None  # safe http(s) or None
    teaser: str  # plain text, one line
    content_html: str  # sanitized HTML (content, else summary, else text)
    text: str  # plain text
    author: str | None
    published: datetime | None
    updated: datetime
    first_seen_at: datetime
    sources: tuple[Source, ...]
    tags: tuple[str, ...] = ()
    language: str | None = None

    @property
    def source_count(self) -> int:
        return len({s.feed_url or s.name for s in self.sources})

    def content_with_sources(self) -> str:
        """The content HTML followed by a paragraph naming every source."""
        links = []
        for source in self.sources:
            name = html.escape(source.name)
            if source.url:
                links.append(f'<a href="{html.escape(source.url)}">{name}</a>')
            else:
                links.append(name)
        sources = f"<p>Sources: {', '.join(links)}</p>" if links else ""
        return self.content_html + sources


@dataclass(frozen=True)
class FeedMeta:
    """Feed-level values: title, links, when it was generated, the period covered."""

    title: str
    link: str  # the site (or server) the feed belongs to
    generated_at: datetime
    feed_url: str | None = None  # where this document is published, if known
    since: datetime | None = None
    until: datetime | None = None
    description: str = "Stories gathered by the aggregator"
    feeds: tuple[FeedSpec, ...] = field(default_factory=tuple)
    tz: tzinfo = UTC  # how the HTML digest shows times


def _source(record: SourceRecord | ItemRecord) -> Source:
    return Source(
        name=clean_line(record.feed_label) or "(unnamed feed)",
        feed_url=safe_url(record.feed_url),
        url=safe_url(record.url),
        first_seen_at=record.first_seen_at,
    )


def _body(item: ItemRecord) -> tuple[str, str, str]:
    """(teaser, content html, text) of an item, every part sanitized."""
    content = sanitize_html(item.content) or sanitize_html(item.summary)
    text = clean_text(item.text)
    if not content:
        content = text_to_html(text)
    summary = teaser(text) or teaser(html_to_line(item.summary)) or teaser(html_to_line(content))
    return summary, content, text


def entry_from_item(item: ItemRecord) -> Entry:
    summary, content, text = _body(item)
    return Entry(
        id=f"{TAG_AUTHORITY}item:{item.id}",
        kind="item",
        story_id=item.story_id,
        item_id=item.id,
        title=clean_line(item.title) or UNTITLED,
        url=safe_url(item.url),
        teaser=summary,
        content_html=content,
        text=text,
        author=clean_line(item.author) or None,
        published=item.published_at,
        updated=item.updated_at,
        first_seen_at=item.first_seen_at,
        sources=(_source(item),),
        tags=tuple(dict.fromkeys(clean_line(t) for t in item.feed_tags if clean_line(t))),
        language=clean_line(item.language) or None,
    )


def entry_from_story(story: StoryRecord) -> Entry:
    rep = story.representative
    summary, content, text = _body(rep)
    sources = tuple(_source(s) for s in story.sources) or (_source(rep),)
    tags = dict.fromkeys(clean_line(t) for s in story.sources for t in s.feed_tags)
    tags.pop("", None)
    return Entry(
        id=f"{TAG_AUTHORITY}story:{story.id}",
        kind="story",
        story_id=story.id,
        item_id=rep.id,
        title=clean_line(story.title) or clean_line(rep.title) or UNTITLED,
        url=safe_url(story.url) or safe_url(rep.url),
        teaser=summary,
        content_html=content,
        text=text,
        author=clean_line(rep.author) or None,
        published=rep.published_at,
        updated=max(story.last_seen_at, rep.updated_at),
        first_seen_at=story.first_seen_at,
        sources=sources,
        tags=tuple(tags),
        language=clean_line(rep.language) or None,
    )


def entries_from_items(records: Iterable[ItemRecord]) -> Iterator[Entry]:
    return (entry_from_item(r) for r in records)


def entries_from_stories(records: Iterable[StoryRecord]) -> Iterator[Entry]:
    return (entry_from_story(r) for r in records)
