"""Phrase scanning: the ASCII prefilter never changes a result, only skips work on pages with no match."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from esafety.policy.loader import load_policy
from esafety.policy.phrases import PhraseScanner
from esafety.policy.schema import PhraseList, Phrases

ROOT = Path(__file__).resolve().parents[2]

# Words around the policy's phrases: the phrases' own words, near misses that contain them
# ("freedom", "pornography", "self_harm"), punctuation and digits glued to them, markup that hides
# or splits them, entities, case, and non-ASCII text (where the prefilter stands aside).
_PIECES = [
    "free", "porn", "spins", "online", "casino", "race", "war", "self", "harm", "tips", "pro-ana", "Pro-Ana",
    "PORN", "Free", "freedom", "pornography", "grace", "replace", "place your bet", "place", "your", "bet",
    "jackpot", "jackpots", "porn2", "2porn", "free_porn", "free-porn", "(porn)", "porn.", "nsfw!", "x nsfw",
    "kill the infidels", "painless suicide", "suicide", "the", "news", "term", "dates", "school", "a", "is",
    "<b>", "</b>", "<p>", "<a href='/porn'>", "<script>var porn = 1;</script>", "<style>.free{}</style>",
    "&amp;", "&nbsp;", "&#39;", "&lt;", "porn&amp;", "&amp;porn", "free&nbsp;porn", "\n", "\t", "  ",
    "hardcore porn", "xxx videos", "nude girls", "sex cam", "sex", "cam", "join the caliphate", "great",
    "replacement", "white genocide", "pornografía", "pornografia", "café", "naïve", "ﬁ", "ＰＯＲＮ", "Æ",
]


def _pages(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    pages = []
    for i in range(n):
        words = [rng.choice(_PIECES) for _ in range(rng.randrange(0, 60))]
        seps = [rng.choice([" ", "", " ", "\n", ", "]) for _ in words]
        text = "".join(w + s for w, s in zip(words, seps, strict=True))
        if i % 3:  # most pages plain ASCII, as most of the web is: the prefilter's case
            text = text.encode("ascii", "ignore").decode()
        pages.append(text.encode())
    return pages


@pytest.fixture(scope="module")
def scanner() -> PhraseScanner:
    return PhraseScanner(load_policy(ROOT / "policies" / "aup.yaml").phrases)


def _full(scanner: PhraseScanner, page: bytes) -> object:
    """The scan without the prefilter: what scan_html returned before it existed."""
    return scanner._scan_markup(page[: scanner.max_bytes].decode("utf-8", errors="replace"))


def test_prefilter_gives_the_same_result_as_the_full_scan(scanner: PhraseScanner) -> None:
    pages = _pages(3000, seed=7)
    matched = 0
    for page in pages:
        got = scanner.scan_html(page)
        assert got == _full(scanner, page), page
        matched += got.score > 0
    assert 100 < matched < len(pages) - 100  # both outcomes well represented


def test_clean_ascii_page_is_skipped_and_a_phrase_still_found(scanner: PhraseScanner) -> None:
    clean = b"<html><body><p>Term dates and the school play. Freedom of information.</p></body></html>"
    assert scanner.scan_html(clean).score == 0
    assert not scanner._may_match(clean.lower())
    hit = b"<p>Win at our ONLINE <b>casino</b> with free&nbsp;spins</p>"
    assert scanner._may_match(hit.lower())
    result = scanner.scan_html(hit)
    assert result == _full(scanner, hit)
    assert result.category == "gambling" and result.score == 70


def _scanner_for(*phrases: str) -> PhraseScanner:
    return PhraseScanner(Phrases(frozenset({"pupils"}), 100, 1 << 20,
                                 (PhraseList("l", "cat", tuple((p, 10) for p in phrases)),), "A2"))


def test_phrase_without_a_word_turns_the_prefilter_off() -> None:
    s = _scanner_for("porn", ":-)")
    assert not s._prefilter_on
    page = b"<p>smile :-) please</p>"
    assert s.scan_html(page) == _full(s, page) and s.scan_html(page).score == 10


@pytest.mark.parametrize("phrases", [("Καζίνο", "日本"), ("ñandú", "Καζίνο")])  # ñandú folds to ASCII "nandu"
def test_accented_and_non_ascii_phrases(phrases: tuple[str, ...]) -> None:
    s = _scanner_for(*phrases)
    assert s._prefilter_on
    for page in ("<p>nandu here</p>", "<p>Ñandú here</p>", "<p>NANDU</p>", "<p>καζίνο 日本</p>", "<p>kazino</p>"):
        body = page.encode()
        assert s.scan_html(body) == _full(s, body)
    assert (s.scan_html(b"<p>NANDU!</p>").score == 10) == ("ñandú" in phrases)


def test_no_phrases_at_all() -> None:
    s = _scanner_for()
    assert s.scan_html(b"<p>anything</p>").score == 0


def test_overlapping_needles() -> None:
    """The prefilter's non-overlapping search misses no whole-word needle hidden by a longer or earlier one."""
    s = _scanner_for("pro", "process", "cess", "processes now", "ess")
    for page in ("process", "processes", "processes now", "pro cess", "proc ess", "xprocess ess", "proprocess",
                 "processing pro", "cess-pro", "PROCESS", "pr ocess", "p-r-o", "<b>pro</b>cess", "process&amp;"):
        body = page.encode()
        assert s.scan_html(body) == _full(s, body), page
