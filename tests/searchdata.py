"""Entries and a search for the full-text index tests (SQLite's and PostgreSQL's queue)."""

from __future__ import annotations

import hashlib

from aggregator.records import CleanEntry, ParsedEntry
from aggregator.store import Store
from aggregator.store.queries import ExportFilter, Queries


def entry(n: int, word: str) -> CleanEntry:
    """Entry ``n`` of https://q.example/, titled ``"<word> <n>"``, its text naming ``word``."""
    body = f"Report {n} about the {word} and nothing else of note here today."
    parsed = ParsedEntry(
        key=f"guid:{n}", guid=str(n), link=f"https://q.example/{n}", title=f"{word} {n}"
    )
    return CleanEntry(
        parsed, parsed.link, None, None, body, hashlib.sha1(body.encode()).hexdigest()
    )


def found(store: Store, word: str) -> set[str]:
    """The titles of the items a search for ``word`` lists."""
    return {i.title or "" for i in Queries(store).iter_items(ExportFilter(search=word))}
