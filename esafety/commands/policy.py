"""`esafety policy check FILE` and `esafety policy explain URL --user U`."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from urllib.parse import urlsplit

from esafety.config import load_settings
from esafety.policy.loader import PolicyInvalid, check_policy, load_policy
from esafety.policy.model import Request
from esafety.policy.schema import Action

EXIT_BLOCK = 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("policy", help="check or explain the AUP policy")
    ps = p.add_subparsers(dest="policy_command", metavar="ACTION")
    ps.required = True
    c = ps.add_parser("check", help="validate a policy file: exit 0, or 1 with file:line errors")
    c.add_argument("file")
    c.set_defaults(func=cmd_check)
    e = ps.add_parser("explain", help="the decision for a URL and the rule and AUP clause behind it")
    e.add_argument("url")
    e.add_argument("--user", default=None, help="username (its group comes from the store)")
    e.add_argument("--group", default=None, help="policy group, overriding the user's")
    e.add_argument("--at", default=None, help="ISO time to decide at (schedules), default now")
    e.add_argument("--policy", default=None, help="policy file (default: ESAFETY_POLICY or policies/aup.yaml)")
    e.set_defaults(func=cmd_explain)


def cmd_check(args: argparse.Namespace) -> int:
    errors = check_policy(args.file)
    for err in errors:
        print(err, file=sys.stderr)
    if errors:
        print(f"{len(errors)} error(s)", file=sys.stderr)
        return 1
    print(f"{args.file}: ok")
    return 0


def _group_of(user: str | None, database_url: str) -> str | None:
    if not user:
        return None
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from esafety.store.db import sessions
    from esafety.store.models import User

    try:
        with sessions(database_url)() as s:
            return s.scalar(select(User.policy_group).where(User.username == user))
    except SQLAlchemyError:
        return None


def cmd_explain(args: argparse.Namespace) -> int:
    from esafety.identity import Identity
    from esafety.policy.engine import Engine

    settings = load_settings()
    try:
        policy = load_policy(args.policy or settings.policy_path)
    except PolicyInvalid as exc:
        print(exc, file=sys.stderr)
        return 1
    engine = Engine.build(policy, settings.lists_dir, settings.cache_dir)
    group = args.group or _group_of(args.user, settings.database_url) or policy.default_group
    if group not in policy.groups:
        print(f"unknown group '{group}' (groups: {', '.join(policy.groups)})", file=sys.stderr)
        return 2
    url = args.url if "://" in args.url else f"https://{args.url}"
    parts = urlsplit(url)
    req = Request("GET", parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80),
                  parts.path or "/", parts.query)
    when = datetime.fromisoformat(args.at) if args.at else datetime.now().astimezone()
    if when.tzinfo is None:
        from zoneinfo import ZoneInfo

        when = when.replace(tzinfo=ZoneInfo(policy.timezone))
    d = engine.decide(req, Identity(args.user, group), now=when.timestamp())
    cat = policy.categories.get(d.category)
    print(f"url:      {url}")
    print(f"user:     {args.user or '-'} (group {group})")
    print(f"at:       {when.isoformat(timespec='minutes')}")
    print(f"decision: {d.action.value}")
    print(f"category: {d.category}" + (f" ({cat.title})" if cat else ""))
    print(f"rule:     {d.rule}")
    clause = d.clause or (cat.clause if cat else "")
    print(f"clause:   {clause} {policy.clause_text(clause)}".rstrip())
    for f in d.flags:
        print(f"flag:     {f.category} level {f.level} ({f.reason}): {f.evidence}")
    if d.rewrite:
        changes = [f"{k}={v}" for k, v in d.rewrite.params] + [f"{k}: {v}" for k, v in d.rewrite.headers]
        print(f"rewrite:  {', '.join(changes)}")
    return EXIT_BLOCK if d.action is Action.BLOCK else 0
