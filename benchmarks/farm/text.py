"""Real-looking text for the farm, built at generation time from the article text of the
Zyte article-extraction benchmark (MIT) in the shared corpora folder.

Nothing from the corpora is stored in the repository: the sentences are read from
``<corpora>/extraction/zyte-article-extraction-benchmark/ground-truth.json`` each time a
farm is generated, and recombined (a page's paragraphs are sentences drawn at random from the whole corpus).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

GROUND_TRUTH = Path("extraction/zyte-article-extraction-benchmark/ground-truth.json")
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"”’)]?\s+(?=[\"“‘(]?[A-Z0-9])")
_WS = re.compile(r"\s+")

FIRST_NAMES = (
    "Ada Alan Alice Amara Ana Arjun Beatriz Ben Carla Chen Chloe Daniel David Elena Emma Eva "
    "Farah Felix Grace Hana Hugo Ines Ivan Jamal Jana Jonas Julia Kai Kenji Lara Leila Liam "
    "Lucas Maya Mei Nadia Noah Nora Olga Omar Paula Priya Rafael Rosa Sam Sara Sofia Tariq "
    "Theo Tomas Uma Victor Yara Zoe"
).split()
LAST_NAMES = (
    "Abbott Adeyemi Alvarez Andersen Baker Becker Bianchi Brennan Chandra Costa Dubois Eriksen "
    "Fischer Garcia Haddad Hansen Ito Jensen Kaplan Kim Kowalski Larsen Lindqvist Lopez Marsh "
    "Moreau Nakamura Novak Okafor Olsen Park Patel Petrov Quinn Rahman Rossi Sato Schmidt "
    "Silva Singh Sousa Tanaka Torres Varga Weber Wright Yilmaz Zhang"
).split()
SECTIONS = (
    "World Politics Business Technology Science Health Culture Sport Climate Opinion "
    "Education Travel Economy Media Local"
).split()


@dataclass(frozen=True)
class Corpus:
    """Sentences grouped by source article, in reading order."""

    articles: tuple[tuple[str, ...], ...]

    sentences: tuple[str, ...] = ()

    @property
    def sentence_count(self) -> int:
        return len(self.sentences)


def load_corpus(corpora: Path) -> Corpus:
    path = corpora / GROUND_TRUTH
    if not path.exists():
        raise SystemExit(
            f"{path} not found: pass --corpora pointing at the shared corpora folder "
            "(the one holding extraction/zyte-article-extraction-benchmark/)"
        )
    truth = json.loads(path.read_text(encoding="utf-8"))
    articles: list[tuple[str, ...]] = []
    for key in sorted(truth):
        body = truth[key].get("articleBody") or ""
        sentences: list[str] = []
        for paragraph in body.split("\n"):
            paragraph = _WS.sub(" ", paragraph).strip()
            if not paragraph:
                continue
            for sentence in _SENTENCE_END.split(paragraph):
                sentence = sentence.strip()
                words = sentence.split()
                # keep real sentences: a few words, not a menu item or a caption fragment
                if 5 <= len(words) <= 60 and sentence[-1:] in '.!?"”’)…':
                    sentences.append(sentence)
        if len(sentences) >= 5:
            articles.append(tuple(sentences))
    if not articles:
        raise SystemExit(f"no usable sentences in {path}")
    return Corpus(tuple(articles), tuple(s for a in articles for s in a))
