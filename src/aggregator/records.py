"""Frozen records that cross stage boundaries.

Every stage of the pipeline takes and returns these values; none of them holds a
database row, an HTTP response or any other live resource, so they can cross
process boundaries (the parse/extract process pool) by pickling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol
from urllib.parse import urlsplit

from .secret import Secret

SourceType = Literal["feed", "html"]
# "css selector@attribute": the attribute name after the last "@" (outside brackets/quotes)
_ATTR_SUFFIX = re.compile(r"^(.*?)\s*@([A-Za-z_:][-\w:.]*)\s*$", re.S)


@dataclass(frozen=True)
class Retention:
    """How long a feed's items are kept (``retention`` in feeds.yaml; see ``retention.py``).
    Durations in seconds; None: that rule is off."""

    max_age: float | None = None  # items first seen longer ago are deleted
    max_items_per_feed: int | None = None  # the newest N items of the feed are kept
    drop_text_after: float | None = None  # content, text and shingles cleared after this

    @property
    def deletes(self) -> bool:
        return self.max_age is not None or self.max_items_per_feed is not None

    @property
    def active(self) -> bool:
        return self.deletes or self.drop_text_after is not None


@dataclass(frozen=True)
class HtmlSelectors:
    """Explicit CSS selectors for a ``type: html`` source (all optional)."""

    item: str | None = None
    title: str | None = None
    link: str | None = None
    summary: str | None = None
    date: str | None = None
    link_pattern: str | None = None

    @staticmethod
    def split(selector: str) -> tuple[str, str | None]:
        """``"h2 a@href"`` → ``("h2 a", "href")``; ``"@href"`` → ``("", "href")`` (the item)."""
        match = _ATTR_SUFFIX.match(selector)
        if match is None:
            return selector.strip(), None
        return match.group(1).strip(), match.group(2)


FilterField = Literal["title", "link", "author", "tags", "summary", "content"]
FILTER_FIELDS: tuple[FilterField, ...] = ("title", "link", "author", "tags", "summary", "content")
DEFAULT_FILTER_FIELDS: tuple[FilterField, ...] = ("title", "summary", "content")


@dataclass(frozen=True)
class FilterRule:
    """One entry filter rule (see ``filters``): ``block`` drops what it matches; ``keep``
    rules, when a feed has any, drop what matches none of them."""

    action: Literal["block", "keep"]
    pattern: str  # a regular expression (``re`` syntax; ``filters`` compiles and matches it)
    fields: tuple[FilterField, ...] = DEFAULT_FILTER_FIELDS
    label: str = ""  # where and how it was written: 'filters[0] block "(?i)webinar"'


@dataclass(frozen=True)
class FilterRules:
    """A feed's rules, the global ones first, and their fingerprint: remembered with the
    entries they blocked, so a changed rule set evaluates those entries again."""

    rules: tuple[FilterRule, ...]
    fingerprint: str


@dataclass(frozen=True)
class HttpOptions:
    """A feed's own HTTP options. ``headers``, ``basic_auth``, ``cookies`` and
    ``user_agent`` go only to ``origin`` (the feed URL's scheme, host and port; see
    ``fetch.same_origin``); ``proxy`` carries every request of the feed's polls."""

    origin: str  # "https://example.org:443"
    headers: tuple[tuple[str, Secret], ...] = ()
    basic_auth: tuple[Secret, Secret] | None = None  # (username, password)
    cookies: tuple[tuple[str, Secret], ...] = ()
    user_agent: str | None = None
    proxy: Secret | None = None  # http://, https:// or socks5:// URL (may hold credentials)

    @property
    def sends_credentials(self) -> bool:
        return bool(self.headers or self.basic_auth or self.cookies or self.user_agent)


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """One source as configured in ``feeds.yaml``."""

    url: str
    name: str | None = None
    tags: tuple[str, ...] = ()
    interval: float | None = None  # seconds; None = adaptive/default
    full_text: bool = True
    enabled: bool = True
    type: SourceType = "feed"
    selectors: HtmlSelectors | None = None
    filters: FilterRules | None = None  # the global rules, then the feed's; None: none
    http: HttpOptions | None = None
    retention: Retention | None = None  # settings.retention with the feed's own keys over it

    @property
    def label(self) -> str:
        return self.name or self.url


@dataclass(frozen=True, slots=True)
class FeedState:
    """What the store knows about a feed before polling it."""

    id: int
    url: str
    configured_url: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    error_count: int = 0
    last_status: int | None = None
    next_check_at: datetime | None = None
    disabled_reason: str | None = None
    hold_until: datetime | None = None
    interval_seconds: float | None = None
    redirect_url: str | None = None
    redirect_count: int = 0
    redirect_seen_at: datetime | None = None
    not_found_since: datetime | None = None
    # the lease end of the feed's live WebSub subscription (``feeds.push_until``): until
    # then the hub pushes its updates and it is polled only as a safety net
    push_until: datetime | None = None


@dataclass(frozen=True)
class FetchResult:
    """A completed HTTP exchange (any status) as seen by the fetcher."""

    url: str  # the URL requested first
    final_url: str  # after redirects
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes
    elapsed: float = 0.0
    permanent_redirect: str | None = None  # target of a 301/308 on the first hop chain
    redirected: bool = False

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")

    @property
    def last_modified(self) -> str | None:
        return self.headers.get("last-modified")


@dataclass(frozen=True)
class ParsedEntry:
    """One entry of a feed document (or one story of an HTML listing)."""

    key: str  # identity within the feed: "guid:…", "link:…" or "hash:…"
    guid: str | None = None
    link: str | None = None
    title: str | None = None
    author: str | None = None
    published: datetime | None = None  # UTC, tz-aware
    updated: datetime | None = None  # UTC, tz-aware
    summary: str | None = None  # HTML as given by the feed (unsanitized)
    content: str | None = None  # HTML as given by the feed (unsanitized)
    image: str | None = None
    base: str | None = None  # base URL for relative links in summary/content (xml:base)
    tags: tuple[str, ...] = ()  # categories / tags, as given (entry filters read them)


@dataclass(frozen=True)
class FeedHints:
    """Publishing hints a feed gives about how often to poll it."""

    ttl_seconds: float | None = None  # RSS <ttl>
    update_period_seconds: float | None = None  # sy:updatePeriod / sy:updateFrequency
    skip_hours: tuple[int, ...] = ()
    skip_days: tuple[str, ...] = ()
    # WebSub discovery: the hubs the document (or its Link headers) names, and its
    # rel="self" URL, the topic to subscribe to (see ``websub``)
    hubs: tuple[str, ...] = ()
    self_url: str | None = None


@dataclass(frozen=True)
class ParsedFeed:
    """The result of parsing one fetched document."""

    kind: str  # e.g. "rss20", "atom10", "json11", "html"
    title: str | None
    link: str | None
    entries: tuple[ParsedEntry, ...]
    problem: str | None = None  # bozo / recoverable problem, one sentence
    hints: FeedHints = field(default_factory=FeedHints)
    key_level: str = "guid"  # which identity level the document needed


@dataclass(frozen=True)
class Article:
    """Main text and metadata extracted from an article page."""

    url: str
    text: str  # plain text, paragraphs separated by blank lines
    html: str | None = None  # sanitized HTML of the main content
    title: str | None = None
    author: str | None = None
    published: datetime | None = None
    language: str | None = None
    image: str | None = None
    canonical_url: str | None = None  # rel=canonical / og:url as given by the page
    notes: tuple[str, ...] = ()  # values of the page we dropped (a date out of range)


@dataclass(frozen=True)
class TextFingerprint:
    """Word-shingle fingerprint of a normalized text (see ``dedup.fingerprint``)."""

    shingles: bytes  # 63-bit shingle hashes in text order (repeats kept), packed '<i8'
    bands: tuple[int, ...]  # MinHash LSH band keys (63-bit), one per band
    anchors: tuple[int, ...]  # the distinct sampled shingles whose site frequency is tracked


@dataclass(frozen=True)
class CleanEntry:
    """A parsed entry after sanitizing, ready for the store."""

    entry: ParsedEntry
    canonical_url: str | None
    summary: str | None  # sanitized HTML
    content: str | None  # sanitized HTML
    text: str | None  # plain text of the best content we have
    content_hash: str
    article: Article | None = None
    fingerprint: TextFingerprint | None = None  # of ``text``; computed in the process pool
    page_canonical_url: str | None = None  # the page's rel=canonical / og:url, normalized
    # why ``canonical_url`` does not identify this entry (shared by other entries of its
    # document, a site's front page; see ``dedup.document_urls``); None: it does
    url_refusal: str | None = None


@dataclass(frozen=True)
class Prepared:
    """A fetched document parsed and its entries sanitized (a process pool job's answer).

    ``feed.entries`` is empty: the entries travel once, as ``entries``."""

    feed: ParsedFeed
    entries: tuple[CleanEntry, ...]
    cut: int = 0  # entries of the document past max_entries_per_feed (not read)


@dataclass(frozen=True)
class ArticlePage:
    """An article page extracted (a process pool job's answer)."""

    article: Article
    page_canonical_url: str | None  # ``article.canonical_url`` normalized, or None


@dataclass(frozen=True)
class StoryCandidate:
    """An existing item that may carry the same story as a new one."""

    item_id: int
    story_id: int
    canonical_url: str | None
    title: str | None = None
    text: str | None = None  # its stored text, read only when ``shingles`` is missing
    page_canonical_url: str | None = None  # normalized rel=canonical / og:url of its page
    url: str | None = None
    first_seen_at: datetime | None = None
    band_matches: int = 0  # LSH bands shared with the new item (0: found by URL only)
    shingles: bytes | None = None  # stored shingle hashes of ``text``, packed (None: recompute)
    feed_id: int | None = None
    entry_key: str | None = None
    url_refusal: str | None = None  # why its canonical URL is not its identity (stored)
    same_feed: bool = False  # of the same feed as the item being decided


@dataclass(frozen=True)
class StoryDecision:
    """Which story an item belongs to."""

    story_id: int | None  # None = new story
    score: float
    reason: str
    item_id: int | None = None  # the candidate item that justified the decision
    merge_story_ids: tuple[int, ...] = ()  # other stories this item shows to be the same one
    url_refusal: str | None = None  # a URL shared with a candidate, not taken as identity: why


@dataclass(frozen=True)
class PollOutcome:
    """What one poll of one feed did; recorded on the feed and logged."""

    feed_url: str
    status: int | None  # HTTP status, None for network failures
    ok: bool
    not_modified: bool = False
    new_items: int = 0
    updated_items: int = 0
    new_stories: int = 0
    merged_items: int = 0
    error: str | None = None
    duration: float = 0.0
    skipped: str | None = None  # why it was not polled (hold, retired)
    entries_cut: int = 0  # entries of the document past max_entries_per_feed, not stored
    entries_blocked: int = 0  # entries of the document the feed's filters drop (all)
    blocked_new: int = 0  # of those, the ones evaluated by this poll (not remembered)
    # the WebSub hub and topic (rel="self") the document declared, both or neither
    push_hub: str | None = None
    push_topic: str | None = None


DORMANT_DAYS = 30  # continuous 404s before a feed is only probed weekly (policy.py)


class FeedStatus(Protocol):
    """What ``feed_state`` reads of a feed (a ``feeds`` row or a record holding its columns)."""

    @property
    def removed(self) -> bool: ...

    @property
    def disabled_reason(self) -> str | None: ...

    @property
    def enabled(self) -> bool: ...

    @property
    def hold_until(self) -> datetime | None: ...

    @property
    def error_count(self) -> int: ...

    @property
    def last_polled_at(self) -> datetime | None: ...

    @property
    def not_found_since(self) -> datetime | None: ...


def feed_state(now: datetime, feed: FeedStatus) -> str:
    """The one name operators see for a feed's state (``feeds list``, ``/metrics``):
    removed, retired, disabled, held, dormant, failing, pending or ok."""
    if feed.removed:
        return "removed"
    if feed.disabled_reason:
        return "retired"
    if not feed.enabled:
        return "disabled"
    if feed.hold_until is not None and feed.hold_until > now:
        return "held"
    if feed.not_found_since is not None and (now - feed.not_found_since).days >= DORMANT_DAYS:
        return "dormant"
    if feed.error_count:
        return "failing"
    if feed.last_polled_at is None:
        return "pending"
    return "ok"


@dataclass(frozen=True)
class FeedUpdate:
    """Everything a poll decided about its feed, written with its items in one transaction."""

    polled_at: datetime
    status: int | None
    ok: bool
    next_check_at: datetime
    error: str | None = None
    error_count: int = 0
    etag: str | None = None
    last_modified: str | None = None
    keep_validators: bool = False  # True: leave etag/last_modified as stored
    disabled_reason: str | None = None
    hold_until: datetime | None = None
    hold_host: str | None = None  # apply hold_until to every feed on this host
    interval_seconds: float | None = None  # adaptive interval learned
    redirect_url: str | None = None
    redirect_count: int = 0
    redirect_seen_at: datetime | None = None
    new_url: str | None = None  # confirmed permanent redirect: rewrite feeds.url
    not_found_since: datetime | None = None
    title: str | None = None
    blocked: BlockedChanges | None = None  # entries the filters blocked (store/blocked.py)
    # a document pushed by a WebSub hub, not a poll: the feed's poll state (validators,
    # status, next check, errors, lease) is left as it is; the push is recorded on the
    # subscription (``store/websub.py``)
    pushed: bool = False


@dataclass(frozen=True)
class BlockedEntry:
    """An entry the feed's filters dropped: remembered by key, never an item."""

    key: str
    rule: str  # the rule's label, or why no keep rule matched
    title: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class BlockedChanges:
    """What a poll changes in its feed's remembered blocked entries (``blocked_entries``)."""

    rules_hash: str  # the fingerprint of the rules that blocked ``add``
    add: tuple[BlockedEntry, ...] = ()  # blocked by this poll (a row of the key is replaced)
    forget: tuple[str, ...] = ()  # keys no longer blocked: left the document, or kept now


@dataclass(frozen=True)
class PollToSave:
    """What one poll hands to the save path (``ingest``): its feed's new state, and the
    entries it found new or changed (``(item id, entry)``). A poll without entries (a
    failure, a 304) saves its feed's row only. Saved all or nothing."""

    feed_id: int
    update: FeedUpdate
    new: tuple[CleanEntry, ...] = ()
    changed: tuple[tuple[int, CleanEntry], ...] = ()
    # the entry keys of the document this poll read (its feed's current document, which
    # retention never deletes from: ``feed_documents``); None: the record stays as it was
    # (a failure, a 304, a push)
    document: tuple[str, ...] | None = None

    @property
    def feed_only(self) -> bool:
        """Nothing but the feed's row to write (one executemany for many such polls)."""
        return not self.new and not self.changed and self.update.blocked is None


@dataclass(frozen=True)
class SaveResult:
    new_items: int = 0
    updated_items: int = 0
    new_stories: int = 0
    merged_items: int = 0


@dataclass(frozen=True)
class KnownEntry:
    item_id: int
    content_hash: str
    # the item was deleted by retention while its entry was still served (a tombstone,
    # ``item_tombstones``): known, never stored again, never updated
    deleted: bool = False


@dataclass(frozen=True)
class ItemAge:
    """What retention needs to know of one stored item (``retention.due``)."""

    item_id: int
    entry_key: str
    first_seen_at: datetime
    heavy: bool  # content, text or shingles still stored
    beyond_newest: bool = False  # past the feed's newest ``max_items_per_feed``


@dataclass(frozen=True)
class RetentionDue:
    """What retention removes from one feed now: items deleted, texts cleared."""

    delete: tuple[ItemAge, ...] = ()
    drop_text: tuple[int, ...] = ()
    kept_in_feed: int = 0  # items due by the rules but kept: still in the feed's document


@dataclass
class PruneCounts:
    """What a retention pass removed (or, dry, would remove)."""

    items: int = 0  # items deleted
    texts: int = 0  # items whose content, text and shingles were cleared
    stories: int = 0  # stories deleted with their last item
    tombstones: int = 0  # tombstones written (one per deleted item)
    tombstones_pruned: int = 0  # tombstones of entries that left their feed
    kept_in_feed: int = 0  # due by the rules, kept: still in their feed's document
    bytes: int = 0  # bytes of item data deleted or cleared (text columns and shingles)
    feeds: int = 0  # feeds something was removed from
    skipped_feeds: int = 0  # feeds whose current document is not recorded yet (no deletion)

    def add(self, other: PruneCounts) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class FeedLink:
    """A feed a web page points to (``<link rel=alternate>``) or one found by probing."""

    url: str
    kind: str  # "RSS", "Atom", "JSON Feed", "RDF" or "feed" when unknown
    title: str | None = None


@dataclass(frozen=True)
class Subscription:
    """One subscription read from an OPML list."""

    url: str
    title: str | None = None
    tags: tuple[str, ...] = ()


def url_key(url: str) -> str:
    """The identity of a feed URL for duplicate checks (``feeds.yaml`` and ``feeds
    import``): without scheme, ``www.``, default port, trailing slash and case of the host,
    so ``HTTP://www.a.example/feed.xml/`` and ``https://a.example/feed.xml`` are one feed."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    host = host[4:] if host.startswith("www.") else host
    try:
        port = parts.port
    except ValueError:  # not a number: keep it as written, the URL check reports it
        port = None
    port_text = f":{port}" if port and port not in (80, 443) else ""
    path = parts.path.rstrip("/") or ""
    query = f"?{parts.query}" if parts.query else ""
    return f"{host}{port_text}{path}{query}"


def url_host(url: str) -> str:
    """A URL's host, lowercased: the unit of per-host politeness and of a Retry-After
    hold (``feeds.host``)."""
    return (urlsplit(url).hostname or "").lower()


@dataclass(frozen=True)
class PushSubscription:
    """A WebSub subscription as the store keeps it (``websub_subscriptions``, with a few
    columns of its feed); ``websub`` decides what to do with it."""

    id: int
    feed_id: int
    hub: str
    topic: str
    callback_id: str  # the unguessable last segment of the callback URL
    secret: str = field(repr=False)  # the HMAC key of its deliveries; never logged
    state: str  # pending, live, failed, unsubscribing, unsubscribed
    request_mode: str | None = None  # the (un)subscribe request awaiting verification
    requested_at: datetime | None = None
    lease_seconds: int | None = None  # as granted by the hub
    lease_expires_at: datetime | None = None
    next_attempt_at: datetime | None = None
    attempts: int = 0  # failed attempts in a row
    last_error: str | None = None
    feed_url: str = ""
    configured_url: str | None = None
    feed_active: bool = True  # in feeds.yaml and enabled


# ---- events and webhooks (docs/push.md) --------------------------------------------------

#: every event type, in the order the docs list them; ``item.new`` is opt-in (noisy)
EVENT_TYPES = (
    "story.new",
    "story.sources_reached",
    "item.new",
    "feed.failing",
    "feed.recovered",
    "feed.retired",
    "feed.redirected",
)
#: what a webhook without ``events:`` gets: everything but ``item.new``
DEFAULT_EVENTS = tuple(t for t in EVENT_TYPES if t != "item.new")
EVENT_SCHEMA_VERSION = 1  # the ``version`` of every event document (docs/push.md)
DEFAULT_SOURCES_REACHED = 2


@dataclass(frozen=True)
class WebhookSpec:
    """One ``webhooks:`` entry of ``feeds.yaml``: where to POST which events."""

    url: str
    events: tuple[str, ...] = DEFAULT_EVENTS
    sources_reached: int = DEFAULT_SOURCES_REACHED  # story.sources_reached threshold
    secret: Secret | None = None  # signs each delivery (never stored in the database)
    tags: tuple[str, ...] = ()  # only stories/feeds with a feed carrying one of these tags
    feeds: tuple[str, ...] = ()  # only stories/feeds of these feeds (URL or name)


@dataclass(frozen=True)
class SavePlan:
    """A poll's story decisions, taken against a snapshot whose highest item id is
    ``mark`` (``ingest.plan``). Per entry still new (``keys``, in the poll's order): its
    site key; whether it needed a decision (``deciders``: False for a new story for
    certain) and the decision (None: new for certain); what its decision read: the ids
    found by URL (``url_found``) and by LSH band with their shared bands (``band_found``,
    within the limit), those of them with a story as candidates (``candidates``), the
    sites whose anchor counts it consulted (``consulted``: empty without candidates) and
    the anchors found common there (``common``)."""

    mark: int
    keys: tuple[str, ...]
    sites: tuple[int | None, ...]
    deciders: tuple[bool, ...]
    decisions: tuple[StoryDecision | None, ...]
    url_found: tuple[tuple[int, ...], ...]
    band_found: tuple[tuple[tuple[int, int], ...], ...]
    candidates: tuple[tuple[StoryCandidate, ...], ...]
    consulted: tuple[frozenset[int], ...]
    common: tuple[frozenset[int], ...]
