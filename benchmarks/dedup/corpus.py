"""Real article texts from ``../shared/corpora`` and the copies the dedup issue names.

Nothing here is written into the repository: texts are read from the corpora folder at run
time (CleanEval and WikiRef220 are evaluation-only). Sources:

- Zyte article-extraction benchmark (MIT): ``ground-truth.json`` articleBody; title from the
  URL slug.
- Mozilla Readability test pages (Apache-2.0): text of ``expected.html``; title from
  ``expected-metadata.json``.
- CleanEval final subset (no licence: evaluation only): GoldStandard text; title from the
  input header.
- WikiRef220 (no licence: evaluation only): topic-labelled news texts; first line as title.
  Articles sharing a topic are *different* stories.

Copies (``make_copies``), each kind the issue lists:

- ``syndicated``: republished on another site: another template (each outlet has its own),
  a credit line added, the title restyled (case, site suffix or prefix).
- ``truncated``: the first half of the text (cut at a sentence) and a "read more" line.
- ``updated``: a sentence changed and one added.
- ``reflowed``: paragraphs split and joined differently, quotes straightened.
- ``tracking``: the origin page itself, linked with tracking parameters under a new GUID.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from html import unescape
from pathlib import Path

KINDS = ("syndicated", "truncated", "updated", "reflowed", "tracking")
MIN_WORDS = 60  # base articles shorter than this are skipped (not news articles)


@dataclass(frozen=True)
class Doc:
    id: str  # "<set>:<name>"
    title: str
    paragraphs: tuple[str, ...]
    topic: str | None = None  # WikiRef topic label

    @property
    def text(self) -> str:
        return "\n\n".join(self.paragraphs)

    @property
    def words(self) -> int:
        return sum(len(p.split()) for p in self.paragraphs)


@dataclass(frozen=True)
class Copy:
    story: str  # the base Doc id: the truth
    kind: str  # "origin", one of KINDS, or "boilerplate"
    title: str
    paragraphs: tuple[str, ...] = ()
    same_page_as: int | None = None  # "tracking": index of the origin copy whose page it links
    notes: dict[str, str] = field(default_factory=dict)


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'“‘(])")
_TAG = re.compile(r"<[^>]+>")
_BLOCK = re.compile(r"</(p|h[1-6]|li|blockquote|pre|div|tr)>|<br\s*/?>", re.I)


def _paragraphs(text: str) -> tuple[str, ...]:
    parts = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n|\n", text)]
    return tuple(p for p in parts if p)


def _slug_title(url: str) -> str:
    slug = url.rstrip("/").rsplit("/", 1)[-1]
    slug = re.sub(r"\.[a-z]+$", "", slug)
    words = [w for w in re.split(r"[-_]+", slug) if w and not re.fullmatch(r"[0-9a-f]{6,}|\d+", w)]
    title = " ".join(words[:14]).strip()
    return title[:1].upper() + title[1:] if title else "Untitled"


def load_zyte(corpora: Path) -> Iterator[Doc]:
    folder = corpora / "extraction" / "zyte-article-extraction-benchmark"
    truth = json.loads((folder / "ground-truth.json").read_text(encoding="utf-8"))
    for key in sorted(truth):
        entry = truth[key]
        yield Doc(f"zyte:{key[:12]}", _slug_title(entry["url"]), _paragraphs(entry["articleBody"]))


def load_mozilla(corpora: Path) -> Iterator[Doc]:
    folder = corpora / "extraction" / "mozilla-readability-test-pages"
    for page in sorted(p for p in folder.iterdir() if (p / "expected.html.gz").exists()):
        html = gzip.decompress((page / "expected.html.gz").read_bytes()).decode("utf-8", "replace")
        text = unescape(_TAG.sub(" ", _BLOCK.sub("\n", html)))
        meta = json.loads((page / "expected-metadata.json").read_text(encoding="utf-8"))
        yield Doc(
            f"mozilla:{page.name}", (meta.get("title") or page.name).strip(), _paragraphs(text)
        )


def load_cleaneval(corpora: Path) -> Iterator[Doc]:
    folder = corpora / "extraction" / "cleaneval-final-subset"
    for gold in sorted((folder / "GoldStandard").glob("*.txt"), key=lambda p: int(p.stem)):
        raw = gold.read_bytes().decode("utf-8", "replace")
        lines = raw.splitlines()
        if lines and lines[0].startswith("URL:"):
            lines = lines[1:]
        text = re.sub(r"<(p|h|l)>", "\n", "\n".join(lines))
        title = ""
        source = folder / "input" / f"{gold.stem}.html.gz"
        if source.exists():
            head = gzip.decompress(source.read_bytes())[:2000].decode("latin-1")
            match = re.search(r'title="([^"]*)"', head)
            title = unescape(match.group(1)).strip() if match else ""
        paragraphs = _paragraphs(text)
        yield Doc(f"cleaneval:{gold.stem}", title or " ".join(text.split()[:8]), paragraphs)


def load_wikiref(corpora: Path) -> Iterator[Doc]:
    folder = corpora / "neardup" / "wikiref220"
    for line in (folder / "labels.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        name, topic = line.split("\t")[:2]
        text = (folder / name).read_text(encoding="utf-8", errors="replace")
        paragraphs = _paragraphs(text)
        if not paragraphs:
            continue
        first = paragraphs[0]
        if len(first.split()) <= 16 and len(paragraphs) > 1:
            title, body = first, paragraphs[1:]
        else:
            title, body = " ".join(first.split()[:10]), paragraphs
        yield Doc(f"wikiref:{Path(name).stem}", title, tuple(body), topic=topic)


def load_all(
    corpora: Path, sets: tuple[str, ...] = ("zyte", "mozilla", "cleaneval", "wikiref")
) -> list[Doc]:
    loaders = {
        "zyte": load_zyte,
        "mozilla": load_mozilla,
        "cleaneval": load_cleaneval,
        "wikiref": load_wikiref,
    }
    docs: list[Doc] = []
    seen: set[str] = set()
    for name in sets:
        for doc in loaders[name](corpora):
            key = " ".join(doc.text.split())[:300]
            if doc.words < MIN_WORDS or key in seen:
                continue  # too short to be an article, or the same text twice in a set
            seen.add(key)
            docs.append(doc)
    return docs


# ---- copies --------------------------------------------------------------------------


def sentences(paragraph: str) -> list[str]:
    return [s for s in _SENTENCE.split(paragraph) if s.strip()]


def restyle_title(title: str, outlet: str, rng: random.Random) -> str:
    style = rng.choice(("upper", "title", "suffix", "prefix", "dash"))
    if style == "upper":
        return title.upper()
    if style == "title":
        return title.title()
    if style == "suffix":
        return f"{title} | {outlet}"
    if style == "prefix":
        return f"{outlet}: {title}"
    return f"{title} - {outlet}"


def truncate(doc: Doc, origin: str) -> tuple[str, ...]:
    """The first half of the words, cut at the end of a sentence, and a read-more line."""
    budget = doc.words // 2
    out: list[str] = []
    used = 0
    for paragraph in doc.paragraphs:
        if used >= budget:
            break
        words = len(paragraph.split())
        if used + words <= budget:
            out.append(paragraph)
            used += words
            continue
        kept: list[str] = []
        for sentence in sentences(paragraph):
            if used >= budget and kept:
                break
            kept.append(sentence)
            used += len(sentence.split())
        out.append(" ".join(kept))
        break
    out.append(f"Read more at {origin} …")
    return tuple(out)


_UPDATE_LINES = (
    "This story has been updated with additional information.",
    "Update: officials confirmed the details later in the day.",
    "This article was amended after publication to correct an error.",
)


def update(doc: Doc, rng: random.Random) -> tuple[str, ...]:
    """One sentence changed (words swapped, a number altered) and one sentence added."""
    paragraphs = list(doc.paragraphs)
    indices = [i for i, p in enumerate(paragraphs) if len(p.split()) >= 12]
    if indices:
        i = rng.choice(indices)
        parts = sentences(paragraphs[i])
        j = rng.randrange(len(parts))
        words = parts[j].split()
        if len(words) > 4:
            k = rng.randrange(1, len(words) - 2)
            words[k], words[k + 1] = words[k + 1], words[k]
            words.insert(k, rng.choice(("reportedly", "also", "later", "on Tuesday")))
        parts[j] = " ".join(words)
        paragraphs[i] = " ".join(parts)
    paragraphs.insert(rng.randrange(1, len(paragraphs) + 1), rng.choice(_UPDATE_LINES))
    return tuple(paragraphs)


_STRAIGHT = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"'})


def reflow(doc: Doc, rng: random.Random) -> tuple[str, ...]:
    """Join short paragraphs, split long ones at a sentence, straighten quotes."""
    out: list[str] = []
    for paragraph in doc.paragraphs:
        paragraph = paragraph.translate(_STRAIGHT)
        parts = sentences(paragraph)
        if len(parts) >= 4 and rng.random() < 0.7:
            cut = len(parts) // 2
            out.extend([" ".join(parts[:cut]), " ".join(parts[cut:])])
        elif out and len(out[-1].split()) < 60 and rng.random() < 0.6:
            out[-1] = f"{out[-1]} {paragraph}"
        else:
            out.append(paragraph)
    return tuple(out)


def make_copies(doc: Doc, outlets: list[str], rng: random.Random) -> list[tuple[str, Copy]]:
    """The origin on one outlet and two to four copies (distinct kinds) on other outlets."""
    origin_outlet, *others = rng.sample(outlets, k=min(len(outlets), 5))
    result = [(origin_outlet, Copy(doc.id, "origin", doc.title, doc.paragraphs))]
    kinds = rng.sample(KINDS, k=rng.randint(2, min(4, len(others))))
    for outlet, kind in zip(others, kinds, strict=False):
        title = restyle_title(doc.title, outlet, rng)
        if kind == "syndicated":
            credit = f"This article originally appeared on {origin_outlet} and is republished with permission."
            body = (*doc.paragraphs, credit) if rng.random() < 0.5 else (credit, *doc.paragraphs)
            copy = Copy(doc.id, kind, title, body)
        elif kind == "truncated":
            copy = Copy(doc.id, kind, title, truncate(doc, origin_outlet))
        elif kind == "updated":
            copy = Copy(doc.id, kind, doc.title, update(doc, rng))
        elif kind == "reflowed":
            copy = Copy(doc.id, kind, title, reflow(doc, rng))
        else:
            copy = Copy(doc.id, kind, doc.title, (), same_page_as=0)
        result.append((outlet, copy))
    return result


def boilerplate_site(
    docs: list[Doc], appeal: Doc, count: int, rng: random.Random, article_words: int = 45
) -> list[Copy]:
    """Short articles of one site that all carry one long block inside the body (an appeal):
    each is its own story. The block (about 180 words) is four times as long as each
    article (about 45 words, whole sentences), so without the discount their containment
    is about 0.8."""
    block = []
    words = 0
    for paragraph in appeal.paragraphs:
        block.append(paragraph)
        words += len(paragraph.split())
        if words >= 180:
            break
    out = []
    for doc in rng.sample(docs, k=min(count, len(docs))):
        short: list[str] = []
        n = 0
        for sentence in (x for paragraph in doc.paragraphs for x in sentences(paragraph)):
            short.append(sentence)
            n += len(sentence.split())
            if n >= article_words:
                break
        cut = max(1, len(short) // 2)
        body = (*short[:cut], *block, *short[cut:])
        out.append(replace(Copy(doc.id, "boilerplate", doc.title, body)))
    return out
