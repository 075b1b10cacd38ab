"""`esafety registrations export | sync-leases | calendar-check | publish-aup`: WiFi registration tools.

  export --format dnsmasq|isc-dhcp|freeradius-users|csv [-o FILE]   the allow-list of registered MACs
  sync-leases FILE          map registered MACs to IPs from a dnsmasq/ISC leases file (identity)
  calendar-check [FILE]     validate the school calendar; errors as file:line
  publish-aup FILE --version V [--title T]   publish a new AUP version (everyone re-accepts)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from esafety.compliance.source import RollupCompliance
from esafety.config import load_settings
from esafety.registrations import aup, export, leases
from esafety.registrations.errors import RegistrationError
from esafety.registrations.settings import wifi_settings
from esafety.registrations.workdays import CalendarInvalid, load_calendar
from esafety.store.db import sessions, upgrade


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("registrations", help="WiFi registrations: allow-list export, DHCP leases, calendar, AUP")
    ps = p.add_subparsers(dest="registrations_command", metavar="ACTION")
    ps.required = True
    e = ps.add_parser("export", help="write the allow-list of registered (approved, active) MACs")
    e.add_argument("--format", required=True, choices=sorted(export.FORMATS))
    e.add_argument("-o", "--output", help="file to write (atomically); default: standard output")
    e.set_defaults(func=cmd_export)
    s = ps.add_parser("sync-leases", help="bind registered devices' IPs to their owners from a leases file")
    s.add_argument("file", type=Path)
    s.set_defaults(func=cmd_sync)
    c = ps.add_parser("calendar-check", help="validate the school calendar (working days, holidays, INSET)")
    c.add_argument("file", type=Path, nargs="?")
    c.set_defaults(func=cmd_calendar)
    a = ps.add_parser("publish-aup", help="publish a new AUP version from a text file")
    a.add_argument("file", type=Path)
    a.add_argument("--version", required=True)
    a.add_argument("--title", default="Acceptable Use Policy")
    a.add_argument("--by", default=os.environ.get("USER", "cli"))
    a.set_defaults(func=cmd_publish)


def _write(path: str | None, text: str) -> None:
    if not path:
        sys.stdout.write(text)
        return
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, target)  # the DHCP server never reads a half-written file


def cmd_export(args: argparse.Namespace) -> int:
    url = load_settings().database_url
    upgrade(url)
    with sessions(url)() as s:
        text = export.export(s, args.format)
    _write(args.output, text)
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    url = load_settings().database_url
    upgrade(url)
    try:
        found = leases.read_leases(args.file)
    except OSError as exc:
        print(f"{args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    with sessions(url)() as s:
        r = leases.sync(s, found, RollupCompliance())  # approved devices with agents must pass
        s.commit()
    print(f"{len(found)} leases; {r.bound} bound, {r.removed} removed, {len(r.activated)} activated")
    return 0


def cmd_calendar(args: argparse.Namespace) -> int:
    path = args.file or wifi_settings(load_settings()).calendar_path
    try:
        cal = load_calendar(path)
    except CalendarInvalid as exc:
        for err in exc.errors:
            print(err, file=sys.stderr)
        return 1
    print(f"{path}: ok ({len(cal.closed)} non-working dates, working days {sorted(cal.working_days)})")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    url = load_settings().database_url
    upgrade(url)
    try:
        text = args.file.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"{args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    with sessions(url)() as s:
        try:
            v = aup.publish(s, args.version, args.title, text, args.by)
        except RegistrationError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        s.commit()
        print(f"published AUP {v.version} (sha256 {v.text_sha256[:16]}...); everyone accepts it again "
              "before their next registration")
    return 0
