"""`esafety directory sync [--dry-run] [--force]` and `esafety directory check`: people from LDAP / AD.

sync reads the policy's identity.directory section, reads the directory (esafety.identity.directory)
and applies its people to the users table (esafety.identity.people): new people are created,
changed ones updated, people gone from the directory (or disabled in AD) retired. A directory that
cannot be read, or a sync that would retire more than max_disable_share, changes nothing: the last
good table stays, the reason goes to stderr and to an identity_syncs row (which the dashboard's
metrics and alert rules read). Exit 0 done, 1 refused or directory error, 2 usage/configuration.
Started hourly by deploy/systemd/esafety-directory-sync.timer.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from esafety.config import load_settings

if TYPE_CHECKING:
    from esafety.identity.people import PeopleDiff
    from esafety.policy.schema import DirectorySettings

SOURCE = "directory"
SHOW = 50  # a dry run lists at most this many changes of each kind


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("directory", help="people from LDAP / Active Directory (identity.directory in the policy)")
    ps = p.add_subparsers(dest="directory_command", metavar="ACTION")
    ps.required = True
    s = ps.add_parser("sync", help="read the directory and apply its people to the store")
    s.add_argument("--dry-run", action="store_true", help="list the changes, write nothing")
    s.add_argument("--force", action="store_true", help="apply even if it retires more than max_disable_share")
    s.add_argument("--policy", default=None, help="policy file (default: ESAFETY_POLICY)")
    s.set_defaults(func=cmd_sync)
    c = ps.add_parser("check", help="connect, bind and count people per mapped group; change nothing")
    c.add_argument("--policy", default=None, help="policy file (default: ESAFETY_POLICY)")
    c.set_defaults(func=cmd_check)


def _directory_settings(policy_arg: str | None) -> DirectorySettings | None:
    from esafety.policy.loader import PolicyInvalid, load_policy

    path = policy_arg or load_settings().policy_path
    try:
        policy = load_policy(path)
    except (PolicyInvalid, OSError) as exc:
        print(f"esafety directory: the policy {path} cannot be used:\n{exc}", file=sys.stderr)
        return None
    if policy.identity.directory is None:
        print(f"esafety directory: the policy {path} has no identity.directory section "
              "(url, bind_dn, bind_password_file, user_bases, groups)", file=sys.stderr)
        return None
    return policy.identity.directory


def cmd_check(args: argparse.Namespace) -> int:
    from esafety.identity.directory import DirectoryError, DirectoryUnavailable, read_people

    settings = _directory_settings(args.policy)
    if settings is None:
        return 2
    try:
        read = read_people(settings)
    except (DirectoryUnavailable, DirectoryError) as exc:
        print(f"esafety directory check: {exc}", file=sys.stderr)
        return 1
    print(f"directory {settings.url}: bound as {settings.bind_dn or '(anonymous)'}, "
          f"{len(read.people)} people in {len(settings.user_bases)} base(s), {read.pages} page(s) read")
    dns: dict[str, list[str]] = {}
    for m in settings.groups:
        dns.setdefault(m.group, []).append(m.dn)
    if settings.default_group:
        dns.setdefault(settings.default_group, []).append("(default_group: in no mapped group)")
    for group, n in read.per_group.items():
        print(f"  {group:16} {n:5} people  from {'; '.join(dns.get(group, []))}")
    if read.no_group:
        print(f"  {read.no_group} people are in no mapped group and there is no default_group: not synced")
    if read.disabled:
        print(f"  {read.disabled} disabled accounts: not synced")
    for problem in read.invalid[:SHOW]:
        print(f"  skipped {problem}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from esafety.identity.directory import DirectoryError, DirectoryUnavailable, read_people
    from esafety.identity.people import ImportRefused, apply_people, record_sync
    from esafety.store.db import sessions

    settings = _directory_settings(args.policy)
    if settings is None:
        return 2
    database_url = load_settings().database_url
    now = datetime.now(UTC)

    def refused(message: str) -> int:
        tail = "" if "nothing was changed" in message.lower() else "\n  nothing was changed"
        print(f"esafety directory sync: {message}{tail}", file=sys.stderr)
        record_sync(database_url, SOURCE, settings.url, None, ok=False, dry_run=args.dry_run, error=message,
                    started_at=now)
        return 1

    try:
        read = read_people(settings)
    except (DirectoryUnavailable, DirectoryError) as exc:
        return refused(str(exc))
    for problem in read.invalid[:SHOW]:
        print(f"skipped {problem}", file=sys.stderr)

    with sessions(database_url)() as s:
        try:
            with tqdm(total=len(read.people), unit="person", desc="applying", file=sys.stderr,
                      disable=None) as bar:  # None: no bar when stderr is not a terminal (systemd, tests)
                diff = apply_people(s, SOURCE, read.people, now=now, max_retire_share=settings.max_disable_share,
                                    force=args.force, progress=bar.update)
        except ImportRefused as exc:
            s.rollback()
            return refused(str(exc))
        if args.dry_run:
            s.rollback()
        else:
            s.commit()
    if args.dry_run:
        _list_changes(diff)
    print(f"directory {settings.url}: {len(read.people)} people read"
          f"{f', {read.no_group} in no mapped group' if read.no_group else ''}"
          f"{f', {read.disabled} disabled' if read.disabled else ''}")
    summary = diff.summary()
    print(f"dry run, nothing written: would have {summary}" if args.dry_run else summary)
    record_sync(database_url, SOURCE, settings.url, diff, ok=True, dry_run=args.dry_run, started_at=now)
    return 0


def _list_changes(diff: PeopleDiff) -> None:
    def some(items: list[str]) -> str:
        more = f" (and {len(items) - SHOW} more)" if len(items) > SHOW else ""
        return ", ".join(items[:SHOW]) + more

    if diff.created:
        print(f"would create: {some(diff.created)}")
    for username, changes in diff.updated[:SHOW]:
        what = "; ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
        print(f"would update {username}: {what}")
    if len(diff.updated) > SHOW:
        print(f"would update {len(diff.updated) - SHOW} more")
    if diff.retired:
        print(f"would retire: {some(diff.retired)}")
    if diff.linked:
        print(f"would link to their directory entry: {some(diff.linked)}")
    if diff.unlinked:
        print(f"would unlink (no longer in the directory): {some(diff.unlinked)}")
