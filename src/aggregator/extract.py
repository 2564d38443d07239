"""Pure article extraction: (html, url) → :class:`Article`, plus HTML sanitizing.

No I/O, no network, no clock of our own: every byte comes in as an argument.
Main text and metadata come from trafilatura (``bare_extraction`` on a tree we
parse once); the main content is rendered to HTML, sanitized with nh3, and the
plain text is derived from that same HTML, so ``Article.text`` and
``Article.html`` always describe the same content.

The trafilatura settings below were chosen by measurement: see
``docs/extraction.md`` and ``benchmarks/extraction/eval.py`` (figures in
``benchmarks/extraction/results.json``).
"""

from __future__ import annotations

import codecs
import contextlib
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import nh3
import trafilatura
from htmldate import find_date
from lxml import etree
from lxml import html as lxml_html
from trafilatura.deduplication import LRUCache
from trafilatura.htmlprocessing import convert_to_html
from trafilatura.metadata import (
    examine_meta,
    extract_author,
    extract_meta_json,
    extract_title,
    extract_url,
)
from trafilatura.settings import Document, set_date_params
from trafilatura.utils import decode_file, load_html

from aggregator import dates
from aggregator.errors import ExtractError
from aggregator.records import Article

# --- trafilatura settings -------------------------------------------------------------------
# Chosen on the tuning sets (Mozilla readability pages + CleanEval subset), word-4-gram F1,
# see docs/extraction.md ("Settings") and benchmarks/extraction/results.json.


@dataclass(frozen=True)
class ExtractSettings:
    """Knobs of :func:`extract_article`; the defaults are the measured choice."""

    favor_precision: bool = False
    favor_recall: bool = True
    include_comments: bool = False  # reader comments are never article text
    include_tables: bool = True
    deduplicate: bool = False  # per-document LRU when on (never trafilatura's global cache)
    # Formatting and links only shape Article.html (measured neutral on text F1); images
    # change trafilatura's choice of content and cost F1 on both tuning sets, so they stay off.
    include_formatting: bool = True
    include_links: bool = True
    include_images: bool = False
    drop_boilerplate: bool = True  # our post-processing, see _BOILERPLATE_LINE
    drop_title_byline: bool = True  # leading title/byline/date blocks (they are metadata)
    truncate_related: bool = True  # a "Related stories"-like heading ends the article


SETTINGS: Final = ExtractSettings()

# --- sanitizing ----------------------------------------------------------------------------

ALLOWED_TAGS: Final = frozenset(
    {
        "p", "br", "a", "strong", "em", "b", "i", "u", "s", "blockquote", "q", "cite", "code",
        "pre", "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "figure", "figcaption",
        "img", "table", "thead", "tbody", "tfoot", "tr", "th", "td", "caption", "hr", "sub",
        "sup", "abbr", "time", "span", "div", "dl", "dt", "dd",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES: Final = {
    "*": {"title"},
    "a": {"href"},
    "img": {"src", "alt"},
    "time": {"datetime"},
}
# Removed together with everything inside them (nh3 keeps the text of other unknown tags).
DROPPED_WITH_CONTENT: Final = frozenset(
    {
        "script", "style", "iframe", "frame", "frameset", "noscript", "template", "object",
        "embed", "applet", "svg", "math", "select", "textarea", "button", "title", "head",
    }
)  # fmt: skip
URL_SCHEMES: Final = frozenset({"http", "https", "mailto"})
LINK_REL: Final = "noopener noreferrer nofollow"

_BLOCK_TAGS: Final = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "aside", "nav",
        "blockquote", "pre", "ul", "ol", "li", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5",
        "h6", "figure", "figcaption", "table", "thead", "tbody", "tfoot", "tr", "caption", "hr",
        "address", "details", "summary", "form", "fieldset", "body", "html",
    }
)  # fmt: skip
_KEPT_BLOCK_TAGS: Final = _BLOCK_TAGS & ALLOWED_TAGS  # the block tags sanitizing keeps
_CELL_TAGS: Final = frozenset({"td", "th"})
_SKIP_TAGS: Final = frozenset(
    {"script", "style", "noscript", "template", "head", "title", "iframe", "svg", "math"}
)
_BLOCK: Final = "\x00"
_LINE: Final = "\x01"

# Boilerplate lines that trafilatura sometimes keeps at the edges of the main text (share
# bars, newsletter boxes, cookie notes, "read more" teasers). Only short paragraphs that match
# as a whole are dropped; the list was chosen on the tuning sets (docs/extraction.md).
_BOILERPLATE_LINE: Final = re.compile(
    r"""^(?:
        (?:share|tweet|email|print|pin|save)(?:\s+(?:this|on|via|to|it|article|story|page|
            facebook|twitter|x|linkedin|whatsapp|reddit|pinterest|email))*
      | 分享到.{0,20}
      | (?:follow|like)\s+us(?:\s+on\s+\w+)?
      | (?:sign\s+up|subscribe)\b.{0,80}
      | mailing\s+list|newsletter|get\s+our\s+newsletter.{0,80}
      | (?:read|see|view|show|load)\s+(?:more|all|full\s+(?:story|article))\b.{0,40}
      | continue\s+reading(?:\s+the\s+main\s+story)?
      | more\s+(?:\w+\s+)?(?:headlines|stories|news|articles)?
      | (?:related|recommended|recent|featured|popular|trending|most\s+(?:read|popular|viewed))
          (?:\s+(?:articles?|stories|posts?|content|links?|coverage|reading|videos?|
            slide\s*shows?|galleries|news))?
      | you\s+(?:might|may)\s+(?:also\s+)?(?:like|enjoy|be\s+interested\s+in)
      | advertisement|sponsored(?:\s+(?:content|by))?|skip\s+(?:to\s+)?(?:content|ad|advert)
      | jump\s+to\s+(?:navigation|search|content|main\s+content)
      | (?:this\s+(?:site|website)\s+uses\s+cookies|we\s+use\s+cookies|accept\s+(?:all\s+)?
            cookies).{0,200}
      | (?:leave\s+a\s+(?:comment|reply)|\d+\s+comments?|comments?|show\s+comments|
            loading\s+comments|links\s+to\s+this\s+post)
      | click\s+here\s+to\s+.{0,80}
      | back\s+to\s+top|(?:home\s+)?top\s+of\s+(?:the\s+)?page
      | powered\s+by\s+\w+(?:\s+\w+)?
      | (?:all\s+(?:materials|content)\s+)?copyright\s*©.{0,120}|©.{0,120}all\s+rights\s+reserved
      | (?:[\w.\- ]{0,40}[/|]\s*)?(?:getty(?:\s+images)?|afp|ap|reuters|rex(?:\s+features)?|
            epa|pa|corbis|shutterstock|istock(?:photo)?)(?:\s*[/|]\s*[\w.\- ]{0,40})?
    )[\s.:!?»›→|^…]*$""",
    re.IGNORECASE | re.VERBOSE,
)
# A navigation line: at least three " | " separators between short items.
_PIPE_NAV: Final = re.compile(r"^[^|]{1,40}(?:\s\|\s[^|]{1,40}){3,}$")
_BOILERPLATE_MAX_CHARS: Final = 160

_META_CHARSET: Final = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_WHATWG_LATIN1: Final = frozenset({"latin1", "iso8859-1", "ascii", "us-ascii", "iso-8859-1"})


def sanitize_html(fragment: str, base_url: str | None = None) -> str:
    """Return ``fragment`` reduced to an allowlist of article markup.

    Relative ``href``/``src`` of links and images are made absolute against
    ``base_url`` during the same pass (nh3's attribute filter, called for the attributes
    that survived its allowlist and scheme check); a URL that joining gives a scheme
    outside ``URL_SCHEMES`` (a hostile ``xml:base``) is dropped like any other.
    """
    if not fragment.strip():
        return ""
    return nh3.clean(
        fragment,
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_Absolutize(base_url) if base_url else None,
        url_schemes=set(URL_SCHEMES),
        link_rel=LINK_REL,
        strip_comments=True,
    ).strip()


class _Absolutize:
    """nh3's attribute filter: ``a href`` and ``img src`` made absolute against a base."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def __call__(self, tag: str, attr: str, value: str) -> str | None:
        if not ((attr == "href" and tag == "a") or (attr == "src" and tag == "img")):
            return value
        stripped = value.strip()
        if not stripped or stripped.startswith("#") or _has_scheme(stripped):
            return value  # nh3 has checked its scheme already
        try:
            joined = urljoin(self.base_url, stripped)
        except ValueError:
            return None
        scheme = urlsplit(joined).scheme.lower()
        return joined if not scheme or scheme in URL_SCHEMES else None


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment: blocks separated by blank lines, whitespace collapsed."""
    if not fragment.strip():
        return ""
    try:
        root = lxml_html.fragment_fromstring(fragment, create_parent="div")
    except (etree.ParserError, ValueError):
        return " ".join(fragment.split())
    return _element_text(root)


def extract_article(
    html: bytes | str, url: str, *, settings: ExtractSettings = SETTINGS
) -> Article:
    """Extract the main text and metadata of an article page.

    Raises :class:`ExtractError` when the page holds no article text.
    """
    tree = _load(html)
    if tree is None:
        raise ExtractError("no article text found on the page")
    canonical = _canonical_url(tree, url)
    language = _language(tree)
    notes: list[str] = []
    published_meta = _meta_published(tree, notes)
    meta = page_metadata(tree, url)
    doc = trafilatura.bare_extraction(
        tree,
        url=url,
        # not "python": trafilatura would also serialize the body to plain text, and our
        # text comes from the sanitized HTML below (~10 % of the extraction's time)
        output_format="txt",
        with_metadata=False,  # page_metadata, above
        favor_precision=settings.favor_precision,
        favor_recall=settings.favor_recall,
        include_comments=settings.include_comments,
        include_tables=settings.include_tables,
        include_formatting=settings.include_formatting,
        include_links=settings.include_links,
        include_images=settings.include_images,
        deduplicate=LRUCache(maxsize=1024) if settings.deduplicate else False,
    )
    if not isinstance(doc, Document) or doc.body is None:
        raise ExtractError("no article text found on the page")
    body = convert_to_html(doc.body)[0]  # <html><body>…: work on the body
    if settings.drop_boilerplate:
        _drop_boilerplate(body)
    if settings.drop_title_byline:
        _drop_leading_metadata(body, meta.title, meta.author)
    if settings.truncate_related:
        _truncate_related(body)
    raw_html = etree.tostring(body, encoding="unicode", method="html")
    clean_html = sanitize_html(raw_html, base_url=url)
    # the text of ``clean_html``, read from the tree it came from instead of parsing it
    # again (about a tenth of an extraction): the tags the sanitizer drops with their
    # content are skipped, and only the block tags it keeps separate blocks
    text = _element_text(body, skip=DROPPED_WITH_CONTENT, block_tags=_KEPT_BLOCK_TAGS)
    if not text:
        raise ExtractError("no article text found on the page")
    return Article(
        url=url,
        text=text,
        html=clean_html,
        title=_clean(meta.title),
        author=_authors(meta.author),
        published=_published(meta.date, published_meta),
        language=language or _clean(meta.language),
        image=_absolute_http(meta.image, url),
        canonical_url=canonical,
        notes=tuple(notes),
    )


def page_metadata(tree: lxml_html.HtmlElement, url: str) -> Document:
    """The page's title, author, date, image and URL, as ``trafilatura.extract_metadata``
    finds them (``bare_extraction(with_metadata=True)``): its steps, in its order, by its
    own functions, with the date parameters ``bare_extraction`` passes. Left out: what an
    article never uses, its categories and tags (about a tenth of an extraction's time on
    the benchmark farm's pages), site name and license. ``tests/test_extract_metadata.py``
    holds it equal to ``extract_metadata`` on the corpora's pages."""
    doc = examine_meta(tree)
    if doc.author and " " not in doc.author:
        doc.author = None
    # as extract_metadata: a bug in trafilatura's JSON-LD reading leaves the meta tags' values
    with contextlib.suppress(Exception):
        doc = extract_meta_json(tree, doc)
    if not doc.title:
        doc.title = extract_title(tree)
    if not doc.author:
        doc.author = extract_author(tree)
    if not doc.url:
        doc.url = extract_url(tree, url)
    # bare_extraction's own date parameters (trafilatura's EXTENSIVE_DATE_SEARCH default)
    params = set_date_params(True)
    params["url"] = doc.url
    doc.date = find_date(tree, **params)
    doc.clean_and_trim()
    return doc


# --- helpers --------------------------------------------------------------------------------


def _load(html: bytes | str) -> lxml_html.HtmlElement | None:
    text = html if isinstance(html, str) else _decode(html)
    tree: lxml_html.HtmlElement | None = load_html(text)
    return tree


def _decode(data: bytes) -> str:
    """UTF-8 if valid, else the page's meta charset, else trafilatura's guess (utf-8 + replace)."""
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    match = _META_CHARSET.search(data[:4096])
    if match:
        name = match.group(1).decode("ascii", errors="ignore").lower()
        try:
            codec = codecs.lookup(name).name
        except LookupError:
            codec = ""
        if codec in _WHATWG_LATIN1 or name in _WHATWG_LATIN1:
            codec = "cp1252"
        if codec and codec != "utf-8":
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                pass
    decoded: str = decode_file(data)
    return decoded


def _element_text(
    root: Any, skip: frozenset[str] = _SKIP_TAGS, block_tags: frozenset[str] = _BLOCK_TAGS
) -> str:
    """The text under ``root``: ``block_tags`` separate blocks (a blank line), ``br``
    breaks a line, ``skip`` tags are left out with their content."""
    parts: list[str] = []
    walker = etree.iterwalk(root, events=("start", "end"))
    for event, el in walker:
        tag = el.tag if isinstance(el.tag, str) else ""
        if event == "start":
            if tag in skip or not tag:
                walker.skip_subtree()
                continue
            if tag in block_tags:
                parts.append(_BLOCK)
            elif tag == "br":
                parts.append(_LINE)
            if el.text:
                parts.append(el.text)
        else:
            if tag in block_tags:
                parts.append(_BLOCK)
            elif tag in _CELL_TAGS:
                parts.append(" ")
            if el.tail and el is not root:
                parts.append(el.tail)
    blocks = []
    for block in "".join(parts).split(_BLOCK):
        lines = [" ".join(line.split()) for line in block.split(_LINE)]
        joined = "\n".join(line for line in lines if line)
        if joined:
            blocks.append(joined)
    return "\n\n".join(blocks)


def _has_scheme(value: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", value) is not None


def _drop_boilerplate(body: Any) -> None:
    for el in list(body.iter("p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "div")):
        if len(el) > 3:
            continue
        text = " ".join("".join(el.itertext()).split())
        if not text or len(text) > _BOILERPLATE_MAX_CHARS:
            continue
        if (_BOILERPLATE_LINE.match(text) or _PIPE_NAV.match(text)) and el.getparent() is not None:
            _remove_keep_tail(el)


_TOP_BLOCKS: Final = ("p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "blockquote", "table")
_BYLINE: Final = re.compile(r"^(?:by|von|par|por|di|door)\s+\S.{0,80}$", re.IGNORECASE)
_MONTH: Final = (
    r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
    r"|(?:januar|februar|märz|mai|juni|juli|oktober|dezember|janvier|février|mars|avril|juin"
    r"|juillet|août|septembre|octobre|novembre|décembre)"
)
_DATE_LINE: Final = re.compile(
    r"^(?:(?:published|updated|posted|last\s+updated|on)\s*:?\s*)?(?:\w+,?\s+)?"
    rf"(?:\d{{1,2}}\.?\s+(?:{_MONTH})\s+\d{{4}}|(?:{_MONTH})\s+\d{{1,2}},?\s+\d{{4}}"
    r"|\d{4}-\d{2}-\d{2}|\d{1,2}[./]\d{1,2}[./]\d{2,4}|\d{4}年\d{1,2}月\d{1,2}日)"
    r"(?:[\s,·|@-]+(?:at\s+)?\d{1,2}[:.]\d{2}(?:\s*[ap]\.?m\.?)?(?:\s+[a-z]{2,4})?)?"
    r"(?:[\s,·|-]+\d+\s+min(?:ute)?s?\s+read)?[\s.]*$",
    re.IGNORECASE,
)
_RELATED_HEADING: Final = re.compile(
    r"^(?:related(?:\s+\w+){0,2}|read\s+(?:more|next|also)|more\s+(?:from|on|in|stories|news)\b.{0,40}"
    r"|you\s+(?:might|may)\s+also\s+(?:like|enjoy)|recommended(?:\s+\w+){0,2}"
    r"|(?:most|recently)\s+(?:read|popular|viewed|shared)|(?:other|more)\s+\w+\s+(?:columns|stories))"
    r"[\s.:!?»›→]*$",
    re.IGNORECASE,
)


def _norm(text: str | None) -> str:
    return " ".join(_WORDS.findall((text or "").casefold()))


_WORDS: Final = re.compile(r"\w+")


def _drop_leading_metadata(body: Any, title: str | None, author: str | None) -> None:
    """Drop the title, byline and date blocks that open the content: Article has fields for them."""
    title_n, author_n = _norm(title), _norm(author)
    for el in [child for child in body if child.tag in _TOP_BLOCKS][:4]:
        text = " ".join("".join(el.itertext()).split())
        norm = _norm(text)
        if not norm:
            continue
        is_title = (
            bool(title_n) and norm == title_n and (el.tag.startswith("h") or len(text) <= 200)
        )
        is_byline = len(text) <= 90 and (
            _BYLINE.match(text) is not None or (bool(author_n) and norm in author_n)
        )
        is_date = len(text) <= 60 and _DATE_LINE.match(text) is not None
        if not (is_title or is_byline or is_date) or len(body) <= 1:
            break
        _remove_keep_tail(el)


def _truncate_related(body: Any) -> None:
    """Cut the content at a "Related stories"-like heading found in its last third."""
    blocks = [child for child in body if child.tag in _TOP_BLOCKS]
    texts = ["".join(b.itertext()) for b in blocks]
    total = sum(map(len, texts))
    seen = 0
    for i, raw in enumerate(texts):
        if i > 0 and seen >= total * 2 / 3:
            text = " ".join(raw.split())
            if len(text) <= 60 and _RELATED_HEADING.match(text) is not None:
                for rest in blocks[i:]:
                    _remove_keep_tail(rest)
                return
        seen += len(raw)


def _remove_keep_tail(el: Any) -> None:
    parent = el.getparent()
    tail = el.tail
    if tail:
        prev = el.getprevious()
        if prev is not None:
            prev.tail = (prev.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(el)


def _canonical_url(tree: Any, url: str) -> str | None:
    for link in tree.iter("link"):
        rel = (link.get("rel") or "").lower().split()
        href = link.get("href")
        if "canonical" in rel and href:
            found = _absolute_http(href, url)
            if found:
                return found
    for meta in tree.iter("meta"):
        key = (meta.get("property") or meta.get("name") or "").strip().lower()
        content = meta.get("content")
        if key == "og:url" and content:
            found = _absolute_http(content, url)
            if found:
                return found
    return None


def _language(tree: Any) -> str | None:
    root = tree.getroottree().getroot()
    lang: str | None = root.get("lang") or root.get("{http://www.w3.org/XML/1998/namespace}lang")
    if lang and lang.strip():
        return lang.strip()
    for meta in tree.iter("meta"):
        if (meta.get("http-equiv") or "").strip().lower() == "content-language":
            content = (meta.get("content") or "").split(",")[0].strip()
            if content:
                return content
    for meta in tree.iter("meta"):
        if (meta.get("property") or "").strip().lower() == "og:locale":
            content = (meta.get("content") or "").strip()
            if content:
                return content.replace("_", "-")
    return None


_PUBLISHED_KEYS: Final = frozenset(
    {"article:published_time", "og:published_time", "datepublished", "pubdate", "date"}
)


def _meta_published(tree: Any, notes: list[str]) -> datetime | None:
    """A full, tz-aware timestamp from the page's meta tags, if it gives one (through the
    date guard: a value out of range is dropped and noted)."""
    for meta in tree.iter("meta"):
        key = (meta.get("property") or meta.get("name") or meta.get("itemprop") or "").lower()
        if key.strip() in _PUBLISHED_KEYS:
            value = (meta.get("content") or "").strip()
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if parsed.tzinfo is not None:
                return dates.parse_date(parsed, key.strip(), notes, shown=value)
    return None


def _published(value: str | None, meta: datetime | None) -> datetime | None:
    """trafilatura's date (YYYY-MM-DD) as midnight UTC, or the meta timestamp of that day."""
    if not value:
        return meta
    try:
        day = date.fromisoformat(value.strip()[:10])
    except ValueError:
        return meta
    midnight = dates.parse_date(day, "page date")
    if midnight is None:
        return meta
    if meta is not None and abs((meta.date() - day).days) <= 1:
        return meta
    return midnight


def _authors(value: str | None) -> str | None:
    value = _clean(value)
    if value is None:
        return None
    seen: dict[str, str] = {}
    for name in value.split(";"):
        name = " ".join(name.split())
        if name and name.casefold() not in seen:
            seen[name.casefold()] = name
    return "; ".join(seen.values()) or None


def _absolute_http(value: str | None, base: str) -> str | None:
    value = _clean(value)
    if value is None:
        return None
    try:
        absolute = urljoin(base, value)
        scheme = urlsplit(absolute).scheme.lower()
    except ValueError:
        return None
    return absolute if scheme in {"http", "https"} else None


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = " ".join(str(value).split())
    return value or None
