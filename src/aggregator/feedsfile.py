"""Edit ``feeds.yaml`` text in place: add subscriptions, keep comments, order and layout.

Pure: text in, text out (the caller reads, validates and writes the file). Uses
ruamel.yaml's round-trip mode, which keeps comments, key order, quoting and the
indentation it guesses from the file. A subscription whose URL is already in the
file (compared without scheme, ``www.``, trailing slash and case of the host) is
skipped and reported, as is a repeat within the list being added.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from aggregator.errors import ConfigError
from aggregator.records import Subscription, url_key

_KEY = re.compile(r"^[\w.-]+\s*:(\s|$)")

__all__ = ["AddReport", "add_subscriptions", "url_key"]


@dataclass
class AddReport:
    added: list[Subscription] = field(default_factory=list)
    duplicates: list[tuple[Subscription, str]] = field(default_factory=list)  # (sub, existing)
    invalid: list[tuple[Subscription, str]] = field(default_factory=list)  # (sub, why)


def _layout(text: str) -> tuple[int, int]:
    """(mapping indent, dash offset) as the file writes them; (2, 0) when it cannot tell."""
    mapping = 0
    offset: int | None = None
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        width = len(line) - len(stripped)
        if stripped.startswith("- ") and offset is None:
            offset = width
        elif width and not mapping and _KEY.match(stripped):
            mapping = width
    return mapping or 2, offset or 0


def add_subscriptions(
    text: str,
    subscriptions: Iterable[Subscription],
    *,
    source_type: str = "feed",
    path: str = "feeds.yaml",
) -> tuple[str, AddReport]:
    """Append the new subscriptions to the ``feeds:`` list of a feeds.yaml text."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    try:
        data = yaml.load(text) if text.strip() else None
    except YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise ConfigError(f"{path}: the top level must be a mapping with 'settings:' and 'feeds:'")
    feeds = data.get("feeds")
    if feeds is None:
        feeds = CommentedSeq()
        data["feeds"] = feeds
    if not isinstance(feeds, CommentedSeq):
        raise ConfigError(f"{path}: field 'feeds': must be a list")
    existing: dict[str, str] = {}
    for entry in feeds:
        if isinstance(entry, dict) and isinstance(entry.get("url"), str):
            existing.setdefault(url_key(entry["url"]), entry["url"])
    report = AddReport()
    for sub in subscriptions:
        parts = urlsplit(sub.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            report.invalid.append((sub, "not an http(s) URL with a host"))
            continue
        key = url_key(sub.url)
        if key in existing:
            report.duplicates.append((sub, existing[key]))
            continue
        existing[key] = sub.url
        entry = CommentedMap()
        entry["url"] = sub.url
        if sub.title:
            entry["name"] = sub.title
        if source_type != "feed":
            entry["type"] = source_type
        if sub.tags:
            tags = CommentedSeq(sub.tags)
            tags.fa.set_flow_style()
            entry["tags"] = tags
        feeds.append(entry)
        report.added.append(sub)
    if not report.added:
        return text, report
    mapping, offset = _layout(text)
    yaml.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue(), report
