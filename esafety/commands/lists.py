"""`esafety lists import` (with a progress bar) and `esafety lists stats`."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from tqdm import tqdm

from esafety.config import load_settings
from esafety.policy.lists import FORMATS, ListEntries, normalise_domain, read_list
from esafety.policy.loader import PolicyInvalid, load_policy


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lists", help="import category lists and show their sizes")
    ps = p.add_subparsers(dest="lists_command", metavar="ACTION")
    ps.required = True
    i = ps.add_parser("import", help="import a domain/URL list into a category")
    i.add_argument("--category", required=True)
    i.add_argument("--format", required=True, choices=FORMATS)
    i.add_argument("--name", default=None, help="name of the imported list (default: the file's name)")
    i.add_argument("path")
    i.set_defaults(func=cmd_import)
    s = ps.add_parser("stats", help="entries per category (shipped and imported lists)")
    s.set_defaults(func=cmd_stats)


def cmd_import(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        policy = load_policy(settings.policy_path)
    except PolicyInvalid as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.category not in policy.categories:
        print(f"unknown category '{args.category}' (one of: {', '.join(policy.categories)})", file=sys.stderr)
        return 2
    src = Path(args.path)
    if not src.exists():
        print(f"{src}: no such file or folder", file=sys.stderr)
        return 2
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", args.name or src.stem)
    try:
        entries = _read_with_progress(src, args.format)
    except (OSError, ValueError) as exc:
        print(f"{src}: {exc}", file=sys.stderr)
        return 2
    out_dir = settings.lists_dir / args.category
    out_dir.mkdir(parents=True, exist_ok=True)
    domains = sorted(set(entries.domains))
    urls = sorted(set(entries.urls))
    _atomic_write(out_dir / f"{name}.txt", domains)
    if urls:
        _atomic_write(out_dir / f"{name}.urls", urls)
    print(f"imported {len(domains)} domains and {len(urls)} URLs into '{args.category}' "
          f"({entries.rejected} lines rejected) -> {out_dir}")
    print("the running proxy picks this up at its next reload (SIGHUP or policy change)")
    return 0


def _read_with_progress(src: Path, fmt: str) -> ListEntries:
    """read_list, with a progress bar over the bytes read."""
    total = sum(f.stat().st_size for f in ([src] if src.is_file() else src.iterdir()) if f.is_file())
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"importing {src.name}", file=sys.stderr) as bar:
        return read_list(src, fmt, on_bytes=bar.update)


def _atomic_write(path: Path, lines: list[str]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    tmp.replace(path)


def cmd_stats(args: argparse.Namespace) -> int:
    from esafety.policy.engine import Engine

    settings = load_settings()
    try:
        policy = load_policy(settings.policy_path)
    except PolicyInvalid as exc:
        print(exc, file=sys.stderr)
        return 1
    engine = Engine.build(policy, settings.lists_dir, settings.cache_dir, progress=True)
    width = max(len(c) for c in policy.categories)
    print(f"{'category':<{width}}  entries")
    for cat, n in sorted(engine.list_counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"{cat:<{width}}  {n:>7}")
    print(f"{'total':<{width}}  {sum(engine.list_counts.values()):>7}  ({len(engine.index)} distinct domains)")
    return 0


__all__ = ["register", "normalise_domain"]
