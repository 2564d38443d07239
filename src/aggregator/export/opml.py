"""OPML 2.0: the configured feeds, with their names and tags."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from email.utils import format_datetime
from xml.sax.saxutils import escape, quoteattr

from ..records import FeedSpec
from .clean import clean_line, strip_controls
from .model import FeedMeta

MEDIA_TYPE = "text/x-opml; charset=utf-8"


def _attr(value: str) -> str:
    return quoteattr(strip_controls(value), {"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})


def render(feeds: Sequence[FeedSpec], meta: FeedMeta) -> Iterator[str]:
    yield '<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0">\n<head>\n'
    yield f"<title>{escape(clean_line(meta.title))}</title>\n"
    yield f"<dateCreated>{format_datetime(meta.generated_at, usegmt=True)}</dateCreated>\n"
    yield "</head>\n<body>\n"
    for feed in feeds:
        label = clean_line(feed.name) or feed.url
        attrs = [f"text={_attr(label)}", f"title={_attr(label)}"]
        if feed.type == "html":
            attrs += ['type="link"', f"url={_attr(feed.url)}"]
        else:
            attrs += ['type="rss"', f"xmlUrl={_attr(feed.url)}"]
        tags = [clean_line(t).replace(",", " ") for t in feed.tags if clean_line(t)]
        if tags:
            attrs.append(f"category={_attr(','.join(tags))}")
        yield f"<outline {' '.join(attrs)}/>\n"
    yield "</body>\n</opml>\n"
