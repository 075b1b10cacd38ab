"""Deterministic workloads for the engine benchmark: a synthetic domain list, a URL-prefix list and a URL mix.

Same seed, same bytes, on every machine: a list is only rewritten when the generator's version or
size changes, so the compiled caches (ours and squidGuard's Berkeley DB) stay valid between runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

GEN_VERSION = "1"
SEED = 0x5AFE7

_SYLLABLES = ("ka", "ri", "to", "mu", "sa", "ne", "lo", "vi", "da", "pe", "zu", "ho", "ba", "ki", "ra", "mo", "ta",
              "le", "ni", "so", "fu", "ge", "wa", "yo", "chi", "ma", "lu", "de", "po", "si", "tra", "ble", "fin",
              "gor", "nex", "pix", "vel", "zor", "quin", "dor", "lam", "bri", "cro", "fla", "gla", "plo", "ster",
              "mon", "kin", "jar", "tek", "vox", "hub", "net")
_TLDS = ("com", "com", "com", "net", "org", "info", "co.uk", "org.uk", "io", "xyz", "de", "ru", "biz", "tv", "me")
_SUBS = ("www", "m", "cdn", "img", "static", "video", "api", "live", "shop", "news")
_PATH_WORDS = ("index", "home", "video", "watch", "gallery", "page", "article", "view", "search", "tag", "user",
               "photos", "en", "2024", "latest", "top", "free", "hd", "category", "post")
_SEARCH_WORDS = ("maths homework", "volcano facts", "romeo and juliet", "photosynthesis", "world war 2",
                 "football scores", "how to self harm", "fractions", "climate change", "send nudes")


def _name(rng: random.Random) -> str:
    n = rng.choice((2, 2, 3, 3, 3, 4))
    label = "".join(rng.choice(_SYLLABLES) for _ in range(n))
    if rng.random() < 0.3:
        label += str(rng.randrange(1000))
    return label


def synthetic_domains(n: int, seed: int = SEED) -> list[str]:
    """n distinct, realistic-looking domains (labels of syllables; no hyphens, so never an 'allowed' name)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        d = f"{_name(rng)}.{rng.choice(_TLDS)}"
        if rng.random() < 0.15:
            d = f"{rng.choice(_SUBS)}.{d}"
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def _path(rng: random.Random, depth: int | None = None) -> str:
    k = rng.randrange(0, 4) if depth is None else depth
    parts = [rng.choice(_PATH_WORDS) for _ in range(k)]
    p = "/" + "/".join(parts)
    if parts and rng.random() < 0.4:
        p += f"-{rng.randrange(100000)}.html"
    return p


def url_prefixes(domains: list[str], n: int, seed: int = SEED + 1) -> list[str]:
    """n 'host/path' prefixes (IWF/CTIRU style) on hosts that are not otherwise listed."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        host = f"files{i % 997}.{_name(rng)}-hosting.{rng.choice(_TLDS)}"
        out.append(f"{host}/{rng.choice(_PATH_WORDS)}/{rng.randrange(10**6)}/")
    return out


@dataclass(frozen=True)
class MixUrl:
    kind: str  # allowed | domain | subdomain | url_prefix | ip_literal | shipped | search
    host: str  # as a Request carries it (IPv6 without brackets)
    path: str
    query: str

    @property
    def url(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}{self.path}" + (f"?{self.query}" if self.query else "")


MIX_SHARES = (("allowed", 0.40), ("domain", 0.20), ("subdomain", 0.15), ("url_prefix", 0.10),
              ("ip_literal", 0.05), ("shipped", 0.05), ("search", 0.05))


def url_mix(n: int, domains: list[str], prefixes: list[str], shipped: list[str], seed: int = SEED + 2) -> list[MixUrl]:
    """n URLs in the MIX_SHARES proportions, shuffled deterministically."""
    rng = random.Random(seed)
    out: list[MixUrl] = []
    for kind, share in MIX_SHARES:
        for _ in range(round(n * share)):
            if kind == "allowed":
                host = f"{rng.choice(('www.', '', 'en.', 'static.'))}{_name(rng)}-{_name(rng)}.{rng.choice(_TLDS)}"
                out.append(MixUrl(kind, host, _path(rng), ""))
            elif kind == "domain":
                out.append(MixUrl(kind, rng.choice(domains), _path(rng), ""))
            elif kind == "subdomain":
                out.append(MixUrl(kind, f"{rng.choice(_SUBS)}{rng.randrange(9)}.{rng.choice(domains)}", _path(rng), ""))
            elif kind == "url_prefix":
                host, _, p = rng.choice(prefixes).partition("/")
                out.append(MixUrl(kind, host, f"/{p}{rng.choice(_PATH_WORDS)}.jpg", ""))
            elif kind == "ip_literal":
                if rng.random() < 0.8:
                    host = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                else:
                    host = f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}"
                out.append(MixUrl(kind, host, _path(rng), ""))
            elif kind == "shipped":
                out.append(MixUrl(kind, rng.choice(("", "www.")) + rng.choice(shipped), _path(rng), ""))
            else:
                q = rng.choice(_SEARCH_WORDS).replace(" ", "+")
                out.append(MixUrl(kind, rng.choice(("www.google.com", "www.bing.com")), "/search", f"q={q}"))
    rng.shuffle(out)
    return out


def shipped_domains(lists_dir: Path) -> list[str]:
    out: list[str] = []
    for f in sorted(lists_dir.glob("*.txt")):
        for line in f.read_text(encoding="utf-8").splitlines():
            s = line.split("#", 1)[0].strip()
            if s:
                out.append(s.lower())
    return out


def write_if_changed(path: Path, lines: list[str], stamp: str) -> bool:
    """Write lines to path unless its stamp file says it already holds them; True when written."""
    stamp_file = path.with_name(path.name + ".stamp")
    if path.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    stamp_file.write_text(stamp)
    return True


# -- HTML pages (proxy and content benchmarks) ---------------------------------------------------------

_WORDS = ("the", "school", "pupils", "science", "week", "project", "river", "history", "library", "maths", "trip",
          "parents", "evening", "results", "year", "team", "football", "music", "concert", "homework", "club",
          "reading", "teachers", "museum", "volcano", "energy", "planet", "garden", "charity", "assembly", "art",
          "and", "of", "to", "in", "for", "with", "on", "our", "was", "were", "this", "their", "new", "great")
# Phrases from the default policy's phrase lists: enough of them push a page over the threshold.
FLAGGED = ("online casino", "free spins", "deposit bonus", "place your bet", "jackpot", "sports betting")


def html_page(size: int, seed: int = SEED + 3, flagged: int = 0) -> bytes:
    """A deterministic HTML page of exactly `size` bytes (ASCII): head, nav, paragraphs, a script.

    flagged: how many phrases from the policy's gambling list to scatter through the text.
    """
    rng = random.Random(seed * 1_000_003 + size * 7 + flagged)
    head = ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Example Academy news</title>"
            "<style>body{font-family:sans-serif;margin:2em}nav a{margin-right:1em}</style></head>\n<body>\n"
            "<nav><a href=\"/\">Home</a><a href=\"/news\">News</a><a href=\"/term-dates\">Term dates</a></nav>\n"
            "<h1>News from Example Academy</h1>\n")
    tail = "<script>document.querySelectorAll('nav a').forEach(a=>a.title=a.textContent)</script>\n</body></html>\n"
    parts = [head]
    length = len(head) + len(tail)
    placed = 0
    while length < size:
        words = [rng.choice(_WORDS) for _ in range(rng.randrange(25, 70))]
        if placed < flagged:
            words.insert(rng.randrange(len(words)), FLAGGED[placed % len(FLAGGED)])
            placed += 1
        p = f"<p>{' '.join(words).capitalize()}. <a href=\"/news/{rng.randrange(10**5)}\">Read more</a></p>\n"
        parts.append(p)
        length += len(p)
    body = "".join(parts)[: size - len(tail)]
    body = body[: body.rfind("\n") + 1] if "\n" in body[len(head):] else body
    page = body + tail
    return (page + " " * (size - len(page))).encode()[:size] if len(page) <= size else page.encode()[:size]
