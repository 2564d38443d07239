"""The dedup decision on small real-text pairs: each kind of copy, and the negatives.

Texts: six Zyte benchmark article bodies (MIT, see tests/data/dedup/README.md), in pairs of
two different articles about one event.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import replace

import pytest

from aggregator import dedup
from aggregator.records import CleanEntry, ParsedEntry, StoryCandidate
from conftest import DATA

ARTICLES = json.loads((DATA / "dedup" / "zyte-articles.json").read_text(encoding="utf-8"))
TITLES = {
    "duvet-gizmodo": "A man developed 'feather duvet lung' after getting new bedding",
    "duvet-livescience": "Man's new feather duvet gave him a rare lung disease",
    "omar-thehill": "New York man pleads guilty to threatening to kill Omar",
    "omar-nbcnews": "New York man pleads guilty to threatening to kill Rep. Ilhan Omar",
    "wework-techcrunch": "New York State attorney general reportedly investigating WeWork",
    "wework-venturebeat": "New York State attorney general investigating WeWork and former CEO",
}


def body(name: str) -> str:
    return str(ARTICLES[name]["articleBody"])


def paragraphs(name: str) -> list[str]:
    return [p.strip() for p in body(name).split("\n") if p.strip()]


def entry(text: str, title: str, link: str | None = None, **kw: object) -> CleanEntry:
    clean = CleanEntry(
        entry=ParsedEntry(key=f"link:{link}", link=link, title=title),
        canonical_url=dedup.canonical_url(link),
        summary=None,
        content=None,
        text=text,
        content_hash="x",
    )
    return replace(clean, fingerprint=dedup.fingerprint(text), **kw)  # type: ignore[arg-type]


def candidate(
    text: str, title: str, story_id: int = 1, item_id: int = 10, link: str | None = None
) -> StoryCandidate:
    return StoryCandidate(
        item_id=item_id,
        story_id=story_id,
        canonical_url=dedup.canonical_url(link),
        title=title,
        text=text,
        url=link,
    )


# ---- the kinds of copy ----------------------------------------------------------------


def syndicated(name: str) -> str:
    credit = "This article originally appeared on Gizmodo and is republished with permission."
    return "\n\n".join([*paragraphs(name), credit])


def truncated(name: str) -> str:
    words = body(name).split()
    half = " ".join(words[: len(words) // 2])
    half = half[: half.rfind(".") + 1] or half  # end at a sentence
    return f"{half}\n\nRead more at Gizmodo …"


def updated(name: str) -> str:
    parts = paragraphs(name)
    parts[2] = parts[2].replace("doctors", "physicians", 1) + " He has since recovered."
    parts.insert(4, "This story has been updated with a statement from the hospital.")
    return "\n\n".join(parts)


def reflowed(name: str) -> str:
    """Paragraphs joined in pairs, then each split after its first sentence; quotes
    straightened."""
    parts = paragraphs(name)
    joined = [" ".join(parts[i : i + 2]) for i in range(0, len(parts), 2)]
    pieces = [piece for p in joined for piece in re.split(r"(?<=\.) (?=[A-Z])", p, maxsplit=1)]
    return "\n\n".join(pieces).translate(str.maketrans({"’": "'", "“": '"', "”": '"'}))


@pytest.mark.parametrize(
    ("kind", "make", "title"),
    [
        (
            "syndicated",
            syndicated,
            "A MAN DEVELOPED 'FEATHER DUVET LUNG' AFTER GETTING NEW BEDDING",
        ),
        (
            "truncated",
            truncated,
            "Gizmodo: A man developed 'feather duvet lung' after getting new bedding",
        ),
        ("updated", updated, TITLES["duvet-gizmodo"]),
        ("reflowed", reflowed, TITLES["duvet-gizmodo"] + " | Health News"),
    ],
)
def test_copies_join_the_original_story(kind: str, make: object, title: str) -> None:
    original = body("duvet-gizmodo")
    copy = make("duvet-gizmodo")  # type: ignore[operator]
    assert copy != original
    decision = dedup.decide_story(
        entry(copy, title), [candidate(original, TITLES["duvet-gizmodo"])]
    )
    assert decision.story_id == 1, (kind, decision)
    assert decision.reason == "text"
    assert decision.score >= dedup.TEXT_MATCH
    assert decision.item_id == 10
    # and the other way round: the original arrives after its copy
    back = dedup.decide_story(entry(original, TITLES["duvet-gizmodo"]), [candidate(copy, title)])
    assert back.story_id == 1, (kind, back)


def test_truncated_copy_is_contained_but_not_similar() -> None:
    full, half = body("duvet-gizmodo"), truncated("duvet-gizmodo")
    a, b = set(dedup.shingle_hashes(full)), set(dedup.shingle_hashes(half))
    jaccard = len(a & b) / len(a | b)
    match = dedup.compare(dedup.shingle_hashes(half), dedup.shingle_hashes(full))
    assert jaccard < 0.6  # a Jaccard threshold would miss it ...
    assert match.score > 0.95  # ... containment does not
    fa, fb = dedup.fingerprint(full), dedup.fingerprint(half)
    assert fa is not None and fb is not None
    assert set(fa.bands) & set(fb.bands), "LSH must make them candidates"


def test_tracking_parameters_and_new_guid_are_the_same_page() -> None:
    link = "https://gizmodo.com/a-man-developed-feather-duvet-lung-1839924942"
    new = entry("", "Feather duvet lung", link + "?utm_source=rss&utm_medium=feed#comments")
    decision = dedup.decide_story(new, [candidate("", "Feather duvet lung", link=link)])
    assert (decision.story_id, decision.reason, decision.score) == (1, "canonical_url", 1.0)


def test_page_canonical_counts_unless_the_texts_disagree() -> None:
    origin = "https://gizmodo.com/a-man-developed-feather-duvet-lung-1839924942"
    text = syndicated("duvet-gizmodo")
    copy = entry(
        text, "Duvet lung", "https://other.example/health/duvet", page_canonical_url=origin
    )
    same = dedup.decide_story(copy, [candidate(body("duvet-gizmodo"), "x", link=origin)])
    assert (same.story_id, same.reason) == (1, "page_canonical")
    # a site whose every page claims one canonical URL: the texts overrule it
    wrong = entry(
        body("omar-thehill"),
        TITLES["omar-thehill"],
        "https://a.example/x",
        page_canonical_url=origin,
    )
    other = dedup.decide_story(wrong, [candidate(body("duvet-gizmodo"), "x", link=origin)])
    assert other.story_id is None


def test_front_page_canonical_is_ignored() -> None:
    assert dedup.page_canonical_url("https://www.example.com/") is None
    assert dedup.page_canonical_url("https://www.example.com/?utm_source=x") is None
    assert dedup.page_canonical_url("https://example.com/news/a") == "https://example.com/news/a"


# ---- negatives ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("duvet-gizmodo", "duvet-livescience"),
        ("omar-thehill", "omar-nbcnews"),
        ("wework-techcrunch", "wework-venturebeat"),
    ],
)
def test_different_articles_about_one_event_stay_apart(a: str, b: str) -> None:
    # same event, same names and quotes, and (deliberately) near-identical titles
    decision = dedup.decide_story(entry(body(a), TITLES[b]), [candidate(body(b), TITLES[b])])
    assert decision.story_id is None, decision
    assert decision.reason == "new"


def _short_with_appeal(name: str, appeal: str) -> str:
    words = body(name).split()[:40]
    return " ".join(words) + ".\n\n" + appeal + "\n\nEnd of article."


APPEAL = " ".join(body("wework-venturebeat").split()[:200])  # stands in for a donation appeal


def test_shared_boilerplate_is_discounted_once_the_site_has_shown_it() -> None:
    a = _short_with_appeal("omar-thehill", APPEAL)
    b = _short_with_appeal("duvet-livescience", APPEAL)
    raw = dedup.compare(dedup.shingle_hashes(a), dedup.shingle_hashes(b))
    assert raw.score >= dedup.TEXT_MATCH  # without the discount they would merge
    common = frozenset(h for h in set(dedup.shingle_hashes(APPEAL)) if dedup.is_anchor(h))
    assert common, "the appeal has anchors"
    decision = dedup.decide_story(entry(a, "Omar"), [candidate(b, "Duvet")], common)
    assert decision.story_id is None, decision
    discounted = dedup.compare(dedup.shingle_hashes(a), dedup.shingle_hashes(b), common)
    assert discounted.score < dedup.SUPPORTED_MATCH


def test_discount_does_not_hide_a_real_copy_of_an_article_with_boilerplate() -> None:
    article = body("duvet-gizmodo") + "\n\n" + APPEAL
    copy = syndicated("duvet-gizmodo") + "\n\n" + APPEAL
    common = frozenset(h for h in set(dedup.shingle_hashes(APPEAL)) if dedup.is_anchor(h))
    decision = dedup.decide_story(entry(copy, "Duvet lung"), [candidate(article, "x")], common)
    assert (decision.story_id, decision.reason) == (1, "text")


def test_borderline_text_needs_the_title() -> None:
    # a heavily rewritten version: about half of the text kept
    parts = paragraphs("duvet-gizmodo")
    half = "\n\n".join(parts[: len(parts) // 2])
    rewritten = half + "\n\n" + body("duvet-livescience")
    match = dedup.compare(
        dedup.shingle_hashes(rewritten), dedup.shingle_hashes(body("duvet-gizmodo"))
    )
    assert dedup.SUPPORTED_MATCH <= match.score < dedup.TEXT_MATCH, match
    cand = candidate(body("duvet-gizmodo"), TITLES["duvet-gizmodo"])
    same_title = dedup.decide_story(
        entry(rewritten, TITLES["duvet-gizmodo"] + " - Gizmodo"), [cand]
    )
    assert (same_title.story_id, same_title.reason) == (1, "title+text")
    other_title = dedup.decide_story(entry(rewritten, "Hospital reports rare case"), [cand])
    assert other_title.story_id is None


def test_title_alone_never_merges() -> None:
    text = body("omar-nbcnews")
    decision = dedup.decide_story(
        entry(body("omar-thehill"), TITLES["omar-nbcnews"]),
        [candidate(text, TITLES["omar-nbcnews"])],
    )
    assert dedup.title_similarity(TITLES["omar-nbcnews"], TITLES["omar-nbcnews"]) == 1.0
    assert decision.story_id is None


def test_title_similarity_ignores_case_and_site_affixes() -> None:
    t = TITLES["wework-techcrunch"]
    assert dedup.title_similarity(t, t.upper()) == 1.0
    assert dedup.title_similarity(t, f"TechCrunch: {t}") == 1.0
    assert dedup.title_similarity(t, f"{t} | Reuters") == 1.0
    assert dedup.title_similarity(t, TITLES["duvet-gizmodo"]) < 0.3


def test_short_texts_have_no_fingerprint() -> None:
    assert dedup.fingerprint("Teaser 1.") is None
    assert dedup.fingerprint(None) is None
    assert dedup.fingerprint(body("omar-thehill")) is not None


def test_fingerprint_ignores_layout_quotes_and_case() -> None:
    text = body("duvet-gizmodo")
    a = dedup.fingerprint(text)
    b = dedup.fingerprint(reflowed("duvet-gizmodo").upper())
    assert a is not None and b is not None
    assert a.bands == b.bands and a.anchors == b.anchors


# ---- several stories ---------------------------------------------------------------------


def test_an_item_that_shows_two_stories_to_be_one_merges_them() -> None:
    parts = paragraphs("duvet-gizmodo")
    n = len(parts)
    early = "\n\n".join(parts[: int(n * 0.7)])  # two partial versions that overlap ...
    late = "\n\n".join(parts[int(n * 0.3) :])
    pair = dedup.compare(dedup.shingle_hashes(early), dedup.shingle_hashes(late))
    assert dedup.BRIDGE_MATCH <= pair.score < dedup.TEXT_MATCH  # ... too little to merge alone
    decision = dedup.decide_story(
        entry(body("duvet-gizmodo"), "Feather duvet lung"),
        [
            candidate(early, "A", story_id=1, item_id=10),
            candidate(late, "B", story_id=2, item_id=11),
        ],
    )
    assert decision.story_id in (1, 2)
    assert set(decision.merge_story_ids) == {1, 2} - {decision.story_id}


def test_a_digest_of_two_articles_does_not_glue_their_stories() -> None:
    digest = body("omar-thehill") + "\n\n" + body("wework-techcrunch")
    decision = dedup.decide_story(
        entry(digest, "Morning briefing"),
        [
            candidate(body("omar-thehill"), "Omar", story_id=1, item_id=10),
            candidate(body("wework-techcrunch"), "WeWork", story_id=2, item_id=11),
        ],
    )
    assert decision.merge_story_ids == ()


def _reference_counted(sequence: list[int], common: frozenset[int]) -> set[int]:
    """The discount written plainly: a shingle is common when its nearest anchor in the
    sequence (ties: the left one) is a common anchor."""
    anchors = [i for i, h in enumerate(sequence) if dedup.is_anchor(h)]
    flagged = set()
    for i, h in enumerate(sequence):
        if not anchors:
            break
        nearest = min(anchors, key=lambda a: (abs(a - i), a))
        if sequence[nearest] in common:
            flagged.add(h)
    return set(sequence) - flagged


def test_vectorized_compare_matches_the_plain_definition() -> None:
    rnd = random.Random(8)
    for _ in range(600):
        pool = [
            rnd.randrange(1 << 40) * dedup.ANCHOR_MODULUS
            + (0 if rnd.random() < 0.2 else rnd.randrange(1, dedup.ANCHOR_MODULUS))
            for _ in range(rnd.randrange(1, 60))
        ]
        a = [rnd.choice(pool) for _ in range(rnd.randrange(0, 90))]
        b = [rnd.choice(pool) for _ in range(rnd.randrange(0, 90))]
        anchors = sorted({h for h in pool if dedup.is_anchor(h)})
        common = frozenset(rnd.sample(anchors, rnd.randrange(0, len(anchors) + 1)))
        ca, cb = _reference_counted(a, common), _reference_counted(b, common)
        match = dedup.compare(a, b, common)
        shared = len(ca & cb)
        assert match.shared == shared
        expected = shared / min(len(ca), len(cb)) if ca and cb else 0.0
        assert match.score == pytest.approx(expected)


# ---- issue 17: rules that hold on real feeds ------------------------------------------


def _doc(link: str | None, key: str, title: str, text: str = "") -> dedup.DocumentEntry:
    return dedup.DocumentEntry(link, key, title, text)


def test_a_link_shared_by_different_entries_of_a_document_is_no_identity() -> None:
    urls = dedup.document_urls(
        [
            _doc("http://pod.example/show", "guid:1", "Episode 1"),
            _doc("http://pod.example/show", "guid:2", "Episode 2"),
            _doc("http://pod.example/ep/3", "guid:3", "Episode 3"),
            # the same entry twice under two GUIDs: its link still identifies it
            _doc("http://pod.example/ep/4", "guid:4", "Episode 4", "Text"),
            _doc("http://pod.example/ep/4", "guid:4b", "Episode 4", "Text"),
        ]
    )
    assert [refusal is not None for _, refusal in urls] == [True, True, False, False, False]
    assert "shared by 2 different entries" in str(urls[0][1])


def test_a_site_front_page_is_never_an_identity() -> None:
    ((url, refusal),) = dedup.document_urls([_doc("https://www.Example.com", "g", "One")])
    assert url == "https://www.example.com/" and refusal is not None and "front page" in refusal
    assert dedup.is_site_root("http://a.example/") and not dedup.is_site_root(
        "http://a.example/?p=1"
    )


def test_fragments_are_kept_only_where_entries_differ_by_them() -> None:
    urls = dedup.document_urls(
        [
            _doc("http://s.example/2017/06/26.html#a080605", "1", "One"),
            _doc("http://s.example/2017/06/26.html#a030658", "2", "Two"),
            _doc("http://s.example/post.html#comments", "3", "Three"),
        ]
    )
    assert [u for u, _ in urls] == [
        "http://s.example/2017/06/26.html#a080605",
        "http://s.example/2017/06/26.html#a030658",
        "http://s.example/post.html",
    ]
    assert all(refusal is None for _, refusal in urls)


def test_two_entries_of_one_feed_merge_only_with_the_same_title_and_text() -> None:
    text = body("omar-thehill")
    same_feed = replace(candidate(text, TITLES["omar-thehill"]), same_feed=True)
    republished = dedup.decide_story(entry(text, TITLES["omar-thehill"]), [same_feed])
    assert (republished.story_id, republished.reason) == (1, "republished")
    other_title = dedup.decide_story(entry(text, "Another post of the same feed"), [same_feed])
    assert other_title.story_id is None
    # another feed: the text alone is evidence
    other_feed = dedup.decide_story(
        entry(text, "Another headline"), [candidate(text, TITLES["omar-thehill"])]
    )
    assert (other_feed.story_id, other_feed.reason) == (1, "text")


def test_a_short_text_between_feeds_needs_agreeing_titles() -> None:
    teaser = " ".join(body("duvet-gizmodo").split()[:30])
    alone = dedup.decide_story(
        entry(teaser, "Kurz informiert: A, B, C"), [candidate(teaser, "Kurz informiert: X, Y")]
    )
    assert alone.story_id is None
    titled = dedup.decide_story(
        entry(teaser, TITLES["duvet-gizmodo"]), [candidate(teaser, TITLES["duvet-gizmodo"])]
    )
    assert (titled.story_id, titled.reason) == (1, "title+text")
    assert dedup.MIN_EVIDENCE_WORDS == 50


def test_one_body_under_different_titles_needs_a_long_text() -> None:
    """Test pages sharing a lorem-ipsum filler body are different pages; a long article
    under another outlet's headline is still the same article."""
    words = body("duvet-gizmodo").split()
    filler = " ".join(words[:120])
    pages = dedup.decide_story(
        entry(filler, "Basic tag cleaning test"), [candidate(filler, "Normalize space test")]
    )
    assert pages.story_id is None
    assert (
        dedup.decide_story(
            entry(filler, "Normalize space test - Gazette"),
            [candidate(filler, "Normalize space test")],
        ).story_id
        == 1
    )
    article = " ".join(words[: dedup.CONTRADICTED_MIN_WORDS + 20])
    assert len(article.split()) > dedup.CONTRADICTED_MIN_WORDS
    retitled = dedup.decide_story(
        entry(article, "Bedding blamed for rare illness"),
        [candidate(article, TITLES["duvet-gizmodo"])],
    )
    assert (retitled.story_id, retitled.reason) == (1, "text")


def test_a_shared_url_contradicted_by_the_content_is_no_identity() -> None:
    link = "http://example.com/1.html"
    a, b = body("omar-thehill"), body("duvet-gizmodo")
    contradicted = dedup.decide_story(
        entry(a, TITLES["omar-thehill"], link), [candidate(b, TITLES["duvet-gizmodo"], link=link)]
    )
    assert contradicted.story_id is None
    assert "contradicts" in str(contradicted.url_refusal)
    agreeing = dedup.decide_story(
        entry(a, TITLES["omar-thehill"], link),
        [candidate(a[:400], TITLES["omar-nbcnews"], link=link)],
    )
    assert (agreeing.story_id, agreeing.reason) == (1, "canonical_url")


def test_a_url_of_another_entry_of_the_same_feed_does_not_pull_an_entry_in() -> None:
    link = "http://example.com/news"
    old = replace(
        candidate(body("duvet-gizmodo"), TITLES["duvet-gizmodo"], link=link), same_feed=True
    )
    decision = dedup.decide_story(entry(body("omar-thehill"), TITLES["omar-thehill"], link), [old])
    assert decision.story_id is None
    assert "another entry of this feed" in str(decision.url_refusal)


def test_no_text_match_passes_over_only_candidates_that_cannot_match_on_text() -> None:
    """``dedup.no_text_match`` lets ``decide_story`` skip a candidate before any
    boilerplate discount. It must never skip one that the full rule would match: pairs
    of real articles recombined to share from nothing to everything, with random sets of
    common anchors discounted; whenever the discounted comparison (``dedup.compare``)
    reaches a text match, ``no_text_match`` on the raw shared count says False."""
    rng = random.Random(7)
    sentences = [
        s for name in sorted(ARTICLES) for s in re.split(r"(?<=[.!?])\s+", body(name)) if s
    ]
    titles = [None, "A title of its own here", "Another headline about something else"]
    matches = skipped = near = 0
    for _ in range(600):
        shared = rng.sample(sentences, rng.choice((0, 1, 1, 2, 2, 3, 4, 6, 8, 12)))
        a = " ".join(shared + rng.sample(sentences, rng.randint(0, 30)))
        b = " ".join(rng.sample(sentences, rng.randint(0, 30)) + shared)
        fa, fb = dedup.fingerprint(a), dedup.fingerprint(b)
        if fa is None or fb is None:
            continue
        raw = dedup.shared_shingles(fa.shingles, fb.shingles)
        anchors = sorted(set(fa.anchors) | set(fb.anchors))
        common = frozenset(rng.sample(anchors, rng.randint(0, len(anchors))))
        match = dedup.compare(fa.shingles, fb.shingles, common)
        title_a, title_b = rng.choice(titles), rng.choice(titles[:1] + titles[2:])
        smaller = round(match.shared / match.score) if match.score else 0  # min of sizes
        words = smaller + dedup.SHINGLE_WORDS - 1
        is_match = (
            match.score >= dedup.TEXT_MATCH
            and match.shared >= dedup.MIN_SHARED
            and words >= dedup.evidence_words(title_a, title_b)
        )
        skip = dedup.no_text_match(raw, title_a, title_b)
        matches += is_match
        skipped += skip
        near += any(0.7 * t < raw < 1.3 * t for t in (33, 138))
        assert not (is_match and skip), (raw, match, title_a, title_b)
    assert matches > 20 and skipped > 100 and near > 20  # both sides, and near the bound
