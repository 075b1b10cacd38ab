"""Weighted phrase scanning of page text (Aho-Corasick), as e2guardian's weighted phrase lists do.

Every whole-word occurrence adds its phrase's weight to the score of the phrase list's category;
a page whose total reaches the policy threshold is blocked as the highest-scoring category.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from esafety.policy.schema import Phrases
from esafety.policy.text import Matcher, fold

_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]{0,2000}>", re.IGNORECASE | re.DOTALL)
_ENTITY = re.compile(r"&(?:nbsp|amp|lt|gt|quot|#\d+);")


@dataclass(frozen=True, slots=True)
class ScanResult:
    score: int
    category: str  # highest-scoring category ('' if none)
    matches: tuple[tuple[str, int, str], ...]  # (phrase, weight, excerpt), first few

    def over(self, threshold: int) -> bool:
        return self.score >= threshold


class PhraseScanner:
    def __init__(self, phrases: Phrases):
        self.threshold = phrases.threshold
        self.max_bytes = phrases.max_bytes
        self._matcher = Matcher((p, (w, pl.category)) for pl in phrases.lists for p, w in pl.phrases)

    def scan_html(self, body: bytes, charset: str = "utf-8") -> ScanResult:
        text = body[: self.max_bytes].decode(charset or "utf-8", errors="replace")
        return self.scan_text(_ENTITY.sub(" ", _TAGS.sub(" ", text)))

    def scan_text(self, text: str) -> ScanResult:
        folded = fold(text)
        scores: dict[str, int] = {}
        matches: list[tuple[str, int, str]] = []
        for start, phrase, (weight, category) in self._matcher.find(folded):
            scores[category] = scores.get(category, 0) + weight
            if len(matches) < 10:
                excerpt = folded[max(0, start - 40): start + len(phrase) + 40].strip()
                matches.append((phrase, weight, excerpt))
        if not scores:
            return ScanResult(0, "", ())
        top = max(scores, key=scores.__getitem__)
        return ScanResult(sum(scores.values()), top, tuple(matches))
