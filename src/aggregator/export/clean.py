"""Making feed-provided strings safe for every output format.

Feeds are written by strangers: titles carry markup, links carry ``javascript:``,
content carries scripts and event handlers, and any of them may carry control
characters that XML cannot even represent. Every renderer goes through here.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

import nh3

# Characters XML 1.0 cannot carry, plus the C1 controls and DEL: removed everywhere.
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_SPACE_RE = re.compile(r"\s+")
_URL_SCHEMES = {"http", "https"}
_HTML_URL_SCHEMES = {"http", "https", "mailto"}
_LINK_REL = "noopener noreferrer nofollow"


def strip_controls(value: str) -> str:
    """Remove control characters (tab, newline and carriage return stay)."""
    return _CONTROL_RE.sub("", value)


def clean_line(value: str | None) -> str:
    """One line of plain text: controls removed, whitespace collapsed."""
    if not value:
        return ""
    return _SPACE_RE.sub(" ", strip_controls(value)).strip()


def clean_text(value: str | None) -> str:
    """Plain text that may span lines: controls removed, line structure kept."""
    if not value:
        return ""
    return strip_controls(value).strip()


def safe_url(value: str | None) -> str | None:
    """An absolute http(s) URL, or None: ``javascript:``, ``data:`` and relative
    references never become links."""
    if not value:
        return None
    url = strip_controls(value).strip()
    if not url or any(c.isspace() for c in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in _URL_SCHEMES or not parts.hostname:
        return None
    return url


def sanitize_html(fragment: str | None) -> str:
    """HTML reduced to harmless markup: no scripts, styles, event handlers or
    ``javascript:`` URLs; links get ``rel="noopener noreferrer nofollow"``."""
    if not fragment or not fragment.strip():
        return ""
    return strip_controls(
        nh3.clean(
            fragment,
            url_schemes=set(_HTML_URL_SCHEMES),
            link_rel=_LINK_REL,
            strip_comments=True,
        )
    ).strip()


def html_to_line(fragment: str | None) -> str:
    """The text of an HTML fragment, on one line."""
    if not fragment:
        return ""
    return clean_line(html.unescape(nh3.clean(fragment, tags=set(), strip_comments=True)))


def teaser(text: str | None, limit: int = 280) -> str:
    """The first ``limit`` characters of ``text``, cut at a word boundary."""
    line = clean_line(text)
    if len(line) <= limit:
        return line
    cut = line[:limit]
    space = cut.rfind(" ")
    if space > limit * 0.6:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


def text_to_html(text: str | None) -> str:
    """Plain text as escaped HTML paragraphs."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", clean_text(text)) if p.strip()]
    return "".join(f"<p>{html.escape(clean_line(p))}</p>" for p in paragraphs)
