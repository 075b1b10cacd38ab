"""`esafety devices token | list`: enrolment tokens for endpoint agents, and the enrolled devices.

  token [--expires-hours H] [--note N] [--user U]   a one-time enrolment token, printed once
  list [--state S] [--check C] [--platform P] [--search Q] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime

from esafety.config import load_settings
from esafety.store.db import sessions, upgrade

STATES = ("pending", "compliant", "warning", "in_grace", "stale", "noncompliant", "retired")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="endpoint agents: enrolment tokens and enrolled devices")
    ps = p.add_subparsers(dest="devices_command", metavar="ACTION")
    ps.required = True
    t = ps.add_parser("token", help="a one-time enrolment token for `esafety agent enrol` (shown once)")
    t.add_argument("--expires-hours", type=float, default=24.0, help="how long it may be used (default 24)")
    t.add_argument("--note", default="", help="what it is for, e.g. 'ICT suite PC 14'")
    t.add_argument("--user", default=None, help="the device's assigned user (a pupil's or teacher's laptop)")
    t.add_argument("--by", default=os.environ.get("USER", "cli"), help="who made it (recorded)")
    t.set_defaults(func=cmd_token)
    ls = ps.add_parser("list", help="enrolled devices and their compliance")
    ls.add_argument("--state", choices=STATES)
    ls.add_argument("--check", help="only devices failing this check id")
    ls.add_argument("--platform", choices=("linux", "windows", "macos"))
    ls.add_argument("--search", help="hostname, user, IP or MAC (substring)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=cmd_list)


def cmd_token(args: argparse.Namespace) -> int:
    from esafety.compliance.enrol import MAX_TOKEN_HOURS, create_token
    from esafety.compliance.sessions import known_accounts
    from esafety.incidents.audit import Chain

    if not 0 < args.expires_hours <= MAX_TOKEN_HOURS:
        print(f"--expires-hours must be above 0 and at most {MAX_TOKEN_HOURS}", file=sys.stderr)
        return 2
    settings = load_settings()
    upgrade(settings.database_url)
    with sessions(settings.database_url)() as s:
        owner = None
        if args.user:
            found = known_accounts(s, [args.user])
            if not found:
                print(f"no active account named '{args.user}' (add it with `esafety users add`)", file=sys.stderr)
                return 1
            owner = next(iter(found.values()))
        tok = create_token(s, f"cli:{args.by}", args.expires_hours, args.note, owner)
        Chain(s).add(None, f"cli:{args.by}", "enrolment_token", token_id=tok.id, note=args.note, owner=owner,
                     expires_at=tok.expires_at.isoformat())
        s.commit()
    print(f"enrolment token (shown once; one device; valid until {tok.expires_at:%Y-%m-%d %H:%M} UTC):",
          file=sys.stderr)
    print(tok.token)
    print(f"on the device: esafety agent enrol --server {settings.dashboard_url} --token {tok.token}", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from esafety.compliance import queries
    from esafety.compliance.catalogue import BY_ID

    if args.check and args.check not in BY_ID:
        print(f"unknown check '{args.check}' (one of {', '.join(sorted(BY_ID))})", file=sys.stderr)
        return 2
    settings = load_settings()
    upgrade(settings.database_url)
    f = queries.DeviceFilter(args.state, args.check, args.platform, args.search)
    with sessions(settings.database_url)() as s:
        rows, total = queries.list_devices(s, f, limit=100_000)
    if args.json:
        for r in rows:
            print(json.dumps(queries.as_json(r), sort_keys=True))
        return 0
    now = datetime.now(UTC)
    print(f"{'DEVICE':16} {'HOSTNAME':24} {'STATE':13} {'PLATFORM':8} {'USER':16} {'LAST REPORT':12} FAILING")
    for r in rows:
        d = r.device
        seen = d.last_seen if d.last_seen is None or d.last_seen.tzinfo else d.last_seen.replace(tzinfo=UTC)
        age = f"{int((now - seen).total_seconds() // 60)}m ago" if seen else "never"
        state = "retired" if d.retired_at else d.state
        print(f"{d.id:16} {d.hostname[:24]:24} {state:13} {d.platform:8} {(d.last_user or '')[:16]:16} {age:12} "
              f"{','.join(r.failing)}")
    print(f"{total} device(s)", file=sys.stderr)
    return 0
