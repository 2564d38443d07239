"""Entry filters: which entries of a feed are dropped before anything else is done with them.

Pure: compiled rules (``records.FilterRule``) and an entry's fields in, a decision out.

- A ``block`` rule drops an entry when its pattern matches one of the rule's fields.
- ``keep`` rules, when a feed has any (its own or the global ones), drop every entry that
  matches none of them.
- ``block_words`` / ``keep_words`` are the same with a list of plain words or phrases,
  matched as whole words, case-insensitively (compiled by :func:`words_pattern`).

Fields: ``title``, ``link``, ``author``, ``tags`` (each tag on its own), ``summary`` and
``content`` (their text: the sanitized HTML with its tags removed and entities decoded).
A rule scans at most ``SCAN_CHARS`` characters of each field: the patterns are the
operator's own, but a pattern that backtracks badly (``(a+)+$``) then costs a bounded time
per entry instead of hanging the poll on a long article.

The pipeline asks only about entries that are neither items nor blocked already under
the same rules (:class:`Screen`); the rules' :func:`fingerprint` is remembered with each
blocked entry, so a changed rule set evaluates them again on the next poll.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .records import (
    BlockedChanges,
    BlockedEntry,
    CleanEntry,
    FilterField,
    FilterRule,
    FilterRules,
)

SCAN_CHARS = 10_000  # characters of each field a rule scans
MATCHING = "filters-1"  # how fields are read: part of the fingerprint
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
NO_KEEP_MATCH = "no keep rule matched"


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
        for part in (rule.action, rule.pattern.pattern, str(rule.pattern.flags), *rule.fields):
            digest.update(part.encode("utf-8", "replace"))
            digest.update(b"\x00")
        digest.update(b"\x01")
    return digest.hexdigest()


def html_text(value: str | None) -> str:
    """The text of (sanitized) HTML as a rule reads it, at most ``SCAN_CHARS`` long."""
    if not value:
        return ""
    text = html.unescape(_TAG.sub(" ", value[: SCAN_CHARS * 4]))
    return _SPACE.sub(" ", text).strip()[:SCAN_CHARS]


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


def matches(rule: FilterRule, fields: EntryFields) -> bool:
    return any(
        rule.pattern.search(value) is not None
        for field in rule.fields
        for value in fields.values(field)
    )


def decide(rules: FilterRules | None, fields: EntryFields) -> str | None:
    """Why the entry is dropped (the label of the first block rule that matches, or
    ``no keep rule matched``), or None when it is kept."""
    if rules is None:
        return None
    keeps = False
    kept = False
    for rule in rules.rules:
        if rule.action == "block":
            if matches(rule, fields):
                return rule.label
        else:
            keeps = True
            kept = kept or matches(rule, fields)
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

    def drops(self, clean: CleanEntry) -> bool:
        key = clean.entry.key
        if self.rules is None:
            return False
        if self.remembered.get(key) == self.rules.fingerprint:
            self.still.add(key)
            return True
        reason = decide(self.rules, EntryFields.of_clean(clean))
        if reason is None:
            return False
        self.added.append(BlockedEntry(key, reason, clean.entry.title, clean.entry.link))
        return True

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
