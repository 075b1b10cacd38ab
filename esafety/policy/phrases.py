"""Weighted phrase scanning of page text (Aho-Corasick), as e2guardian's weighted phrase lists do.

Every whole-word occurrence adds its phrase's weight to the score of the phrase list's category;
a page whose total reaches the policy threshold is blocked as the highest-scoring category.
"""

from __future__ import annotations

import codecs
import functools
import re
from dataclasses import dataclass

import ahocorasick_rs

from esafety.policy.schema import Phrases
from esafety.policy.text import Matcher, fold

_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]{0,2000}>", re.IGNORECASE | re.DOTALL)
_ENTITY = re.compile(r"&(?:nbsp|amp|lt|gt|quot|#\d+);")
_ALNUM = tuple(b < 128 and chr(b).isalnum() for b in range(256))  # str.isalnum of an ASCII byte


@dataclass(frozen=True, slots=True)
class ScanResult:
    score: int
    category: str  # highest-scoring category ('' if none)
    matches: tuple[tuple[str, int, str], ...]  # (phrase, weight, excerpt), first few

    def over(self, threshold: int) -> bool:
        return self.score >= threshold


_NO_MATCH = ScanResult(0, "", ())
_ASCII = bytes(range(128))


@functools.lru_cache(maxsize=256)
def _codec(charset: str) -> tuple[str, bool]:
    """The codec to decode a page with, and whether ASCII bytes are the same text in it (not so in
    UTF-16 or UTF-7). An unknown charset (the page's own claim) is read as UTF-8: it must not
    switch scanning off."""
    try:
        name = codecs.lookup(charset or "utf-8").name
    except LookupError:
        name = "utf-8"
    return name, _ASCII.decode(name, errors="replace") == _ASCII.decode("ascii")


def _runs(key: str) -> list[str]:
    """Maximal alphanumeric runs of a folded phrase (str.isalnum, as the matcher's word boundaries)."""
    return "".join(c if c.isalnum() else " " for c in key).split()


class PhraseScanner:
    def __init__(self, phrases: Phrases):
        self.threshold = phrases.threshold
        self.max_bytes = phrases.max_bytes
        self._matcher = Matcher((p, (w, pl.category)) for pl in phrases.lists for p, w in pl.phrases)
        # Prefilter for ASCII pages (most pages, and almost all clean ones). A whole-word match of a
        # phrase makes each alphanumeric run of the phrase a whole alphanumeric run of the scanned
        # text, and every such run of the scanned text (tags and entities become spaces, whitespace
        # is only squashed) is one of the raw page too. So when no phrase's longest run occurs as a
        # whole word in the raw page, nothing can match: the tag stripping, folding and matching
        # (~40x the cost of this search) are skipped with the same result. The search is Rust's
        # aho-corasick over bytes, leftmost-longest so that its SIMD prefilter runs (~3 us for 12 KB;
        # pyahocorasick's walk over str takes ~65). Non-overlapping matches lose nothing: needles are
        # all alphanumeric, so a needle starting inside a reported match has an alphanumeric left
        # neighbour, and a shorter needle at the same start has one on its right where the longer did.
        needles = [max(reversed(_runs(k)), key=len, default="") for k in self._matcher.keys]  # ties: the last
        self._prefilter_on = all(needles)  # off when some phrase has no alphanumeric run to look for
        ascii_needles = sorted({n.encode("ascii") for n in needles if n and n.isascii()})
        self._prefilter = ahocorasick_rs.BytesAhoCorasick(
            ascii_needles, matchkind=ahocorasick_rs.MATCHKIND_LEFTMOST_LONGEST) if ascii_needles else None

    def scan_html(self, body: bytes, charset: str = "utf-8") -> ScanResult:
        head = body if len(body) <= self.max_bytes else body[: self.max_bytes]
        codec, ascii_compatible = _codec(charset)
        if self._prefilter_on and ascii_compatible and head.isascii():
            if not self._may_match(head.lower()):
                return _NO_MATCH
            return self._scan_markup(head.decode("ascii"))
        return self._scan_markup(head.decode(codec, errors="replace"))

    def _may_match(self, low: bytes) -> bool:
        """Does some phrase's needle occur as a whole word in this lower-cased ASCII page?"""
        if self._prefilter is None:
            return False  # every phrase has a non-ASCII character: none can match ASCII text
        end = len(low)
        for _i, start, stop in self._prefilter.find_matches_as_indexes(low):
            if (start == 0 or not _ALNUM[low[start - 1]]) and (stop == end or not _ALNUM[low[stop]]):
                return True
        return False

    def _scan_markup(self, text: str) -> ScanResult:
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
