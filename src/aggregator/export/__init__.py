"""Exports: the aggregate rendered as Atom, RSS, JSON Feed, JSONL, CSV, an HTML digest
or OPML, one small module per format, streamed from store queries and written
atomically. See docs/exports.md."""

from .atomic import write_atomic
from .run import (
    DEFAULT_FEED_LIMIT,
    FEED_FORMATS,
    FORMATS,
    MAX_LIMIT,
    ExportRequest,
    Format,
    build_filter,
    request_for,
    run_scheduled,
    stream,
    with_defaults,
)
from .when import parse_when

__all__ = [
    "DEFAULT_FEED_LIMIT",
    "FEED_FORMATS",
    "FORMATS",
    "MAX_LIMIT",
    "ExportRequest",
    "Format",
    "build_filter",
    "parse_when",
    "request_for",
    "run_scheduled",
    "stream",
    "with_defaults",
    "write_atomic",
]
