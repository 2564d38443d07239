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

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import courlan

from .records import CleanEntry, StoryCandidate, StoryDecision, TextFingerprint

# ---- parameters (measured: see docs/design.md, "Story deduplication") ----------------
SHINGLE_WORDS = 5  # words per shingle
BANDS = 20  # LSH bands ...
ROWS = 2  # ... of this many MinHash values each (K = 40 permutations)
ANCHOR_MODULUS = 16  # one shingle in 16 (by hash) is an anchor: its site frequency is kept
MIN_SHINGLES = 8  # fewer distinct shingles: no text fingerprint (titles/teasers only)
MIN_SHARED = 10.0  # a text match needs at least this many shared (non-common) shingles
TEXT_MATCH = 0.70  # containment at or above: same story on the text alone
SUPPORTED_MATCH = 0.40  # containment at or above: same story if the titles agree too
TITLE_MATCH = 0.70  # title similarity that supports a borderline text match
BRIDGE_MATCH = 0.40  # two stories are merged only if their own items overlap this much
CANONICAL_CONTRADICTION = 0.15  # page canonical equal but texts this different: ignore it

_MASK63 = (1 << 63) - 1
_M61 = (1 << 61) - 1
_WORD = re.compile(r"\w+")
_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "„": '"', "«": '"', "»": '"'})


# ---- URLs ----------------------------------------------------------------------------


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


def page_canonical_url(url: str | None) -> str | None:
    """A page's ``rel=canonical`` / ``og:url``, normalized; None when it names a site's
    front page (a common misconfiguration that would glue every article together)."""
    canonical = canonical_url(url)
    if canonical is None:
        return None
    parts = urlsplit(canonical)
    if parts.path in ("", "/") and not parts.query:
        return None
    return canonical


# ---- text fingerprints ---------------------------------------------------------------


def normalize_words(text: str) -> list[str]:
    """Words of a text, case-folded; punctuation, quotes and layout are dropped."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).casefold()
    return _WORD.findall(text.replace("'", ""))


def _hash63(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") & _MASK63


def shingle_hashes(text: str, k: int = SHINGLE_WORDS) -> list[int]:
    """63-bit hashes of the text's ``k``-word shingles, in text order (repeats kept)."""
    words = normalize_words(text)
    if len(words) < k:
        return []
    return [_hash63(" ".join(words[i : i + k]).encode()) for i in range(len(words) - k + 1)]


def minhash(shingles: Iterable[int]) -> list[int]:
    """MinHash signature of ``BANDS * ROWS`` values by one-permutation hashing (Li, Owen &
    Zhang 2012): the shingle hashes, already uniform, are split into that many bins by
    residue and each bin keeps its minimum; an empty bin borrows the next non-empty bin's
    value, offset by the distance ("rotation" densification, Shrivastava & Li 2014). Two
    texts agree on a bin with probability ≈ their Jaccard similarity, as with K separate
    permutations, at the cost of one pass instead of K."""
    k = BANDS * ROWS
    empty = _M61 + 1
    bins = [empty] * k
    for x in set(shingles):
        i = x % k
        v = (x // k) & _M61
        if v < bins[i]:
            bins[i] = v
    if all(v == empty for v in bins):
        return []
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
    shingles = shingle_hashes(text)
    distinct = set(shingles)
    if len(distinct) < MIN_SHINGLES:
        return None
    anchors = tuple(sorted(h for h in distinct if is_anchor(h)))
    return TextFingerprint(
        shingles=tuple(shingles), bands=lsh_bands(minhash(distinct)), anchors=anchors
    )


def fingerprints(texts: Sequence[str | None]) -> list[TextFingerprint | None]:
    """Fingerprints of several texts (one process-pool job per poll)."""
    return [fingerprint(t) for t in texts]


# ---- comparing two texts -------------------------------------------------------------


@dataclass(frozen=True)
class TextMatch:
    score: float  # containment of the smaller text in the larger, common shingles discounted
    shared: float  # shared shingles that count (not common)
    covered_new: float  # share of the new text found in the candidate
    covered_candidate: float  # share of the candidate found in the new text


def _weighted(sequence: Sequence[int], common: frozenset[int]) -> tuple[set[int], set[int]]:
    """(distinct shingles, the common ones among them): a shingle is common when the
    nearest anchor in the sequence is a common anchor (boilerplate comes in blocks)."""
    distinct = set(sequence)
    if not common or not any(is_anchor(h) and h in common for h in distinct):
        return distinct, set()
    n = len(sequence)
    left: list[bool | None] = [None] * n
    left_dist = [n + 1] * n
    last: bool | None = None
    last_at = -(n + 1)
    for i, h in enumerate(sequence):
        if is_anchor(h):
            last, last_at = h in common, i
        left[i], left_dist[i] = last, i - last_at
    flagged: set[int] = set()
    nxt: bool | None = None
    next_at = 2 * n + 2
    for i in range(n - 1, -1, -1):
        h = sequence[i]
        if is_anchor(h):
            nxt, next_at = h in common, i
        right_dist = next_at - i
        flag = left[i] if left_dist[i] <= right_dist else nxt
        if flag:
            flagged.add(h)
    return distinct, flagged


def compare(
    new: Sequence[int], candidate: Sequence[int], common: frozenset[int] = frozenset()
) -> TextMatch:
    """Containment of the smaller text in the larger one (shingle hash sequences)."""
    new_set, new_common = _weighted(new, common)
    cand_set, cand_common = _weighted(candidate, common)
    shared = (new_set & cand_set) - new_common - cand_common
    w_new = len(new_set) - len(new_common)
    w_cand = len(cand_set) - len(cand_common)
    if w_new <= 0 or w_cand <= 0:
        return TextMatch(0.0, 0.0, 0.0, 0.0)
    n_shared = float(len(shared))
    return TextMatch(
        score=n_shared / min(w_new, w_cand),
        shared=n_shared,
        covered_new=n_shared / w_new,
        covered_candidate=n_shared / w_cand,
    )


def title_words(title: str | None) -> set[str]:
    return set(normalize_words(title)) if title else set()


def title_similarity(a: str | None, b: str | None) -> float:
    """Share of the shorter title's words found in the longer one (a site name added as a
    prefix or suffix, or a change of case, does not lower it)."""
    wa, wb = title_words(a), title_words(b)
    if len(wa) < 2 or len(wb) < 2:
        return 1.0 if wa and wa == wb else 0.0
    return len(wa & wb) / min(len(wa), len(wb))


# ---- the decision --------------------------------------------------------------------


@dataclass(frozen=True)
class _Verdict:
    candidate: StoryCandidate
    score: float
    reason: str
    shingles: tuple[int, ...]


def _judge(
    clean: CleanEntry,
    candidate: StoryCandidate,
    shingles: Sequence[int],
    common: frozenset[int],
) -> _Verdict | None:
    fp = clean.fingerprint
    match = compare(fp.shingles, shingles, common) if fp is not None and shingles else None
    if clean.canonical_url and candidate.canonical_url == clean.canonical_url:
        return _Verdict(candidate, 1.0, "canonical_url", tuple(shingles))
    mine = {clean.canonical_url, clean.page_canonical_url} - {None}
    theirs = {candidate.canonical_url, candidate.page_canonical_url} - {None}
    if (clean.page_canonical_url or candidate.page_canonical_url) and mine & theirs:
        contradicted = (
            match is not None
            and fp is not None
            and len(set(shingles)) >= MIN_SHINGLES
            and match.score < CANONICAL_CONTRADICTION
        )
        if not contradicted:
            return _Verdict(candidate, 1.0, "page_canonical", tuple(shingles))
    if match is None or match.shared < MIN_SHARED:
        return None
    if match.score >= TEXT_MATCH:
        return _Verdict(candidate, round(match.score, 4), "text", tuple(shingles))
    if match.score >= SUPPORTED_MATCH:
        title = title_similarity(clean.entry.title, candidate.title)
        if title >= TITLE_MATCH:
            score = round(min(match.score, title), 4)
            return _Verdict(candidate, score, "title+text", tuple(shingles))
    return None


def decide_story(
    clean: CleanEntry,
    candidates: Sequence[StoryCandidate],
    common: frozenset[int] = frozenset(),
) -> StoryDecision:
    """Same story as the best matching candidate, else a new story.

    ``common`` holds the anchor shingles that the store has seen in other stories of the
    new item's site or a candidate's site (boilerplate). When the item also matches
    candidates of other stories, and those stories' own texts overlap, the decision names
    them in ``merge_story_ids``: the store merges them into one.
    """
    verdicts: list[_Verdict] = []
    for candidate in candidates:
        if candidate.shingles is not None:
            shingles: Sequence[int] = candidate.shingles
        else:
            shingles = shingle_hashes(candidate.text) if candidate.text else []
        verdict = _judge(clean, candidate, shingles, common)
        if verdict is not None:
            verdicts.append(verdict)
    if not verdicts:
        return StoryDecision(None, 0.0, "new")
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
        if _bridged(best, verdict, common):
            others.append(story)
    return StoryDecision(
        best.candidate.story_id,
        best.score,
        best.reason,
        item_id=best.candidate.item_id,
        merge_story_ids=tuple(others),
    )


def _bridged(a: _Verdict, b: _Verdict, common: frozenset[int]) -> bool:
    """May the stories of two matched candidates be merged? Only when their own items
    agree: an item that merely contains both (a digest) must not glue them together."""
    ca, cb = a.candidate, b.candidate
    if ca.canonical_url and ca.canonical_url == cb.canonical_url:
        return True
    if not a.shingles or not b.shingles:
        return False
    match = compare(a.shingles, b.shingles, common)
    return match.shared >= MIN_SHARED and match.score >= BRIDGE_MATCH
