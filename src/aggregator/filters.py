"""Entry filters: which entries of a feed are dropped before anything else is done with them.

Pure: compiled rules (``records.FilterRule``) and an entry's fields in, a decision out.

- A ``block`` rule drops an entry when its pattern matches one of the rule's fields.
- ``keep`` rules, when a feed has any (its own or the global ones), drop every entry that
  matches none of them.
- ``block_words`` / ``keep_words`` are the same with a list of plain words or phrases,
  matched as whole words, case-insensitively (compiled by :func:`words_pattern`).

Fields: ``title``, ``link``, ``author``, ``tags`` (each tag on its own), ``summary`` and
``content`` (their text: the sanitized HTML with its tags removed and entities decoded).
Patterns are matched with the ``regex`` package (Python ``re`` syntax, its ``VERSION0``
mode): it is several times faster than ``re`` on case-insensitive patterns, releases the
GIL while it matches (the pipeline screens entries in a thread, not on its event loop),
and takes a timeout. The patterns are the operator's own, but a pattern that backtracks
badly must not hang a poll: a rule reads at most ``SCAN_CHARS`` characters of each field,
and one search may take at most ``MATCH_TIMEOUT`` seconds; a rule that runs out of time is
taken as *not matching* for a block rule and as *matching* for a keep rule (the entry is
kept, nothing is lost), is not asked again during that poll, and the poll says so.

The pipeline asks only about entries that are neither items nor blocked already under
the same rules (:class:`Screen`); the rules' :func:`fingerprint` is remembered with each
blocked entry, so a changed rule set evaluates them again on the next poll.
"""

from __future__ import annotations

import functools
import hashlib
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import regex

from .records import (
    BlockedChanges,
    BlockedEntry,
    CleanEntry,
    FilterField,
    FilterRule,
    FilterRules,
)

SCAN_CHARS = 10_000  # characters of each field a rule scans
MATCH_TIMEOUT = 0.1  # seconds one search of one rule in one field may take
MATCHING = "filters-1"  # how fields are read: part of the fingerprint
_TAG = re.compile(r"<[^>]*>")
NO_KEEP_MATCH = "no keep rule matched"


def compile_pattern(pattern: str) -> Any:
    """The compiled pattern (``regex``, ``re``-compatible syntax); raises ValueError with
    the compiler's message for an invalid one."""
    try:
        return _compiled(pattern)
    except regex.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> Any:
    return regex.compile(pattern, regex.VERSION0)


def words_pattern(words: Sequence[str]) -> str:
    """A regex matching any of the words or phrases, whole and case-insensitively
    (``C++`` and ``e-mail`` included: the edges are "no word character", not ``\\b``)."""
    parts = []
    for word in words:
        tokens = [re.escape(t) for t in word.split()]
        if tokens:
            parts.append(r"\s+".join(tokens))
    return r"(?i)(?<!\w)(?:" + "|".join(parts) + r")(?!\w)"


def fingerprint(rules: Iterable[FilterRule]) -> str:
    """A hash of the rules as written (action, pattern, flags, fields) and of how fields
    are read: equal for the same rules, different when any rule changed."""
    digest = hashlib.sha256(MATCHING.encode())
    for rule in rules:
        for part in (rule.action, rule.pattern, *rule.fields):
            digest.update(part.encode("utf-8", "replace"))
            digest.update(b"\x00")
        digest.update(b"\x01")
    return digest.hexdigest()


def html_text(value: str | None) -> str:
    """The text of (sanitized) HTML as a rule reads it, at most ``SCAN_CHARS`` long."""
    if not value:
        return ""
    text = html.unescape(_TAG.sub(" ", value[: SCAN_CHARS * 4]))
    return " ".join(text.split())[:SCAN_CHARS]


@dataclass(frozen=True)
class EntryFields:
    """What the rules read of one entry."""

    title: str = ""
    link: str = ""
    author: str = ""
    tags: tuple[str, ...] = ()
    summary: str = ""  # text, not HTML
    content: str = ""

    @classmethod
    def of(
        cls,
        *,
        title: str | None,
        link: str | None,
        author: str | None,
        tags: Sequence[str],
        summary_html: str | None,
        content_html: str | None,
    ) -> EntryFields:
        return cls(
            title=(title or "")[:SCAN_CHARS],
            link=(link or "")[:SCAN_CHARS],
            author=(author or "")[:SCAN_CHARS],
            tags=tuple(t[:SCAN_CHARS] for t in tags),
            summary=html_text(summary_html),
            content=html_text(content_html),
        )

    @classmethod
    def of_clean(cls, clean: CleanEntry) -> EntryFields:
        entry = clean.entry
        return cls.of(
            title=entry.title,
            link=entry.link,
            author=entry.author,
            tags=entry.tags,
            summary_html=clean.summary,
            content_html=clean.content,
        )

    def values(self, field: FilterField) -> tuple[str, ...]:
        if field == "tags":
            return self.tags
        value: str = getattr(self, field)
        return (value,) if value else ()


@dataclass
class Budget:
    """The rules that ran out of time during one poll (see ``MATCH_TIMEOUT``)."""

    timed_out: set[str] = field(default_factory=set)  # their labels


def matches(rule: FilterRule, fields: EntryFields, budget: Budget | None = None) -> bool:
    """Does the rule's pattern match one of its fields? A search that takes longer than
    ``MATCH_TIMEOUT`` counts as no match for a block rule and as a match for a keep rule
    (the entry is kept), and that rule is not asked again within ``budget``."""
    budget = budget if budget is not None else Budget()
    if rule.label in budget.timed_out:
        return rule.action == "keep"
    pattern = _compiled(rule.pattern)
    try:
        return any(
            pattern.search(value, timeout=MATCH_TIMEOUT, concurrent=True) is not None
            for name in rule.fields
            for value in fields.values(name)
        )
    except TimeoutError:
        budget.timed_out.add(rule.label)
        return rule.action == "keep"


def decide(
    rules: FilterRules | None, fields: EntryFields, budget: Budget | None = None
) -> str | None:
    """Why the entry is dropped (the label of the first block rule that matches, or
    ``no keep rule matched``), or None when it is kept."""
    if rules is None:
        return None
    keeps = False
    kept = False
    for rule in rules.rules:
        if rule.action == "block":
            if matches(rule, fields, budget):
                return rule.label
        else:
            keeps = True
            kept = kept or matches(rule, fields, budget)
    if keeps and not kept:
        return NO_KEEP_MATCH
    return None


class Screen:
    """One poll's filter step over the entries that are not items yet.

    ``remembered``: the feed's blocked entries (key → the fingerprint of the rules that
    blocked it). An entry remembered under the current rules is dropped without being
    evaluated; any other is evaluated. :meth:`changes` says what to remember afterwards."""

    def __init__(self, rules: FilterRules | None, remembered: Mapping[str, str]) -> None:
        self.rules = rules
        self.remembered = remembered
        self.added: list[BlockedEntry] = []
        self.still: set[str] = set()  # remembered under the current rules, still in the feed
        self.budget = Budget()

    def drops(self, clean: CleanEntry) -> bool:
        key = clean.entry.key
        if self.rules is None:
            return False
        if self.remembered.get(key) == self.rules.fingerprint:
            self.still.add(key)
            return True
        reason = decide(self.rules, EntryFields.of_clean(clean), self.budget)
        if reason is None:
            return False
        self.added.append(BlockedEntry(key, reason, clean.entry.title, clean.entry.link))
        return True

    def kept(self, entries: Sequence[CleanEntry]) -> list[CleanEntry]:
        """The entries not dropped, in order (CPU work: the pipeline runs it in a thread)."""
        return [clean for clean in entries if not self.drops(clean)]

    @property
    def blocked(self) -> int:
        """Entries of this document dropped, remembered or evaluated now."""
        return len(self.still) + len(self.added)

    def changes(self) -> BlockedChanges | None:
        """Rows to write (the entries blocked now) and to delete (remembered entries that
        left the document or are kept now); None when there is nothing to change."""
        added = {b.key for b in self.added}
        forget = tuple(k for k in self.remembered if k not in self.still and k not in added)
        if not self.added and not forget:
            return None
        fp = self.rules.fingerprint if self.rules is not None else ""
        return BlockedChanges(fp, tuple(self.added), forget)
