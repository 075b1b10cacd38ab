"""`esafety roster import FILE.csv [--dry-run] [--force]` and `esafety roster status`: pupils from the MIS.

import reads the MIS export (esafety.identity.roster: SIMS, Arbor, Wonde headers), maps each
pupil's year to a policy group (the policy's identity.roster.year_groups) and applies the file
to the users table in one transaction (esafety.identity.people): new pupils are created, changed
ones updated, pupils gone from the export or past their leaving date retired. A file with any bad
row, or one that would retire more than max_retire_share of the roster (a truncated export),
changes nothing: the errors go to stderr as file:line, and every run, applied or refused, is an
identity_syncs row that the dashboard's metrics and alert rules read. --dry-run lists each change
and writes nothing but that row. Exit 0 applied, 1 refused, 2 the policy cannot be used.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from esafety.config import load_settings

if TYPE_CHECKING:
    from esafety.identity.people import PeopleDiff, PersonRecord
    from esafety.policy.schema import RosterSettings

SOURCE = "roster"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("roster", help="pupils from the MIS export (SIMS, Arbor, Wonde CSV)")
    ps = p.add_subparsers(dest="roster_command", metavar="ACTION")
    ps.required = True
    i = ps.add_parser("import", help="apply an MIS CSV export: create, update and retire pupils")
    i.add_argument("file", help="the CSV export (username, year, names, UPN / admission number, ...)")
    i.add_argument("--dry-run", action="store_true", help="list every change, write nothing")
    i.add_argument("--force", action="store_true",
                   help="apply even if it retires more than max_retire_share of the roster (or everyone)")
    i.add_argument("--policy", default=None, help="policy file (default: ESAFETY_POLICY)")
    i.set_defaults(func=cmd_import)
    s = ps.add_parser("status", help="the last imports and syncs, and active pupils per year")
    s.add_argument("--last", type=int, default=10, help="how many imports to list (default 10)")
    s.set_defaults(func=cmd_status)


def _roster_settings(policy_arg: str | None) -> RosterSettings | None:
    from esafety.policy.loader import PolicyInvalid, load_policy

    path = policy_arg or load_settings().policy_path
    try:
        return load_policy(path).identity.roster
    except (PolicyInvalid, OSError) as exc:
        print(f"esafety roster: the policy {path} cannot be used:\n{exc}", file=sys.stderr)
        return None


def year_label(year: int | None) -> str:
    if year is None:
        return "no year"
    return {0: "Reception", -1: "Nursery 2", -2: "Nursery 1"}.get(year, f"Year {year}")


def _show(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def print_changes(diff: PeopleDiff, records: list[PersonRecord]) -> None:
    by_name = {r.username: r for r in records}
    for name in diff.created:
        r = by_name[name]
        print(f"+ {name} ({year_label(r.year_group)}{', ' + r.tutor_group if r.tutor_group else ''}) "
              f"-> {r.policy_group}")
    for name, changes in diff.updated:
        print(f"~ {name}: " + ", ".join(f"{f} {_show(old)} -> {_show(new)}" for f, (old, new) in changes.items()))
    for name in diff.retired:
        left = by_name[name].leaving_date if name in by_name else None
        print(f"- {name} ({f'left {left}' if left else 'not in the export'})")


def cmd_import(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError
    from tqdm import tqdm

    from esafety.identity.people import ImportRefused, apply_people, record_sync
    from esafety.identity.roster import RosterInvalid, read_roster
    from esafety.store.db import sessions, upgrade

    roster = _roster_settings(args.policy)
    if roster is None:
        return 2
    url = load_settings().database_url
    upgrade(url)
    started = datetime.now(UTC)
    origin = str(Path(args.file).resolve())

    def refused(message: str) -> int:
        print(message, file=sys.stderr)
        record_sync(url, SOURCE, origin, None, ok=False, dry_run=args.dry_run, error=message, started_at=started)
        print("nothing was changed: the last good roster stays in place", file=sys.stderr)
        return 1

    try:
        records = read_roster(args.file, roster.year_groups)
    except RosterInvalid as exc:
        return refused(exc.report())
    with sessions(url)() as s:
        # Not a TTY (cron, systemd's journal): the bar's start and end only, in plain characters.
        tty = sys.stderr.isatty()
        with tqdm(total=len(records), desc="applying", unit="pupil", file=sys.stderr,
                  mininterval=0.1 if tty else 30, ascii=not tty) as bar:
            try:
                diff = apply_people(s, SOURCE, records, now=started, max_retire_share=roster.max_retire_share,
                                    force=args.force, progress=bar.update)
            except ImportRefused as exc:
                s.rollback()
                return refused(f"{args.file}: {exc}")
            except IntegrityError as exc:  # e.g. two pupils swapping usernames in one export
                s.rollback()
                first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                return refused(f"{args.file}: the store refused the change ({first})")
        if args.dry_run:
            s.rollback()
        else:
            s.commit()
    if args.dry_run:
        print_changes(diff, records)
    record_sync(url, SOURCE, origin, diff, ok=True, dry_run=args.dry_run, started_at=started)
    seconds = (datetime.now(UTC) - started).total_seconds()
    print(f"{'dry run, nothing written: would have ' if args.dry_run else ''}{diff.summary()} ({seconds:.1f}s)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from esafety.identity.tables import IdentitySync
    from esafety.store.db import sessions, upgrade
    from esafety.store.models import User

    url = load_settings().database_url
    upgrade(url)
    with sessions(url)() as s:
        syncs = s.scalars(select(IdentitySync).order_by(IdentitySync.started_at.desc(), IdentitySync.id.desc())
                          .limit(args.last)).all()
        per_year = s.execute(select(User.year_group, func.count(), func.count(func.distinct(User.tutor_group)))
                             .where(User.source == SOURCE, User.active.is_(True))
                             .group_by(User.year_group).order_by(User.year_group)).all()
        retired = s.scalar(select(func.count()).select_from(User)
                           .where(User.source == SOURCE, User.retired_at.is_not(None))) or 0
    print("last imports and syncs:" if syncs else "no roster import or directory sync has run yet")
    for r in syncs:
        outcome = ("dry run" if r.dry_run else "applied") if r.ok else "refused"
        what = (f"created {r.created}, updated {r.updated}, retired {r.retired}, unchanged {r.unchanged}" if r.ok
                else (r.error.splitlines() or [""])[0][:100])
        print(f"  {r.started_at:%Y-%m-%d %H:%M}  {r.source:9} {outcome:8} {what}  [{r.origin}]")
    counts = Counter({y: n for y, n, _ in per_year})
    print(f"active pupils: {sum(counts.values())} (retired: {retired})")
    for year, n, tutors in per_year:
        print(f"  {year_label(year):10} {n:5}  in {tutors} tutor group{'s' if tutors != 1 else ''}")
    return 0
