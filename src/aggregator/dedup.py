"""Which story does an item belong to? Pure functions, no I/O, no clock.

Signals, strongest first:

1. **Canonical URL** — ``canonical_url`` strips tracking parameters (utm_*, fbclid,
   gclid, …) through courlan, drops fragments and default ports, lowercases scheme and
   host and sorts the query. Equal canonical links are the same page. The page's own
   ``rel=canonical`` / ``og:url`` (``page_canonical_url``) counts too, unless the two
   texts plainly disagree (some sites point every page's canonical at one URL).
2. **Text** — the extracted text is normalized (NFKC, case-folded, words only, so
   quotes, dashes and paragraph breaks do not matter) and cut into overlapping
   ``SHINGLE_WORDS``-word shingles, each hashed to 63 bits. Candidates are found through
   MinHash LSH (``BANDS`` bands of ``ROWS`` values, stored as indexed rows in the store);
   each candidate is then verified exactly, recomputing its shingles from its stored text:
   the score is the **containment** of the smaller text in the larger one (a truncated
   copy is contained in its full version), after discounting **common** shingles: those
   near a sampled "anchor" shingle that the site has already published in other stories
   (donation appeals, editor's notes, disclaimers). The anchors and their per-site
   frequencies are kept by the store.
3. **Title** — supporting evidence only: a borderline text score needs a similar title.

``docs/design.md`` (section "Story deduplication") gives the thresholds and the figures
they were chosen from.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt

from .records import CleanEntry, StoryCandidate, StoryDecision, TextFingerprint

# ---- parameters (measured: see docs/design.md, "Story deduplication") ----------------
SHINGLE_WORDS = 5  # words per shingle
BANDS = 20  # LSH bands ...
ROWS = 2  # ... of this many MinHash values each (K = 40 permutations)
ANCHOR_MODULUS = 16  # one shingle in 16 (by hash) is an anchor: its site frequency is kept
# a text of at least SHINGLE_WORDS words is fingerprinted: a short teaser (a linked-list
# post's one sentence) can still match its copy when the titles agree too
MIN_SHINGLES = 1
MIN_SHARED = 10.0  # a text match needs at least this many shared (non-common) shingles
TEXT_MATCH = 0.70  # containment at or above: same story on the text alone
SUPPORTED_MATCH = 0.40  # containment at or above: same story if the titles agree too
TITLE_MATCH = 0.70  # title similarity that supports a borderline text match
BRIDGE_MATCH = 0.40  # two stories are merged only if their own items overlap this much
CANONICAL_CONTRADICTION = 0.15  # page canonical equal but texts this different: ignore it
CANONICAL_MIN_SHINGLES = 8  # ... when the candidate's text has at least this many shingles
# a text-only match between two feeds needs this many words in the smaller text (counted
# after the boilerplate discount); below, the titles must agree too. Measured on the real
# feeds (benchmarks/dedup/realworld.py, text_match_by_length): text-only matches whose
# titles share < 30 % of words all had a smaller text under 30 words
MIN_EVIDENCE_WORDS = 50
# ... and when both titles are there and do not agree (similarity < TITLE_MATCH), this
# many: a retitled copy of an article is an article, while one short body under different
# titles is a template or filler (the Mozilla test pages' lorem ipsum, 65-140 words, glued
# up to 8 test pages into one story in the synthetic evaluation, depending on the order of
# the polls; on the real feeds no text match with contradicting titles has 30 words or more)
CONTRADICTED_MIN_WORDS = 200
# a shared URL across feeds is contradicted when the titles share less than this share of
# their words and the texts do not agree (share of the smaller text contained: below
# URL_TEXT_AGREEMENT, or no text on one side)
URL_TITLE_CONTRADICTION = 0.30
URL_TEXT_AGREEMENT = 0.50
# two entries of ONE feed are one story only when their titles are the same words and each
# text holds this share of the other (a republished post, an entry under a new GUID)
NEAR_IDENTICAL = 0.90
# candidates and boilerplate (the store reads them with these limits: ``ingest``)
MAX_BAND_CANDIDATES = 8  # items verified per new item, most shared bands first
MAX_URL_CANDIDATES = 5  # items sharing a canonical URL verified per new item, latest first
COMMON_DF = 3  # an anchor seen in this many stories of one site is boilerplate
FULL_SHARE = 0.8  # an item whose text is this share of its story's longest is "full"

# how each decision came about (``aggregator stories explain`` prints these)
RULES = {
    "new": "started the story",
    "canonical_url": "the same entry link, identifying one entry",
    "page_canonical": "the same page canonical URL (rel=canonical / og:url)",
    "text": f"another feed's text, >= {TEXT_MATCH:.0%} contained, >= {MIN_EVIDENCE_WORDS} words"
    f" ({CONTRADICTED_MIN_WORDS} if the titles differ)",
    "title+text": "another feed's text, with titles that agree",
    "republished": "the same feed: the same title and a near-identical text",
    "rebuild": "stories re-decided by `aggregator stories rebuild`",
}

_MASK63 = (1 << 63) - 1
_M61 = (1 << 61) - 1
_WORD = re.compile(r"\w+")


# ---- URLs ----------------------------------------------------------------------------


def site_key(url: str | None) -> int | None:
    """A 63-bit key for the host of a URL (``www.`` ignored): the unit of boilerplate
    (anchor counts are kept per site)."""
    host = (urlsplit(url).hostname or "").lower() if url else ""
    if host.startswith("www."):
        host = host[4:]
    if not host:
        return None
    digest = hashlib.blake2b(host.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & _MASK63


def canonical_url(url: str | None, *, keep_fragment: bool = False) -> str | None:
    """The URL that identifies a page regardless of tracking parameters and (unless
    ``keep_fragment``) fragments."""
    if not url:
        return None
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    fragment = parts.fragment if keep_fragment else ""
    import courlan  # loaded where URLs are normalized (the pool), not in the main process

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
    return urlunsplit((scheme, host, path, parts.query, fragment))


def is_site_root(url: str | None) -> bool:
    """A site's front page (empty path or ``/``, no query): it names a site, not an entry."""
    if not url:
        return False
    parts = urlsplit(url)
    return parts.path in ("", "/") and not parts.query and not parts.fragment


def page_canonical_url(url: str | None) -> str | None:
    """A page's ``rel=canonical`` / ``og:url``, normalized; None when it names a site's
    front page (a common misconfiguration that would glue every article together)."""
    canonical = canonical_url(url)
    if canonical is None or is_site_root(canonical):
        return None
    return canonical


@dataclass(frozen=True)
class DocumentEntry:
    """What ``document_urls`` needs of one entry of a feed document."""

    link: str | None
    key: str  # the entry's identity in its feed (GUID, else link, else hash)
    title: str | None
    text: str | None


def document_urls(entries: Sequence[DocumentEntry]) -> list[tuple[str | None, str | None]]:
    """Each entry's canonical URL, and why it does not identify the entry (None: it does).

    - The fragment is dropped (``#comments``, ``#more``) unless entries of the document
      differ only by it (one page of dated posts, ``…/26.html#a080605``): then it is kept.
    - A URL shared by two or more distinct entries (other keys, and other titles or texts)
      names a site or a listing, not an entry (a podcast whose every episode links to the
      home page): it is refused as an identity, as is any site's front page.
    """
    base = [canonical_url(e.link) for e in entries]
    fragments: dict[str, set[str]] = {}
    for entry, url in zip(entries, base, strict=True):
        fragment = urlsplit(entry.link.strip()).fragment if entry.link and url else ""
        if url and fragment:
            fragments.setdefault(url, set()).add(fragment)
    urls = [
        canonical_url(e.link, keep_fragment=True)
        if url is not None and len(fragments.get(url, ())) > 1
        else url
        for e, url in zip(entries, base, strict=True)
    ]
    sharing: dict[str, dict[str, DocumentEntry]] = {}  # url -> key -> its first entry
    for entry, url in zip(entries, urls, strict=True):
        if url is not None:
            sharing.setdefault(url, {}).setdefault(entry.key, entry)
    refusals: dict[str, str | None] = {}
    for url, by_key in sharing.items():
        refusal = None
        if is_site_root(url):
            refusal = "a site's front page names the site, not an entry"
        # the contents are compared only where entries of several keys share the URL (the
        # text key normalizes the whole text: for every entry it was a tenth of a pool job)
        elif len(by_key) > 1 and len({_content(e) for e in by_key.values()}) > 1:
            refusal = f"shared by {len(by_key)} different entries of the feed document"
        refusals[url] = refusal
    return [(url, refusals[url] if url is not None else None) for url in urls]


def _content(entry: DocumentEntry) -> tuple[str, str]:
    """What tells two entries of one document apart: normalized title, and text key."""
    return " ".join(normalize_words(entry.title or "")), _text_key(entry.text)


def _text_key(text: str | None) -> str:
    words = normalize_words(text) if text else []
    return hashlib.blake2b(" ".join(words).encode(), digest_size=8).hexdigest()


# ---- text fingerprints ---------------------------------------------------------------


def normalize_words(text: str) -> list[str]:
    """Words of a text, case-folded; punctuation, quotes and layout are dropped (an
    apostrophe joins its word: "don’t" and "don't" are both "dont")."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("’", "").replace("‘", "").replace("'", "").casefold()
    return _WORD.findall(text)


def _hash63(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") & _MASK63


# Shingle hashing is vectorized (numpy): a polynomial hash of each word's UTF-8 bytes from
# one prefix sum over the joined text, each word hash mixed (SplitMix64's finalizer), then
# a shingle = the mix of its words' hashes, each multiplied by a constant of its position.
# About twenty times faster than hashing every shingle's string with blake2b, which
# mattered: fingerprinting was a fifth of the CPU of a cold poll (docs/performance.md).
_U64 = np.uint64
_P = 0x100000001B3  # odd: invertible modulo 2**64
_P_INV = pow(_P, -1, 1 << 64)
_POSITION = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
     0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9],
    dtype=_U64,
)  # fmt: skip
_powers = np.empty(0, dtype=_U64)
_inverse_powers = np.empty(0, dtype=_U64)


def _power_tables(n: int) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """P**i and P**-i (mod 2**64) for i < n, grown on demand."""
    global _powers, _inverse_powers
    if len(_powers) < n:
        size = max(n, 2 * len(_powers), 4096)
        powers = np.ones(size, dtype=_U64)
        inverse = np.ones(size, dtype=_U64)
        with np.errstate(over="ignore"):
            np.cumprod(np.full(size - 1, _P, dtype=_U64), out=powers[1:])
            np.cumprod(np.full(size - 1, _P_INV, dtype=_U64), out=inverse[1:])
        _powers, _inverse_powers = powers, inverse
    return _powers, _inverse_powers


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    with np.errstate(over="ignore"):
        x = x ^ (x >> _U64(30))
        x = x * _U64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> _U64(27))
        x = x * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def shingle_array(text: str, k: int = SHINGLE_WORDS) -> npt.NDArray[np.int64]:
    """63-bit hashes of the text's ``k``-word shingles, in text order (repeats kept)."""
    words = normalize_words(text)
    if len(words) < k:
        return np.empty(0, dtype=np.int64)
    data = np.frombuffer(" ".join(words).encode(), dtype=np.uint8)
    n = len(data)
    powers, inverse = _power_tables(n)
    with np.errstate(over="ignore"):
        prefix = np.zeros(n + 1, dtype=_U64)
        np.cumsum((data.astype(_U64) + _U64(1)) * powers[:n], out=prefix[1:])
        spaces = np.flatnonzero(data == 32)
        starts = np.concatenate(([0], spaces + 1))
        ends = np.concatenate((spaces, [n]))
        lengths = (ends - starts).astype(_U64)
        words_h = _mix((prefix[ends] - prefix[starts]) * inverse[starts] + lengths)
        count = len(words_h) - k + 1
        acc = words_h[:count] * _POSITION[0]
        for j in range(1, k):
            acc = acc + words_h[j : j + count] * _POSITION[j % len(_POSITION)]
        return (_mix(acc) & _U64(_MASK63)).astype(np.int64)


def _distinct(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Sorted distinct values (``np.unique`` without its extra bookkeeping)."""
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def shingle_hashes(text: str, k: int = SHINGLE_WORDS) -> list[int]:
    """``shingle_array`` as Python ints."""
    return [int(h) for h in shingle_array(text, k).tolist()]


def minhash(shingles: Iterable[int] | npt.NDArray[np.int64]) -> list[int]:
    """MinHash signature of ``BANDS * ROWS`` values by one-permutation hashing (Li, Owen &
    Zhang 2012): the shingle hashes, already uniform, are split into that many bins by
    residue and each bin keeps its minimum; an empty bin borrows the next non-empty bin's
    value, offset by the distance ("rotation" densification, Shrivastava & Li 2014). Two
    texts agree on a bin with probability ≈ their Jaccard similarity, as with K separate
    permutations, at the cost of one pass instead of K."""
    k = BANDS * ROWS
    if not isinstance(shingles, np.ndarray):
        shingles = np.fromiter(shingles, dtype=np.int64)
    values = _distinct(shingles)
    if len(values) == 0:
        return []
    empty = _M61 + 1
    residues = values % k
    quotients = (values // k) & _M61
    order = np.lexsort((quotients, residues))  # by bin, smallest value first
    residues = residues[order]
    first = np.ones(len(residues), dtype=bool)
    first[1:] = residues[1:] != residues[:-1]
    table = np.full(k, empty, dtype=np.int64)
    table[residues[first]] = quotients[order][first]
    bins = [int(v) for v in table.tolist()]
    out = list(bins)
    for i in range(k):
        if bins[i] == empty:
            j, distance = i, 0
            while bins[j] == empty:
                j, distance = (j + 1) % k, distance + 1
            out[i] = bins[j] + distance * (_M61 + 2)
    return out


def lsh_bands(signature: Sequence[int]) -> tuple[int, ...]:
    """One 63-bit key per band: two texts sharing a key become candidates."""
    keys = []
    for band in range(BANDS):
        chunk = signature[band * ROWS : (band + 1) * ROWS]
        data = band.to_bytes(2, "big") + b"".join(v.to_bytes(16, "big") for v in chunk)
        keys.append(_hash63(data))
    return tuple(keys)


def is_anchor(shingle: int) -> bool:
    return shingle % ANCHOR_MODULUS == 0


def fingerprint(text: str | None) -> TextFingerprint | None:
    """The fingerprint of a text, or None when it is too short to say anything."""
    if not text:
        return None
    shingles = shingle_array(text)
    distinct = _distinct(shingles)
    if len(distinct) < MIN_SHINGLES:
        return None
    anchors = distinct[distinct % ANCHOR_MODULUS == 0]
    return TextFingerprint(
        shingles=shingles.astype("<i8").tobytes(),
        bands=lsh_bands(minhash(distinct)),
        anchors=tuple(int(a) for a in anchors.tolist()),
    )


def stored_fingerprint(shingles: bytes) -> TextFingerprint | None:
    """The fingerprint of a stored item from its stored shingle sequence
    (``items.shingles``), as ``fingerprint`` computed it from the text."""
    sequence = unpack(shingles)
    distinct = _distinct(sequence)
    if len(distinct) < MIN_SHINGLES:
        return None
    anchors = distinct[distinct % ANCHOR_MODULUS == 0]
    return TextFingerprint(
        shingles=shingles,
        bands=lsh_bands(minhash(distinct)),
        anchors=tuple(int(a) for a in anchors.tolist()),
    )


def fingerprints(texts: Sequence[str | None]) -> list[TextFingerprint | None]:
    """Fingerprints of several texts (one process-pool job per poll)."""
    return [fingerprint(t) for t in texts]


def unpack(shingles: bytes) -> npt.NDArray[np.int64]:
    """A fingerprint's (or a stored item's) shingle sequence as an array, without copying."""
    return np.frombuffer(shingles, dtype="<i8")


Shingles = Sequence[int] | npt.NDArray[np.int64] | bytes


def _as_array(shingles: Shingles) -> npt.NDArray[np.int64]:
    if isinstance(shingles, bytes):
        return unpack(shingles)
    return np.asarray(shingles, dtype=np.int64)


# ---- comparing two texts -------------------------------------------------------------


@dataclass(frozen=True)
class TextMatch:
    score: float  # containment of the smaller text in the larger, common shingles discounted
    shared: float  # shared shingles that count (not common)
    covered_new: float  # share of the new text found in the candidate
    covered_candidate: float  # share of the candidate found in the new text


_NONE = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class _Weighted:
    """A text's distinct shingles that count: the common ones (see ``_weighted``) removed."""

    counted: npt.NDArray[np.int64]  # sorted, distinct
    size: int  # len(counted)
    distinct: int  # distinct shingles before the discount


def _weighted(
    sequence: npt.NDArray[np.int64],
    common: frozenset[int],
    distinct: npt.NDArray[np.int64] | None = None,
) -> _Weighted:
    """A shingle is common when the nearest anchor in the sequence is a common anchor
    (boilerplate comes in blocks); ties go to the anchor on the left. ``distinct``:
    ``_distinct(sequence)`` when the caller has it already."""
    if distinct is None:
        distinct = _distinct(sequence)
    if len(common) == 0 or len(sequence) == 0:
        return _Weighted(distinct, len(distinct), len(distinct))
    anchor_at = np.flatnonzero(sequence % ANCHOR_MODULUS == 0)
    # a text has a few dozen anchors: set lookups beat np.isin's sorting at this size
    anchors = sequence[anchor_at].tolist()
    if common.isdisjoint(anchors):
        return _Weighted(distinct, len(distinct), len(distinct))
    common_at = np.fromiter((a in common for a in anchors), dtype=bool, count=len(anchors))
    # each shingle belongs to its nearest anchor: the anchors' cells split the sequence
    # at the midpoints between neighbours (a tie goes left), so one repeat marks them all
    bounds = (anchor_at[:-1] + anchor_at[1:]) // 2  # last index of each cell but the last
    lengths = np.diff(bounds, prepend=-1, append=len(sequence) - 1)
    flag = np.repeat(common_at, lengths)
    dropped = np.zeros(len(distinct), dtype=bool)
    dropped[np.searchsorted(distinct, sequence[flag])] = True
    counted = distinct[~dropped]
    return _Weighted(counted, len(counted), len(distinct))


def _match(new: _Weighted, candidate: _Weighted) -> TextMatch:
    if new.size <= 0 or candidate.size <= 0:
        return TextMatch(0.0, 0.0, 0.0, 0.0)
    n_shared = float(len(np.intersect1d(new.counted, candidate.counted, assume_unique=True)))
    return TextMatch(
        score=n_shared / min(new.size, candidate.size),
        shared=n_shared,
        covered_new=n_shared / new.size,
        covered_candidate=n_shared / candidate.size,
    )


def compare(new: Shingles, candidate: Shingles, common: frozenset[int] = frozenset()) -> TextMatch:
    """Containment of the smaller text in the larger one (shingle hash sequences), the
    common shingles of either text discounted from both."""
    return _match(_weighted(_as_array(new), common), _weighted(_as_array(candidate), common))


def title_words(title: str | None) -> frozenset[str]:
    return _title_words(title) if title else frozenset()


@functools.lru_cache(maxsize=1024)
def _title_words(title: str) -> frozenset[str]:
    """A title's words, kept for the titles seen last: an entry's title is compared with
    each of its candidates', and a candidate's with the entries it is found for."""
    return frozenset(normalize_words(title))


def title_similarity(a: str | None, b: str | None) -> float:
    """Share of the shorter title's words found in the longer one (a site name added as a
    prefix or suffix, or a change of case, does not lower it)."""
    wa, wb = title_words(a), title_words(b)
    if len(wa) < 2 or len(wb) < 2:
        return 1.0 if wa and wa == wb else 0.0
    return len(wa & wb) / min(len(wa), len(wb))


# ---- the decision --------------------------------------------------------------------


def title_overlap(a: str | None, b: str | None) -> float:
    """Share of the shorter title's words found in the other (0 when either is empty)."""
    wa, wb = title_words(a), title_words(b)
    if not wa or not wb:
        return 0.0
    return len(wa & wb) / min(len(wa), len(wb))


def titles_agree(a: str | None, b: str | None) -> bool:
    """The same title once normalized (words, case-folded)."""
    return normalize_words(a or "") == normalize_words(b or "")


def evidence_words(a: str | None, b: str | None) -> int:
    """Words the smaller text needs for a text-only match between two feeds whose titles
    are ``a`` and ``b``: ``CONTRADICTED_MIN_WORDS`` when both have titles that do not agree
    (``title_similarity`` below ``TITLE_MATCH``), else ``MIN_EVIDENCE_WORDS``."""
    if title_words(a) and title_words(b) and title_similarity(a, b) < TITLE_MATCH:
        return CONTRADICTED_MIN_WORDS
    return MIN_EVIDENCE_WORDS


def _words_of(shingles: int) -> int:
    """The words of a text that has this many distinct shingles (about)."""
    return shingles + SHINGLE_WORDS - 1 if shingles else 0


@dataclass(frozen=True)
class _Verdict:
    candidate: StoryCandidate
    score: float
    reason: str
    weighted: _Weighted | None  # the candidate's counted shingles (None: no text)


@dataclass(frozen=True)
class _Judged:
    verdict: _Verdict | None
    refusal: str | None  # a URL both share, not taken as the identity: why
    # the candidate shows its story to hold another post than the new entry (the same URL
    # with contradicting content, or another entry of the same feed at the same URL):
    # no other candidate's URL brings the entry into that story
    blocks: bool = False


def _url_refusal(
    clean: CleanEntry, candidate: StoryCandidate, url: str, raw: TextMatch | None
) -> str | None:
    """Why a URL that the new entry shares with the candidate does not make them one
    story (None: it does)."""
    if url == clean.canonical_url and clean.url_refusal:
        return f"{url}: {clean.url_refusal}"
    if is_site_root(url):
        return f"{url}: a site's front page names the site, not an entry"
    if url == candidate.canonical_url and candidate.url_refusal:
        return f"{url}: {candidate.url_refusal} (item {candidate.item_id})"
    if candidate.same_feed:
        return f"{url} already belongs to another entry of this feed (item {candidate.item_id})"
    titles = title_overlap(clean.entry.title, candidate.title)
    texts = raw.score if raw is not None else 0.0
    if titles < URL_TITLE_CONTRADICTION and texts < URL_TEXT_AGREEMENT:
        return (
            f"{url}: the content contradicts it (item {candidate.item_id}: titles share "
            f"{titles:.0%} of their words, texts {texts:.0%})"
        )
    return None


def _judge(
    clean: CleanEntry,
    candidate: StoryCandidate,
    mine: _Weighted | None,
    theirs: _Weighted | None,
    raw: TextMatch | None,
) -> _Judged:
    """One candidate: the rule that makes it the same story, if any.

    ``mine``/``theirs``: the counted (boilerplate-discounted) shingles of each text;
    ``raw``: their containment without the discount (None: a text is missing)."""
    match = _match(mine, theirs) if mine is not None and theirs is not None else None
    refusal = None
    blocks = False
    if clean.canonical_url and candidate.canonical_url == clean.canonical_url:
        refusal = _url_refusal(clean, candidate, clean.canonical_url, raw)
        if refusal is None:
            return _Judged(_Verdict(candidate, 1.0, "canonical_url", theirs), None)
        blocks = (
            not clean.url_refusal
            and not candidate.url_refusal
            and (not candidate.same_feed or not titles_agree(clean.entry.title, candidate.title))
        )
    my_urls = {clean.canonical_url, clean.page_canonical_url} - {None}
    their_urls = {candidate.canonical_url, candidate.page_canonical_url} - {None}
    shared = sorted(u for u in my_urls & their_urls if u)
    if (clean.page_canonical_url or candidate.page_canonical_url) and shared and not refusal:
        contradicted = (
            match is not None
            and theirs is not None
            and theirs.distinct >= CANONICAL_MIN_SHINGLES
            and match.score < CANONICAL_CONTRADICTION
        )
        refusal = _url_refusal(clean, candidate, shared[0], raw)
        if not contradicted and refusal is None:
            return _Judged(_Verdict(candidate, 1.0, "page_canonical", theirs), None)
    if candidate.same_feed:
        return _Judged(_republished(clean, candidate, theirs, raw), refusal, blocks)
    if match is None or raw is None:
        return _Judged(None, refusal, blocks)
    smaller = _words_of(min(mine.size, theirs.size)) if mine and theirs else 0
    if (
        match.score >= TEXT_MATCH
        and match.shared >= MIN_SHARED
        and smaller >= evidence_words(clean.entry.title, candidate.title)
    ):
        return _Judged(_Verdict(candidate, round(match.score, 4), "text", theirs), refusal)
    title = title_similarity(clean.entry.title, candidate.title)
    if title < TITLE_MATCH:
        return _Judged(None, refusal, blocks)
    # too short, too rewritten or mostly the site's boilerplate to be evidence alone: the
    # titles agree too (the boilerplate discount separates different articles of one
    # template; with agreeing titles the same text is the same article)
    text = max(match.score, raw.score)
    if text >= TEXT_MATCH or (match.score >= SUPPORTED_MATCH and match.shared >= MIN_SHARED):
        score = round(min(text, title), 4)
        return _Judged(_Verdict(candidate, score, "title+text", theirs), refusal)
    return _Judged(None, refusal, blocks)


def _republished(
    clean: CleanEntry, candidate: StoryCandidate, theirs: _Weighted | None, raw: TextMatch | None
) -> _Verdict | None:
    """Two entries of one feed: one story only when the titles are the same and the texts
    near-identical (a republished post, or the same entry under a new GUID); a feed lists
    each of its posts once, so overlapping texts alone prove nothing."""
    if not titles_agree(clean.entry.title, candidate.title):
        return None
    if raw is None:
        # no text on one side at least: only the same entry link with no text on either
        has_text = clean.fingerprint is not None or bool(candidate.shingles or candidate.text)
        same_link = clean.canonical_url is not None and (
            clean.canonical_url == candidate.canonical_url and not clean.url_refusal
        )
        if has_text or not same_link:
            return None
        return _Verdict(candidate, 1.0, "republished", theirs)
    if min(raw.covered_new, raw.covered_candidate) < NEAR_IDENTICAL:
        return None
    return _Verdict(candidate, round(raw.score, 4), "republished", theirs)


def _related_urls(clean: CleanEntry, candidate: StoryCandidate) -> bool:
    """Do the two share a canonical URL or a page canonical (the URL signals)?"""
    mine = {clean.canonical_url, clean.page_canonical_url} - {None}
    theirs = {candidate.canonical_url, candidate.page_canonical_url} - {None}
    return bool(mine & theirs)


def _candidate_shingles(candidate: StoryCandidate) -> npt.NDArray[np.int64]:
    if candidate.shingles is not None:
        return unpack(candidate.shingles)
    return shingle_array(candidate.text) if candidate.text else _NONE


def ignored(
    shared: int, title: str | None, candidate_title: str | None, *, same_feed: bool
) -> bool:
    """Is a candidate sharing no URL with the new item, and ``shared`` raw shingles,
    passed over by ``decide_story`` (before anything of it counts)? Discounting common
    shingles only lowers the shared count: no text match is possible, and with no URL in
    common no other signal applies. (``ingest.plan`` relies on this: such a candidate,
    written after a plan's snapshot, leaves the plan's decision as it was.)"""
    return shared == 0 or (
        shared < MIN_SHARED
        and title_similarity(title, candidate_title) < TITLE_MATCH
        and not same_feed
    )


def no_text_match(shared: int, title: str | None, candidate_title: str | None) -> bool:
    """Is a candidate of another feed, sharing no URL with the new item and ``shared`` raw
    shingles, sure to be judged no match (no verdict, no refusal, blocking nothing)?

    With no URL in common and titles that do not agree (``title_similarity`` below
    ``TITLE_MATCH``), only a "text" match is left, and it needs ``TEXT_MATCH`` of the
    smaller text's counted shingles shared, that smaller text having at least
    ``evidence_words`` words (``SHINGLE_WORDS - 1`` fewer shingles). Discounting common
    shingles never adds a shared one, so fewer raw shared shingles than that (less one,
    against rounding) cannot match, whatever the discount. Exact, and the cheap test that
    passes over most candidates: unrelated articles of one language share a few dozen
    5-word shingles, a text match needs 33 (titles missing) or 138 (titles disagreeing)."""
    if title_similarity(title, candidate_title) >= TITLE_MATCH:
        return False
    words = evidence_words(title, candidate_title)
    return shared < max(TEXT_MATCH * (words - (SHINGLE_WORDS - 1)) - 1, MIN_SHARED)


def shared_shingles(a: bytes, b: bytes) -> int:
    """How many distinct shingles two packed fingerprints share."""
    return len(np.intersect1d(_distinct(unpack(a)), _distinct(unpack(b)), assume_unique=True))


def decide_story(
    clean: CleanEntry,
    candidates: Sequence[StoryCandidate],
    common: frozenset[int] | Callable[[], frozenset[int]] = frozenset(),
) -> StoryDecision:
    """Same story as the best matching candidate, else a new story.

    ``common`` holds the anchor shingles that the store has seen in other stories of the
    new item's site or a candidate's site (boilerplate); a function giving them is called
    once, when a candidate first gets as far as the discount. When the item also matches
    candidates of other stories, and those stories' own texts overlap, the decision names
    them in ``merge_story_ids``: the store merges them into one. ``url_refusal`` says why a
    URL shared with a candidate was not taken as the identity, when one was not.
    """
    fp = clean.fingerprint
    sequence = unpack(fp.shingles) if fp is not None else _NONE
    raw = _distinct(sequence)
    mine: _Weighted | None = None
    verdicts: list[_Verdict] = []
    blocked: set[int] = set()
    refusal: str | None = None
    for candidate in candidates:
        shingles = _candidate_shingles(candidate)
        if not len(shingles) or fp is None:
            judged = _judge(clean, candidate, None, None, None)
        else:
            theirs = _distinct(shingles)
            common_raw = len(np.intersect1d(raw, theirs, assume_unique=True))
            if not _related_urls(clean, candidate) and (
                ignored(
                    common_raw, clean.entry.title, candidate.title, same_feed=candidate.same_feed
                )
                or (
                    not candidate.same_feed
                    and no_text_match(common_raw, clean.entry.title, candidate.title)
                )
            ):
                continue
            if callable(common):
                common = common()
            mine = mine or _weighted(sequence, common, raw)
            plain = _Weighted(raw, len(raw), len(raw))
            raw_match = _match(plain, _Weighted(theirs, len(theirs), len(theirs)))
            judged = _judge(clean, candidate, mine, _weighted(shingles, common, theirs), raw_match)
        if judged.verdict is not None:
            verdicts.append(judged.verdict)
        elif judged.blocks:
            blocked.add(candidate.story_id)
        refusal = refusal or judged.refusal
    url_reasons = ("canonical_url", "page_canonical")
    verdicts = [
        v for v in verdicts if v.reason not in url_reasons or v.candidate.story_id not in blocked
    ]
    if not verdicts:
        return StoryDecision(None, 0.0, "new", url_refusal=refusal or clean.url_refusal)
    strength = {"canonical_url": 3, "page_canonical": 2}
    verdicts.sort(
        key=lambda v: (strength.get(v.reason, 1), v.score, -v.candidate.item_id), reverse=True
    )
    best = verdicts[0]
    others: list[int] = []
    for verdict in verdicts[1:]:
        story = verdict.candidate.story_id
        if story == best.candidate.story_id or story in others:
            continue
        if _bridged(best, verdict):
            others.append(story)
    return StoryDecision(
        best.candidate.story_id,
        best.score,
        best.reason,
        item_id=best.candidate.item_id,
        merge_story_ids=tuple(others),
        url_refusal=refusal or clean.url_refusal,
    )


def _bridged(a: _Verdict, b: _Verdict) -> bool:
    """May the stories of two matched candidates be merged? Only when their own items
    agree, by the rules that would have merged them: an item that merely contains both
    (a digest) must not glue them together."""
    ca, cb = a.candidate, b.candidate
    same_feed = ca.feed_id is not None and ca.feed_id == cb.feed_id
    if same_feed and not titles_agree(ca.title, cb.title):
        return False
    if (
        not same_feed
        and ca.canonical_url
        and ca.canonical_url == cb.canonical_url
        and not (ca.url_refusal or cb.url_refusal or is_site_root(ca.canonical_url))
        and title_overlap(ca.title, cb.title) >= URL_TITLE_CONTRADICTION
    ):
        return True
    if a.weighted is None or b.weighted is None:
        return False
    match = _match(a.weighted, b.weighted)
    if match.shared < MIN_SHARED or match.score < BRIDGE_MATCH:
        return False
    if same_feed:
        return min(match.covered_new, match.covered_candidate) >= NEAR_IDENTICAL
    smaller = _words_of(min(a.weighted.size, b.weighted.size))
    return (
        smaller >= evidence_words(ca.title, cb.title)
        or title_similarity(ca.title, cb.title) >= TITLE_MATCH
    )
