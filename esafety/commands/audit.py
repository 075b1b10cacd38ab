"""`esafety audit verify`: check the incident history's hash chain; report the first broken link."""

from __future__ import annotations

import argparse

from esafety.config import load_settings
from esafety.incidents.audit import verify
from esafety.store.db import sessions


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="the incident history's tamper-evident chain")
    ps = p.add_subparsers(dest="audit_command", metavar="ACTION")
    ps.required = True
    v = ps.add_parser("verify", help="recompute every hash; exit 1 at the first broken link")
    v.add_argument("--database-url", default=None, help="default: ESAFETY_DATABASE_URL")
    v.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    url = args.database_url or load_settings().database_url
    with sessions(url)() as s:
        result = verify(s)
    if result.ok:
        print(f"audit chain OK: {result.events} events verified")
        return 0
    print(f"audit chain BROKEN after {result.events} good events: {result.problem}")
    return 1
