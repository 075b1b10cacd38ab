"""`esafety users add NAME --role R | --group G`: accounts, with a generated password printed once;
`users list`, `users disable NAME`, and `users token NAME` (API bearer tokens, shown once)."""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import select

from esafety.auth import generate_password, hash_password
from esafety.config import load_settings
from esafety.store.db import sessions, upgrade
from esafety.store.models import User

ROLES = ("dsl", "deputy_dsl", "esafety_coordinator", "it_admin", "slt", "auditor", "admin")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("users", help="people and dashboard accounts")
    ps = p.add_subparsers(dest="users_command", metavar="ACTION")
    ps.required = True
    a = ps.add_parser("add", help="add a user; prints a generated password once")
    a.add_argument("name")
    a.add_argument("--role", action="append", default=[], choices=ROLES, help="dashboard role (repeatable)")
    a.add_argument("--group", default=None, help="policy group (default: staff for roles, else required)")
    a.add_argument("--email", default="", help="the school email address")
    a.add_argument("--display-name", default="")
    a.add_argument("--no-password", action="store_true", help="no login (identified by agent or WiFi only)")
    a.set_defaults(func=cmd_add)
    ls = ps.add_parser("list", help="dashboard accounts and their roles")
    ls.set_defaults(func=cmd_list)
    d = ps.add_parser("disable", help="stop an account signing in (its sessions end)")
    d.add_argument("name")
    d.set_defaults(func=cmd_disable)
    t = ps.add_parser("token", help="a bearer token for a system raising incidents (POST /api/incidents)")
    t.add_argument("name", help="what holds the token, e.g. sensor-hall-a")
    t.add_argument("--scope", default="incidents:write")
    t.add_argument("--revoke", action="store_true", help="revoke the named token instead")
    t.set_defaults(func=cmd_token)


def create_user(database_url: str, name: str, group: str, roles: list[str], email: str = "",
                display_name: str = "", password: str | None = None) -> User:
    with sessions(database_url)() as s:
        user = User(username=name, policy_group=group, roles=",".join(roles), email=email,
                    display_name=display_name or name, password_hash=hash_password(password) if password else None)
        s.add(user)
        s.commit()
        return user


def cmd_add(args: argparse.Namespace) -> int:
    settings = load_settings()
    upgrade(settings.database_url)
    group = args.group or ("staff" if args.role else None)
    if group is None:
        print("--group is required for users without a dashboard role (e.g. --group year8)", file=sys.stderr)
        return 2
    with sessions(settings.database_url)() as s:
        if s.scalar(select(User.id).where(User.username == args.name)) is not None:
            print(f"user '{args.name}' already exists", file=sys.stderr)
            return 1
    password = None if args.no_password else generate_password()
    create_user(settings.database_url, args.name, group, args.role, args.email, args.display_name, password)
    print(f"added {args.name} (group {group}{', roles ' + ','.join(args.role) if args.role else ''})")
    if password:
        print(f"password (shown once): {password}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    settings = load_settings()
    upgrade(settings.database_url)
    with sessions(settings.database_url)() as s:
        for u in s.scalars(select(User).where(User.roles != "").order_by(User.username)):
            print(f"{u.username:24} {u.roles:40} {'active' if u.active else 'disabled'}")
    return 0


def cmd_disable(args: argparse.Namespace) -> int:
    from sqlalchemy import delete

    from esafety.webauth import WebSession

    settings = load_settings()
    with sessions(settings.database_url)() as s:
        user = s.scalar(select(User).where(User.username == args.name))
        if user is None:
            print(f"no user '{args.name}'", file=sys.stderr)
            return 1
        user.active = False
        s.execute(delete(WebSession).where(WebSession.username == args.name))
        s.commit()
    print(f"disabled {args.name}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from esafety.webauth import ApiToken, new_token, token_hash

    settings = load_settings()
    upgrade(settings.database_url)
    with sessions(settings.database_url)() as s:
        existing = s.scalar(select(ApiToken).where(ApiToken.name == args.name))
        if args.revoke:
            if existing is None:
                print(f"no token '{args.name}'", file=sys.stderr)
                return 1
            existing.revoked_at = datetime.now(UTC)
            s.commit()
            print(f"revoked {args.name}")
            return 0
        if existing is not None:
            print(f"token '{args.name}' exists; revoke it first", file=sys.stderr)
            return 1
        raw = new_token("esf_")
        s.add(ApiToken(name=args.name, token_hash=token_hash(raw), scope=args.scope))
        s.commit()
    print(f"token for {args.name} (scope {args.scope}); shown once, send as 'Authorization: Bearer ...':")
    print(raw)
    return 0
