"""HTML listing pages (a front page, a category page, an archive) → ``ParsedFeed``.

Pure: ``(bytes, response headers, base url, selectors) -> ParsedFeed``; no I/O, no
clock. Each story on the page becomes one entry keyed by its absolute link.

Explicit selectors
------------------
``item`` selects the story blocks; ``title``, ``link``, ``summary`` and ``date`` are
CSS selectors inside one block, each optionally ending in ``@attr`` to read an
attribute instead of the text (``@attr`` alone reads the block's own attribute).
Any field left out is found automatically inside the block; without ``item`` the
blocks themselves are found automatically. ``link_pattern`` is a regular expression
that story links must match (``re.search`` on the absolute URL).

The automatic finder
--------------------
1. Candidate links: ``<a href>`` to another page on the same site (``www.`` ignored,
   subdomains allowed), not a fragment of this page, not a tag, category, author,
   pagination, search, feed or account URL, not ``rel=tag|author|next|prev``, and
   outside page furniture: ``nav``/``aside``/``footer``/``form`` elements (a
   ``header`` or ``footer`` inside an ``article`` is the story's own), ARIA landmark
   roles for navigation, banners, footers and sidebars, elements whose class or id
   names navigation, menus, sidebars, widgets, related/popular/trending boxes, tag
   clouds, pagination, sharing, comments, ads or newsletters, and sections headed
   "Related", "Most read", "Trending", "Sign up…", "Tags", "Archives" and the like.
2. Blocks: every candidate link climbs to the largest ancestor that holds no link to
   any *other* candidate URL. A card linking its story from both the image and the
   title is therefore one block; so are a table row and a list item.
3. Groups: blocks with the same structural path (tags and stable class names of every
   ancestor) form a group. Each group is scored by size, how many of its blocks carry
   a heading link (``h1``–``h6`` or a title/headline class), title length, and how
   many have a teaser and a date; the best group with at least two stories wins.
4. Fields per block: the title is the heading link's text (or the heading inside the
   link), the teaser the first summary-like element or paragraph that is not the
   title, byline or date, the date a ``<time>``, a date-classed element or a date
   written in the block's text; the image the first ``<img>``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import dateparser
from bs4 import BeautifulSoup, Tag
from bs4.element import NavigableString

from aggregator import dates
from aggregator.errors import ParseError
from aggregator.records import HtmlSelectors, ParsedEntry, ParsedFeed

__all__ = ["parse_listing"]

_WS = re.compile(r"\s+")
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "select"})
_FURNITURE_TAGS = frozenset({"nav", "aside", "form", "dialog", "menu", "button"})
_NOISE_ROLES = frozenset(
    {"navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar", "dialog"}
)
# class/id words that mark page furniture wherever they appear in a token ("site-footer",
# "widget_recent_entries", "jp-relatedposts", "post-navigation")
_NOISE_PARTS = frozenset(
    {
        "sidebar",
        "widget",
        "widgets",
        "related",
        "relatedposts",
        "trending",
        "popular",
        "mostread",
        "mostpopular",
        "newsletter",
        "breadcrumb",
        "breadcrumbs",
        "pagination",
        "pager",
        "paging",
        "tagcloud",
        "advert",
        "advertisement",
        "sponsored",
        "cookie",
        "cookies",
        "consent",
        "share",
        "sharing",
        "sharedaddy",
        "social",
        "subscribe",
        "subscription",
        "signup",
        "navbar",
        "navigation",
        "menu",
        "submenu",
        "comments",
        "footer",
        "masthead",
        "skiplink",
    }
)
# words that mark furniture only as a whole token (after dropping "site-", "-links", …):
# "tags-links" and "nav" are furniture, "category-news" on a WordPress article is not
_NOISE_TOKENS = frozenset(
    {
        "nav",
        "tags",
        "tag",
        "categories",
        "category",
        "cat",
        "cats",
        "ad",
        "ads",
        "promo",
        "sponsor",
        "search",
        "login",
        "header",
        "skip",
        "most-read",
        "most-popular",
        "most-viewed",
        "read-more",
        "more-stories",
        "sign-up",
        "top",
    }
)
_TOKEN_PREFIXES = frozenset({"site", "global", "main", "page", "primary", "secondary", "js", "wp"})
_TOKEN_SUFFIXES = frozenset(
    {
        "list",
        "links",
        "link",
        "box",
        "block",
        "wrapper",
        "wrap",
        "container",
        "area",
        "section",
        "bar",
        "module",
        "items",
        "panel",
        "inner",
        "outer",
        "region",
        "zone",
        "label",
        "title",
        "heading",
        "holder",
    }
)
_NOISE_HEADING = re.compile(
    r"^\W*(related\b|more (from|on|in|like this|stories|news|articles)\b|"
    r"most (read|popular|viewed|shared|emailed|commented|watched)\b|popular\b|trending\b|"
    r"recommended\b|you (may|might) (also )?like|read next\b|also read\b|editors?.? picks\b|"
    r"newsletter|sign up\b|signup\b|subscribe\b|join our\b|get our\b|tags\b|tagged\b|"
    r"categories\b|topics\b|archives?\b|recent (posts|comments|writing|articles|entries)\b|"
    r"follow us\b|share\b|comments?\b|leave a (comment|reply)\b|about( me| us| the author)?$|"
    r"sponsored\b|advertisement\b|partner content\b)",
    re.I,
)
_NON_ARTICLE_PATH = re.compile(
    r"/(tags?|categor(y|ies)|topics?|authors?|users?|profiles?|people|search|login|log-in|"
    r"signin|sign-in|register|signup|sign-up|subscribe|newsletters?|feeds?|rss|atom|"
    r"account|cart|privacy(-policy)?|terms|cookies?|contact(-us)?|about(-us)?|"
    r"archives?)(/|$)|/page/\d+/?$|\.(jpe?g|png|gif|webp|svg|pdf|xml|rss|zip|mp3|mp4)$",
    re.I,
)
_PAGINATION_QUERY = re.compile(r"(^|&)(page|paged|p|start|offset)=\d+($|&)", re.I)
_SKIP_RELS = frozenset({"tag", "author", "next", "prev", "previous", "category", "home", "me"})
_TITLE_CLASS = re.compile(r"(^|[-_])(title|headline|hed|heading)($|[-_])", re.I)
_TEASER_CLASS = re.compile(
    r"(^|[-_])(summary|excerpt|teaser|dek|standfirst|description|desc|lede|lead|intro|"
    r"blurb|abstract|snippet|entry-content|post-content|body|text|content)($|[-_])",
    re.I,
)
_DATE_CLASS = re.compile(
    r"(^|[-_])(date|dateline|time|timestamp|published|posted|pubdate|updated|datetime|"
    r"posted-on|meta|byline)($|[-_])",
    re.I,
)
# zebra striping and state classes differ between blocks of one list
_STATE_CLASS = re.compile(
    r"(^|[-_])(odd|even|first|last|alt|active|current|selected|hover|sticky|featured)($|[-_])",
    re.I,
)
_BYLINE = re.compile(r"^\s*(by|von|par|por|di|door)\s+\S", re.I)
_MONTHS = (
    r"(jan(uary)?|feb(ruary)?|mar(ch)?|apr(il)?|may|june?|july?|aug(ust)?|"
    r"sep(t(ember)?)?|oct(ober)?|nov(ember)?|dec(ember)?)\.?"
)
_TIME = r"(,?\s+(at\s+)?\d{1,2}[:.]\d{2}(:\d{2})?(\s*[ap]\.?m\.?)?(\s+[A-Z]{2,4}\b)?)?"
_DATE_IN_TEXT = re.compile(
    r"\b\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2})?(\.\d+)?(Z|[+-]\d{2}:?\d{2})?)?\b"
    rf"|\b{_MONTHS}\s+\d{{1,2}}(st|nd|rd|th)?,?\s+\d{{4}}{_TIME}"
    rf"|\b\d{{1,2}}(st|nd|rd|th)?\.?\s+{_MONTHS},?\s+\d{{4}}{_TIME}"
    r"|\b\d{1,2}[./]\d{1,2}[./]\d{4}\b",
    re.I,
)
_DATEPARSER_SETTINGS: dict[str, Any] = {
    "RETURN_AS_TIMEZONE_AWARE": True,
    "TO_TIMEZONE": "UTC",
    "STRICT_PARSING": True,
    "PARSERS": ["absolute-time"],
    # relative dates are never parsed (PARSERS); a fixed base keeps the result free of the clock
    "RELATIVE_BASE": datetime(2000, 1, 1),
}
_MIN_TEASER_CHARS = 25


# --------------------------------------------------------------------------- public


def parse_listing(
    body: bytes,
    headers: Mapping[str, str],
    base_url: str,
    selectors: HtmlSelectors | None = None,
) -> ParsedFeed:
    """Find the stories of an HTML listing page; raise :class:`ParseError` when there are none."""
    if not body.strip():
        raise ParseError("empty response body")
    soup = _soup(body, headers)
    page = _Page(soup, base_url, selectors or HtmlSelectors())
    drafts = page.stories()
    if not drafts:
        if page.selectors.item:
            raise ParseError(
                f"the item selector {page.selectors.item!r} matched no story with a link"
            )
        raise ParseError(
            "no list of stories found on the page (no repeated blocks with links to articles "
            "on the same site); set selectors: item, title, link for this source"
        )
    entries: list[ParsedEntry] = []
    seen: set[str] = set()
    for draft in drafts:
        if draft.link in seen:
            continue
        seen.add(draft.link)
        entries.append(draft.build())
    return ParsedFeed(
        kind="html",
        title=page.title(),
        link=page.url,
        entries=tuple(entries),
        key_level="link",
        problem=dates.summary(page.notes),
    )


# --------------------------------------------------------------------------- the page


@dataclass(frozen=True)
class _Draft:
    link: str
    title: str | None
    summary: str | None
    published: datetime | None
    image: str | None

    def build(self) -> ParsedEntry:
        return ParsedEntry(
            key="link:" + self.link,
            link=self.link,
            title=self.title,
            summary=self.summary,
            published=self.published,
            image=self.image,
        )


@dataclass
class _Block:
    element: Tag
    url: str
    links: list[Tag]
    signature: tuple[tuple[str, str], ...]


class _Page:
    def __init__(self, soup: BeautifulSoup, base_url: str, selectors: HtmlSelectors) -> None:
        self.soup = soup
        self.selectors = selectors
        base = soup.find("base", href=True)
        href = _attr(base, "href") if isinstance(base, Tag) else None
        self.url = base_url
        self.base = urljoin(base_url, href.strip()) if href else base_url
        self.pattern = re.compile(selectors.link_pattern) if selectors.link_pattern else None
        self.notes: list[str] = []  # dates out of range, for the document's problem line
        self.host = _site(urlsplit(base_url).hostname or "")
        self.page_key = _page_key(base_url)
        html_tag = soup.find("html")
        lang = _attr(html_tag, "lang") if isinstance(html_tag, Tag) else None
        self.languages = _languages(lang)
        self._noise: dict[int, bool] = {}
        self._noise_sections: set[int] = set()

    # -- page-level values

    def title(self) -> str | None:
        for meta in self.soup.find_all("meta"):
            if _attr(meta, "property") == "og:site_name" and _attr(meta, "content"):
                return _clean(_attr(meta, "content"))
        node = self.soup.find("title")
        return _clean(node.get_text()) if isinstance(node, Tag) else None

    def resolve(self, href: str | None) -> str | None:
        if not href or not href.strip():
            return None
        href = href.strip()
        if href.lower().startswith(("javascript:", "mailto:", "tel:", "data:")):
            return None
        try:
            parts = urlsplit(urljoin(self.base, href))
        except ValueError:
            return None
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            return None
        return urlunsplit(parts._replace(fragment=""))

    # -- stories

    def stories(self) -> list[_Draft]:
        items = self._selected_items() if self.selectors.item else self._found_items()
        drafts = []
        for element, links in items:
            draft = self._draft(element, links)
            if draft is not None:
                drafts.append(draft)
        return drafts

    def _selected_items(self) -> list[tuple[Tag, list[Tag]]]:
        assert self.selectors.item is not None
        return [(el, []) for el in self.soup.select(self.selectors.item) if isinstance(el, Tag)]

    def _found_items(self) -> list[tuple[Tag, list[Tag]]]:
        self._mark_noise_sections()
        links = self._candidate_links()
        # Links in headings mark story blocks best, and running text inside a block may
        # link to other stories on the site; so try the heading links alone first.
        headed = [(url, a) for url, a in links if _is_heading_link(a)]
        best_score, best = self._best_group(headed)
        score, group = self._best_group(links)
        if score > best_score:
            best = group
        return [(b.element, b.links) for b in best]

    def _best_group(self, links: list[tuple[str, Tag]]) -> tuple[float, list[_Block]]:
        if not links:
            return 0.0, []
        # every ancestor → the candidate URLs below it
        below: dict[int, set[str]] = {}
        for url, anchor in links:
            for ancestor in _ancestors(anchor, include_self=True):
                below.setdefault(id(ancestor), set()).add(url)
        blocks: dict[int, _Block] = {}
        for url, anchor in links:
            node: Tag = anchor
            while True:
                parent = node.parent
                if (
                    not isinstance(parent, Tag)
                    or parent.name in ("body", "html", "main", "[document]")
                    or len(below.get(id(parent), ())) > 1
                ):
                    break
                node = parent
            block = blocks.get(id(node))
            if block is None:
                block = _Block(node, url, [], _signature(node))
                blocks[id(node)] = block
            block.links.append(anchor)
        groups: dict[tuple[tuple[str, str], ...], list[_Block]] = {}
        for block in blocks.values():  # insertion order = document order
            groups.setdefault(block.signature, []).append(block)
        best: list[_Block] = []
        best_score = 0.0
        for group in groups.values():
            score = self._score(group)
            if score > best_score:
                best, best_score = group, score
        return best_score, best

    def _score(self, group: list[_Block]) -> float:
        if len({b.url for b in group}) < 2:
            return 0.0
        headed = 0
        words: list[int] = []
        teasers = 0
        dated = 0
        for block in group:
            main = _main_link(block.links)
            if _is_heading_link(main):
                headed += 1
            words.append(len((self._link_title(main, block.links, block.element) or "").split()))
            if self._teaser(block.element, main) is not None:
                teasers += 1
            if _has_date_hint(block.element):
                dated += 1
        n = len(group)
        median = sorted(words)[n // 2]
        if median < 2:
            return 0.0
        return (
            n * (0.3 + headed / n) * min(median, 6) / 6 * (1 + 0.5 * teasers / n + 0.3 * dated / n)
        )

    def _candidate_links(self) -> list[tuple[str, Tag]]:
        out: list[tuple[str, Tag]] = []
        for anchor in self.soup.find_all("a", href=True):
            assert isinstance(anchor, Tag)
            url = self.resolve(_attr(anchor, "href"))
            if url is None or not self._article_url(url):
                continue
            rels = {r.lower() for r in anchor.get_attribute_list("rel") if r}
            if rels & _SKIP_RELS:
                continue
            if self._in_noise(anchor):
                continue
            out.append((url, anchor))
        return out

    def _article_url(self, url: str) -> bool:
        parts = urlsplit(url)
        if self.pattern is not None:
            return self.pattern.search(url) is not None
        if _site(parts.hostname or "") != self.host and not _same_site(
            parts.hostname or "", self.host
        ):
            return False
        if _page_key(url) == self.page_key or (parts.path in ("", "/") and not parts.query):
            return False
        if _NON_ARTICLE_PATH.search(parts.path):
            return False
        return not (parts.query and _PAGINATION_QUERY.search(parts.query))

    # -- furniture

    def _mark_noise_sections(self) -> None:
        for heading in self.soup.find_all(list(_HEADINGS)):
            assert isinstance(heading, Tag)
            text = _clean(heading.get_text(" "))
            if not text or len(text) > 80 or not _NOISE_HEADING.match(text):
                continue
            if heading.find("a", href=True) is not None and not text.lower().startswith(
                ("related", "most ", "trending", "popular", "recommended")
            ):
                continue  # a story title that happens to start with "Share" or "Tags"
            parent = heading.parent
            if not isinstance(parent, Tag):
                continue
            first = next((c for c in parent.children if isinstance(c, Tag)), None)
            if first is heading and parent.name not in ("body", "main", "html", "[document]"):
                self._noise_sections.add(id(parent))
                continue
            level = int(heading.name[1])
            for sibling in heading.next_siblings:
                if not isinstance(sibling, Tag):
                    continue
                if sibling.name in _HEADINGS and int(sibling.name[1]) <= level:
                    break
                self._noise_sections.add(id(sibling))

    def _in_noise(self, anchor: Tag) -> bool:
        in_article = False
        # walk from the top so that "inside an article" is known when a header is met
        for node in reversed(list(_ancestors(anchor, include_self=True))):
            key = id(node)
            verdict = self._noise.get(key)
            if verdict is None:
                verdict = self._is_furniture(node, in_article)
                if node.name not in ("header", "footer"):
                    self._noise[key] = verdict
            if verdict:
                return True
            if node.name == "article":
                in_article = True
        return False

    def _is_furniture(self, node: Tag, in_article: bool) -> bool:
        name = node.name
        if id(node) in self._noise_sections:
            return True
        if name in _SKIP_TAGS or name in _FURNITURE_TAGS:
            return True
        if name in ("header", "footer") and not in_article:
            return True
        role = (_attr(node, "role") or "").strip().lower()
        if role in _NOISE_ROLES:
            return True
        if node.has_attr("hidden") or (_attr(node, "aria-hidden") or "").lower() == "true":
            return name != "a"  # an image link is often aria-hidden beside its title link
        tokens = [*node.get_attribute_list("class"), _attr(node, "id") or ""]
        return any(_noise_token(t) for t in tokens if t)

    # -- fields of one story

    def _draft(self, element: Tag, links: list[Tag]) -> _Draft | None:
        sel = self.selectors
        if not links:
            links = [a for a in _find_all(element, "a") if a.has_attr("href")]
            if element.name == "a" and element.has_attr("href"):
                links.insert(0, element)
        main = _main_link(links) if links else None
        if sel.link:
            link = self.resolve(self._select_value(element, sel.link, default_attr="href"))
        else:
            link = self.resolve(_attr(main, "href")) if main is not None else None
        if link is None:
            return None
        if self.pattern is not None and not self.pattern.search(link):
            return None
        if sel.title:
            title = _clean(self._select_value(element, sel.title))
        else:
            title = self._link_title(main, links, element) if main is not None else None
            if title is None:
                title = _heading_text(element)
        if sel.summary:
            summary = self._select_html(element, sel.summary)
        else:
            teaser = self._teaser(element, main)
            summary = _element_html(teaser) if teaser is not None else None
        if sel.date:
            published = self._parse_date(
                self._select_value(element, sel.date, default_attr=None), self.notes
            )
        else:
            published = self._find_date(element)
        return _Draft(
            link=link,
            title=title,
            summary=summary,
            published=published,
            image=self._image(element),
        )

    def _select_value(
        self, element: Tag, selector: str, default_attr: str | None = None
    ) -> str | None:
        css, attr = HtmlSelectors.split(selector)
        target = element if not css else element.select_one(css)
        if not isinstance(target, Tag):
            return None
        if attr is None and default_attr and target.has_attr(default_attr):
            attr = default_attr
        if attr is None and default_attr == "href" and target.name != "a":
            inner = target.find("a", href=True)
            if isinstance(inner, Tag):
                return _attr(inner, "href")
        if attr is not None:
            return _attr(target, attr)
        if default_attr is None and target.name == "time" and target.has_attr("datetime"):
            return _attr(target, "datetime")
        return target.get_text(" ")

    def _select_html(self, element: Tag, selector: str) -> str | None:
        css, attr = HtmlSelectors.split(selector)
        target = element if not css else element.select_one(css)
        if not isinstance(target, Tag):
            return None
        if attr is not None:
            value = _clean(_attr(target, attr))
            return f"<p>{html.escape(value)}</p>" if value else None
        return _element_html(target)

    def _link_title(self, main: Tag, links: list[Tag], block: Tag) -> str | None:
        heading = main.find(list(_HEADINGS))
        if isinstance(heading, Tag):
            text = _clean(heading.get_text(" "))
            if text:
                return text
        text = _clean(main.get_text(" "))
        if text and not _weak_title(text):
            return text
        if text:
            # a permalink ("►", "★", a date) beside the real title, as on link blogs:
            # the text around it, else the block's most prominent heading
            parent = main.parent
            if isinstance(parent, Tag):
                rest = _clean(parent.get_text(" ").replace(main.get_text(" "), " ", 1))
                if rest and not _weak_title(rest) and len(rest) <= 300:
                    return rest
            top = _top_heading(block)
            return top if top is not None else text
        url = _attr(main, "href")
        for other in links:  # the image link of a card: take the title link's text
            if other is not main and _attr(other, "href") == url:
                text = _clean(other.get_text(" "))
                if text:
                    return text
        for img in _find_all(main, "img"):
            alt = _clean(_attr(img, "alt"))
            if alt:
                return alt
        return _clean(_attr(main, "title"))

    def _teaser(self, element: Tag, main: Tag | None) -> Tag | None:
        title_box = _title_box(main) if main is not None else None
        fallback: Tag | None = None
        for node in element.find_all(True):
            assert isinstance(node, Tag)
            if node.name in _SKIP_TAGS or node.name in _HEADINGS or node.name in ("a", "time"):
                continue
            if title_box is not None and (
                node is title_box or _contains(node, title_box) or _contains(title_box, node)
            ):
                continue
            classes = " ".join(node.get_attribute_list("class"))
            if classes and _DATE_CLASS.search(classes) and not _TEASER_CLASS.search(classes):
                continue
            text = _clean(node.get_text(" ")) or ""
            if len(text) < _MIN_TEASER_CHARS or _BYLINE.match(text):
                continue
            if _DATE_IN_TEXT.fullmatch(text.strip()):
                continue
            if classes and _TEASER_CLASS.search(classes):
                return node
            if (fallback is None and node.name in ("p", "dd", "td", "blockquote")) or (
                fallback is None
                and node.name in ("div", "span", "section")
                and not node.find(["p", "div", "ul", "ol", "table", *_HEADINGS])
            ):
                fallback = node
        return fallback

    def _find_date(self, element: Tag) -> datetime | None:
        for node in _find_all(element, "time"):
            value = self._parse_date(_attr(node, "datetime") or node.get_text(" "))
            if value is not None:
                return value
        for node in element.find_all(True):
            assert isinstance(node, Tag)
            if node.name == "meta" and (_attr(node, "itemprop") or "").lower() in (
                "datepublished",
                "datecreated",
            ):
                value = self._parse_date(_attr(node, "content"))
                if value is not None:
                    return value
            if node.name == "abbr" and node.has_attr("title"):
                classes = " ".join(node.get_attribute_list("class"))
                if _DATE_CLASS.search(classes):
                    value = self._parse_date(_attr(node, "title"))
                    if value is not None:
                        return value
        for node in element.find_all(True):
            assert isinstance(node, Tag)
            classes = " ".join(node.get_attribute_list("class"))
            if classes and _DATE_CLASS.search(classes):
                value = self._date_in_text(node.get_text(" "))
                if value is not None:
                    return value
        # a date written in the text: the one standing most on its own ("Posted on …"),
        # not one mentioned in running text
        best: tuple[int, datetime] | None = None
        for text in element.find_all(string=True):
            if not isinstance(text, NavigableString) or _inside(text, _SKIP_TAGS):
                continue
            holder = text.parent
            size = len(holder.get_text()) if isinstance(holder, Tag) else len(text)
            if size > 300 or (best is not None and size >= best[0]):
                continue
            value = self._date_in_text(str(text))
            if value is not None:
                best = (size, value)
        return best[1] if best else None

    def _date_in_text(self, text: str) -> datetime | None:
        text = _clean(text) or ""
        if not text or len(text) > 2000:
            return None
        if len(text) <= 40:
            value = self._parse_date(text)
            if value is not None:
                return value
        for match in _DATE_IN_TEXT.finditer(text):
            value = self._parse_date(match.group(0))
            if value is not None:
                return value
        return None

    def _parse_date(self, value: str | None, notes: list[str] | None = None) -> datetime | None:
        """ISO 8601, else dateparser (absolute dates only), through the date guard; only
        years 1990 to 2200 are believed (the heuristics try many texts). Out-of-range
        values are noted in ``notes`` (given for the date an explicit selector picks)."""
        text = _clean(value)
        if not text or len(text) > 80 or not any(c.isdigit() for c in text):
            return None
        iso = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
        try:
            parsed: datetime | None = datetime.fromisoformat(iso)
        except ValueError:
            try:
                parsed = dateparser.parse(
                    text, languages=self.languages, settings=_DATEPARSER_SETTINGS
                )
            except (ValueError, OverflowError, TypeError, LookupError):
                parsed = None
        guarded = dates.parse_date(parsed, "listing date", notes, shown=text)
        if guarded is None or not 1990 <= guarded.year <= 2200:
            return None
        return guarded

    def _image(self, element: Tag) -> str | None:
        for img in _find_all(element, "img"):
            for name in ("src", "data-src", "data-lazy-src", "data-original"):
                url = self.resolve(_attr(img, name))
                if url:
                    return url
        return None


# --------------------------------------------------------------------------- helpers


def _soup(body: bytes, headers: Mapping[str, str]) -> BeautifulSoup:
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    match = re.search(r"charset=[\"']?([\w.:-]+)", ctype, re.I)
    encoding = match.group(1) if match else None
    try:
        return BeautifulSoup(body, "lxml", from_encoding=encoding)
    except LookupError:  # an unknown charset label
        return BeautifulSoup(body, "lxml")


def _attr(node: object, name: str) -> str | None:
    if not isinstance(node, Tag):
        return None
    value = node.get(name)
    if isinstance(value, list):
        return " ".join(value)
    return value


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    return _WS.sub(" ", text).strip() or None


def _ancestors(node: Tag, *, include_self: bool = False) -> Iterable[Tag]:
    if include_self:
        yield node
    for parent in node.parents:
        if isinstance(parent, Tag) and not isinstance(parent, BeautifulSoup):
            yield parent


def _find_all(element: Tag, name: str) -> list[Tag]:
    return [n for n in element.find_all(name) if isinstance(n, Tag)]


def _contains(outer: Tag, inner: Tag) -> bool:
    return any(p is outer for p in inner.parents)


def _inside(text: NavigableString, names: frozenset[str]) -> bool:
    return any(isinstance(p, Tag) and p.name in names for p in text.parents)


def _site(host: str) -> str:
    host = host.lower().rstrip(".")
    return host[4:] if host.startswith("www.") else host


def _same_site(host: str, site: str) -> bool:
    host = _site(host)
    return bool(host) and (host.endswith("." + site) or site.endswith("." + host))


def _page_key(url: str) -> str:
    parts = urlsplit(url)
    return f"{_site(parts.hostname or '')}{parts.path.rstrip('/')}?{parts.query}"


def _languages(lang: str | None) -> list[str] | None:
    if not lang:
        return None
    code = lang.strip().split("-")[0].split("_")[0].lower()
    if not code.isalpha() or len(code) not in (2, 3):
        return None
    from dateparser.languages import default_loader  # the list of languages dateparser knows

    known = set(default_loader.get_locale_map().keys())
    return [code, "en"] if code in known and code != "en" else ["en"]


def _noise_token(token: str) -> bool:
    token = token.lower()
    parts = [p for p in re.split(r"[-_\s]+", token) if p]
    if not parts:
        return False
    if any(p in _NOISE_PARTS for p in parts):
        return True
    while len(parts) > 1 and parts[0] in _TOKEN_PREFIXES:
        parts = parts[1:]
    while len(parts) > 1 and parts[-1] in _TOKEN_SUFFIXES:
        parts = parts[:-1]
    return "-".join(parts) in _NOISE_TOKENS


def _stable_classes(node: Tag) -> str:
    keep = [
        c
        for c in node.get_attribute_list("class")
        if c
        and not any(ch.isdigit() for ch in c)
        and not _STATE_CLASS.search(c)
        and not c.startswith(
            ("category-", "tag-", "format-", "type-", "status-", "post-", "has-", "is-")
        )
    ]
    return " ".join(sorted(keep))


def _signature(node: Tag) -> tuple[tuple[str, str], ...]:
    chain = [node, *_ancestors(node)]
    return tuple((n.name, _stable_classes(n)) for n in reversed(chain))


def _is_heading_link(anchor: Tag) -> bool:
    if anchor.find(list(_HEADINGS)) is not None:
        return True
    for node in _ancestors(anchor, include_self=True):
        if node.name in _HEADINGS:
            return True
        if node.name in ("article", "li", "tr", "body"):
            break
        classes = " ".join(node.get_attribute_list("class"))
        if classes and _TITLE_CLASS.search(classes):
            return True
    return False


def _main_link(links: list[Tag]) -> Tag:
    headed = [a for a in links if _is_heading_link(a)]
    if headed:
        return headed[0]
    return max(links, key=lambda a: len(_clean(a.get_text(" ")) or ""))


def _title_box(anchor: Tag) -> Tag:
    """The heading around (or inside) the title link, or the link itself."""
    inner = anchor.find(list(_HEADINGS))
    if isinstance(inner, Tag):
        return inner
    for node in _ancestors(anchor):
        if node.name in _HEADINGS:
            return node
        if node.name in ("article", "li", "tr", "div", "section", "td"):
            break
    return anchor


def _heading_text(element: Tag) -> str | None:
    heading = element.find(list(_HEADINGS))
    return _clean(heading.get_text(" ")) if isinstance(heading, Tag) else None


def _has_date_hint(element: Tag) -> bool:
    if element.find("time") is not None:
        return True
    for node in element.find_all(True):
        assert isinstance(node, Tag)
        classes = " ".join(node.get_attribute_list("class"))
        if classes and _DATE_CLASS.search(classes):
            return True
    return False


def _element_html(node: Tag) -> str | None:
    markup = str(node) if node.name in ("p", "blockquote") else node.decode_contents()
    return markup.strip() or None


_WEAK_TITLES = frozenset(
    {"permalink", "link", "read more", "more", "continue reading", "comments", "here", "#"}
)


def _weak_title(text: str) -> bool:
    """Link text that is no title: a glyph, a date, "permalink"."""
    if sum(c.isalnum() for c in text) < 2 or text.lower().strip(" .…»›→") in _WEAK_TITLES:
        return True
    return _DATE_IN_TEXT.fullmatch(text) is not None or (
        _DATE_IN_TEXT.match(text) is not None and (len(text) < 40)
    )


def _top_heading(block: Tag) -> str | None:
    """The text of the block's most prominent heading (lowest level, then first)."""
    best: tuple[int, str] | None = None
    for heading in block.find_all(list(_HEADINGS)):
        assert isinstance(heading, Tag)
        text = _clean(heading.get_text(" "))
        if text and not _weak_title(text):
            level = int(heading.name[1])
            if best is None or level < best[0]:
                best = (level, text)
    return best[1] if best else None
