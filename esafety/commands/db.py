"""`esafety db upgrade|downgrade`: Alembic migrations, the same on SQLite and PostgreSQL."""

from __future__ import annotations

import argparse

from esafety.config import load_settings
from esafety.store.db import downgrade, upgrade


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="database schema migrations")
    ps = p.add_subparsers(dest="db_command", metavar="ACTION")
    ps.required = True
    u = ps.add_parser("upgrade", help="apply migrations (default: to the latest)")
    u.add_argument("revision", nargs="?", default="heads")
    u.set_defaults(func=lambda a: _do(upgrade, a.revision))
    d = ps.add_parser("downgrade", help="revert migrations to a revision ('base' for none)")
    d.add_argument("revision")
    d.set_defaults(func=lambda a: _do(downgrade, a.revision))


def _do(fn, revision: str) -> int:  # type: ignore[no-untyped-def]
    url = load_settings().database_url
    fn(url, revision)
    print(f"database at {revision}: {url.split('@')[-1]}")
    return 0
