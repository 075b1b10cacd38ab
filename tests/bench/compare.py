"""`make bench-compare`: var/bench/latest.json against var/bench/previous.json, as one Markdown table.

Rows are matched by (benchmark, metric, peer). A change is called better or worse by the row's
`better` ('higher' | 'lower'; guessed from the unit when absent) and only beyond the noise
threshold (default 10 %: this machine is shared, so smaller moves are not news). Exit status is
always 0 when both files exist: nothing here judges speed.

    python -m tests.bench.compare [--latest FILE] [--previous FILE] [--threshold 0.1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tests.bench.common import BENCH_DIR, fmt_num

LOWER_UNITS = ("ms", "s", "us", "MB", "KB", "B", "MiB")


def _key(r: dict[str, Any]) -> tuple[str, str, str]:
    return (str(r.get("benchmark", "")), str(r.get("metric", "")), str(r.get("peer_name") or ""))


def _better(r: dict[str, Any]) -> str:
    b = r.get("better")
    if b in ("higher", "lower"):
        return str(b)
    return "lower" if str(r.get("unit", "")) in LOWER_UNITS else "higher"


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def compare(latest: dict[str, Any], previous: dict[str, Any], threshold: float = 0.1) -> tuple[str, dict[str, int]]:
    """(Markdown table, counts of better / worse / same / new / gone)."""
    prev_rows = {_key(r): r for r in previous.get("rows", [])}
    counts = {"better": 0, "worse": 0, "same": 0, "changed": 0, "new": 0, "gone": 0}
    lines = ["| Benchmark | Metric | Previous | Latest | Change | Unit | Verdict |", "|---|---|---|---|---|---|---|"]
    seen = set()
    for r in latest.get("rows", []):
        k = _key(r)
        seen.add(k)
        metric = k[1] + (f" (vs {k[2]})" if k[2] else "")
        old = prev_rows.get(k)
        now_v = _num(r.get("ours"))
        if old is None:
            counts["new"] += 1
            lines.append(f"| {k[0]} | {metric} | - | {fmt_num(r.get('ours'))} | | {r.get('unit', '')} | new |")
            continue
        old_v = _num(old.get("ours"))
        if now_v is None or old_v is None or old_v == 0:
            verdict, change = ("same" if r.get("ours") == old.get("ours") else "changed"), ""
            counts[verdict] += 1
        else:
            rel = (now_v - old_v) / abs(old_v)
            change = f"{rel:+.1%}"
            if abs(rel) < threshold:
                verdict = "same"
            elif not r.get("unit") and r.get("better") not in ("higher", "lower"):
                verdict = "changed"  # a count or a setting, not a figure with a direction
            else:
                up_is_good = _better(r) == "higher"
                verdict = "better" if (rel > 0) == up_is_good else "**worse**"
            counts[verdict.strip("*")] = counts.get(verdict.strip("*"), 0) + 1
        lines.append(f"| {k[0]} | {metric} | {fmt_num(old.get('ours'))} | {fmt_num(r.get('ours'))} | {change} | "
                     f"{r.get('unit', '')} | {verdict} |")
    for k, old in prev_rows.items():
        if k not in seen:
            counts["gone"] += 1
            lines.append(f"| {k[0]} | {k[1]} | {fmt_num(old.get('ours'))} | - | | {old.get('unit', '')} | gone |")
    return "\n".join(lines), counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.compare", description=__doc__.splitlines()[0])
    ap.add_argument("--latest", type=Path, default=BENCH_DIR / "latest.json")
    ap.add_argument("--previous", type=Path, default=BENCH_DIR / "previous.json")
    ap.add_argument("--threshold", type=float, default=0.1, help="relative change below which a figure is 'same'")
    args = ap.parse_args(argv)
    missing = [p for p in (args.latest, args.previous) if not p.exists()]
    if missing:
        print(f"nothing to compare: {', '.join(map(str, missing))} missing (run `make bench` twice)", file=sys.stderr)
        return 1
    latest, previous = json.loads(args.latest.read_text()), json.loads(args.previous.read_text())
    table, counts = compare(latest, previous, args.threshold)
    print(f"Previous: {previous.get('started', '?')} (git {previous.get('git') or '?'}, "
          f"{'quick' if previous.get('quick') else 'full'})  ->  latest: {latest.get('started', '?')} "
          f"(git {latest.get('git') or '?'}, {'quick' if latest.get('quick') else 'full'})\n")
    if previous.get("quick") != latest.get("quick"):
        print("Note: one run was QUICK and the other full; figures may differ for that reason alone.\n")
    print(table)
    print("\n" + ", ".join(f"{n} {k}" for k, n in counts.items() if n) +
          f" (changes under {args.threshold:.0%} count as the same)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
