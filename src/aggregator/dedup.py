"""Which story does an item belong to? Pure functions, no I/O.

For now: exact deduplication by canonical URL. ``canonical_url`` strips tracking
parameters (utm_*, fbclid, gclid, …) through courlan, drops fragments and default
ports, lowercases scheme and host and sorts the query.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

import courlan

from .records import CleanEntry, StoryCandidate, StoryDecision


def canonical_url(url: str | None) -> str | None:
    """The URL that identifies a page regardless of tracking parameters and fragments."""
    if not url:
        return None
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    try:
        normalized = courlan.normalize_url(url, strict=False, trailing_slash=True)
    except (ValueError, AttributeError):
        normalized = url
    parts = urlsplit(normalized)
    host = (parts.hostname or "").lower()
    port = parts.port
    scheme = parts.scheme.lower()
    if port is not None and not (
        (scheme == "http" and port == 80) or (scheme == "https" and port == 443)
    ):
        host = f"{host}:{port}"
    path = parts.path or "/"
    return urlunsplit((scheme, host, path, parts.query, ""))


def decide_story(clean: CleanEntry, candidates: Sequence[StoryCandidate]) -> StoryDecision:
    """Same story as a candidate with the same canonical URL, else a new story."""
    canonical = clean.canonical_url
    if canonical:
        for candidate in candidates:
            if candidate.canonical_url == canonical:
                return StoryDecision(candidate.story_id, 1.0, "canonical_url")
    return StoryDecision(None, 0.0, "new")
