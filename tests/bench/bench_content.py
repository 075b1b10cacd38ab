"""Phrase scanning throughput (MB/s) over a deterministic HTML corpus, as the proxy scans responses.

PhraseScanner.scan_html with the default policy's phrase lists, on pages of several sizes, clean
and with flagged phrases (gambling phrases enough to cross the threshold on the flagged pages).
No peer runs this step alone; e2guardian's phrase filtering is measured end to end in bench_proxy.
"""

from __future__ import annotations

import time
from typing import Any

from tests.bench.common import ROOT, Row, alternate, row, say
from tests.bench.workload import html_page

NAME = "content"
SIZES = (4 * 1024, 12 * 1024, 64 * 1024, 1024 * 1024)


def _label(size: int) -> str:
    return f"{size // (1024 * 1024)} MB" if size >= 1024 * 1024 else f"{size // 1024} KB"


def corpus(size: int, flagged: bool, total: int) -> list[bytes]:
    """Distinct pages of one size adding up to about `total` bytes (at least one)."""
    n = max(1, total // size)
    return [html_page(size, seed=1000 + i, flagged=(8 + size // 4096) if flagged else 0) for i in range(n)]


def run(quick: bool) -> dict[str, Any]:
    from esafety.policy.loader import load_policy
    from esafety.policy.phrases import PhraseScanner

    policy = load_policy(ROOT / "policies" / "aup.yaml")
    scanner = PhraseScanner(policy.phrases)
    total = (1 if quick else 4) * 1024 * 1024
    rounds = 3 if quick else 5
    corpora = {(size, flagged): corpus(size, flagged, total) for size in SIZES for flagged in (False, True)}
    over = {k: sum(scanner.scan_html(p).over(scanner.threshold) for p in pages) for k, pages in corpora.items()}

    def scan(pages: list[bytes]) -> Any:
        def measure() -> dict[str, float]:
            t0 = time.perf_counter()
            for p in pages:
                scanner.scan_html(p)
            dt = time.perf_counter() - t0
            return {"mb_s": sum(map(len, pages)) / dt / 1e6, "us_per_page": dt / len(pages) * 1e6}
        return measure

    res = alternate(rounds, {f"{_label(s)} {'flagged' if f else 'clean'}": scan(pages)
                             for (s, f), pages in corpora.items()}, log=lambda m: say(f"content: {m}"))
    rows: list[Row] = []
    for (size, flagged), _pages in corpora.items():
        key = f"{_label(size)} {'flagged' if flagged else 'clean'}"
        rows.append(row("content scan", f"MB/s, {key} pages", res[key]["mb_s"], "MB/s",
                        note=f"{res[key]['us_per_page']:.0f} us per page" if size <= 64 * 1024 else ""))
    page12 = res[f"{_label(12 * 1024)} clean"]["us_per_page"]
    rows.append(row("content scan", "time per 12 KB page (clean)", page12 / 1000, "ms", better="lower"))
    all_bytes = sum(len(p) for pages in corpora.values() for p in pages)
    notes = [f"corpus: {sum(map(len, corpora.values())):,} pages, {all_bytes / 1e6:.1f} MB, "
             f"{len(scanner._matcher._ac) if hasattr(scanner._matcher, '_ac') else '?'} phrases; pages over the "
             "threshold: " + ", ".join(f"{_label(s)} {'flagged' if f else 'clean'} {n}/{len(corpora[(s, f)])}"
                                       for (s, f), n in over.items())]
    return {"rows": rows, "notes": notes, "raw": res}
