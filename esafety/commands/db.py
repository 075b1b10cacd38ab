"""`esafety db upgrade|downgrade|prune|backup`: migrations (the same on SQLite and PostgreSQL),
retention by the policy, and backups."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from esafety.config import load_settings
from esafety.store.db import downgrade, upgrade


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="database schema migrations, retention pruning and backups")
    ps = p.add_subparsers(dest="db_command", metavar="ACTION")
    ps.required = True
    u = ps.add_parser("upgrade", help="apply migrations (default: to the latest)")
    u.add_argument("revision", nargs="?", default="heads")
    u.set_defaults(func=lambda a: _do(upgrade, a.revision))
    d = ps.add_parser("downgrade", help="revert migrations to a revision ('base' for none)")
    d.add_argument("revision")
    d.set_defaults(func=lambda a: _do(downgrade, a.revision))
    pr = ps.add_parser("prune", help="delete access-log rows older than the policy's retention.access_log_days")
    pr.add_argument("--dry-run", action="store_true", help="print what would go; delete nothing")
    pr.add_argument("--batch", type=int, default=5000, help="rows per transaction (default 5000)")
    pr.add_argument("--policy", default=None, help="default: ESAFETY_POLICY")
    pr.add_argument("--database-url", default=None, help="default: ESAFETY_DATABASE_URL")
    pr.set_defaults(func=cmd_prune)
    b = ps.add_parser("backup", help="a consistent copy of the store (SQLite backup API, or pg_dump -Fc)")
    b.add_argument("--out", required=True, type=Path,
                   help="the backup file, or an existing folder to hold esafety-<UTC time>.db|.dump")
    b.add_argument("--keep", type=int, default=None,
                   help="with a folder: keep only the newest N backups in it")
    b.add_argument("--database-url", default=None, help="default: ESAFETY_DATABASE_URL")
    b.set_defaults(func=cmd_backup)


def _do(fn, revision: str) -> int:  # type: ignore[no-untyped-def]
    url = load_settings().database_url
    fn(url, revision)
    print(f"database at {revision}: {url.split('@')[-1]}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from esafety.policy.loader import PolicyInvalid, load_policy
    from esafety.store.maintenance import plan, prune_access_log

    settings = load_settings()
    url = args.database_url or settings.database_url
    if args.batch < 1:
        print("--batch must be at least 1", file=sys.stderr)
        return 2
    try:
        retention = load_policy(args.policy or settings.policy_path).retention
    except PolicyInvalid as exc:
        print(exc, file=sys.stderr)
        return 1
    p = plan(url, retention)
    verb = "would delete" if args.dry_run else "deleting"
    print(f"access log: {verb} {p.access_log_rows} rows older than {retention.access_log_days} days "
          f"(before {p.access_log_before:%Y-%m-%d %H:%M} UTC)")
    if not args.dry_run and p.access_log_rows:
        with tqdm(total=p.access_log_rows, unit="row", desc="pruning access log", file=sys.stderr) as bar:
            deleted = prune_access_log(url, p.access_log_before, retention, batch=args.batch, on_batch=bar.update)
        print(f"access log: deleted {deleted} rows")
    print(f"incidents: {p.closed_incidents_due} closed incidents are past the {retention.incident_years}-year "
          f"retention (closed before {p.incidents_before:%Y-%m-%d}); none deleted: their history is in the "
          "hash-chained audit log, and erasing it would break `esafety audit verify`")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from esafety.store.maintenance import BackupError, backup, default_name, keep_latest

    url = args.database_url or load_settings().database_url
    out: Path = args.out
    folder = out.is_dir()
    if folder:
        out = out / default_name(url)
    elif args.keep is not None:
        print("--keep needs --out to be an existing folder", file=sys.stderr)
        return 2
    try:
        written = backup(url, out)
    except BackupError as exc:
        print(f"esafety db backup: {exc}", file=sys.stderr)
        return 2
    print(f"backup written: {written} ({written.stat().st_size} bytes)")
    if folder and args.keep is not None:
        for gone in keep_latest(out.parent, max(args.keep, 1)):
            print(f"removed old backup: {gone}")
    return 0
