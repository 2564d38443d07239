"""Exports: the aggregate rendered as Atom, RSS, JSON Feed, JSONL, CSV, an HTML digest
or OPML, one small module per format, streamed from store queries and written
atomically. See docs/exports.md."""

from .atomic import write_atomic
from .run import (
    FORMATS,
    ExportRequest,
    Format,
    build_filter,
    parse_when,
    request_for,
    run_scheduled,
    stream,
    with_default_window,
)

__all__ = [
    "FORMATS",
    "ExportRequest",
    "Format",
    "build_filter",
    "parse_when",
    "request_for",
    "run_scheduled",
    "stream",
    "with_default_window",
    "write_atomic",
]
