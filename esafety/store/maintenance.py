"""Store upkeep: pruning by the policy's retention section, and backups (SQLite and PostgreSQL).

Access-log rows older than `retention.access_log_days` are deleted in small batches, each its own
transaction, so the proxy's batch writer never waits long for the store (SQLite has one writer).

Incidents are never deleted here. Their notes and actions live in the hash-chained history
(esafety/incidents/audit.py); removing an incident's events breaks `esafety audit verify`, and
removing only the incident row would leave its notes behind while pretending it was erased. Closed
incidents past `retention.incident_years` are counted and reported so the DSL can act; erasing
them needs a chain checkpoint (a verified anchor the chain may start from), which does not exist yet.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import delete, func, select
from sqlalchemy.engine import CursorResult, make_url

from esafety.incidents.audit import SYSTEM, Chain, NewEvent
from esafety.incidents.states import State
from esafety.policy.schema import Retention
from esafety.store.db import normalise_url, sessions
from esafety.store.models import AccessLog, Incident


@dataclass(frozen=True)
class PrunePlan:
    access_log_before: datetime
    access_log_rows: int
    incidents_before: datetime
    closed_incidents_due: int  # past retention; reported, not deleted (see the module docstring)


def plan(url: str, retention: Retention, now: datetime | None = None) -> PrunePlan:
    now = now or datetime.now(UTC)
    log_cut = now - timedelta(days=retention.access_log_days)
    # Calendar years, not 365-day blocks: 29 February becomes 28 February in a common year.
    try:
        inc_cut = now.replace(year=now.year - retention.incident_years)
    except ValueError:
        inc_cut = now.replace(year=now.year - retention.incident_years, day=28)
    with sessions(url)() as s:
        rows = s.scalar(select(func.count()).select_from(AccessLog).where(AccessLog.ts < log_cut)) or 0
        due = s.scalar(select(func.count()).select_from(Incident).where(
            Incident.state == State.CLOSED.value, Incident.closed_at.is_not(None), Incident.closed_at < inc_cut)) or 0
    return PrunePlan(log_cut, rows, inc_cut, due)


def prune_access_log(url: str, before: datetime, retention: Retention, batch: int = 5000,
                     on_batch: Callable[[int], None] | None = None) -> int:
    """Delete access-log rows older than `before`, `batch` rows per transaction; returns rows deleted.

    When anything went, one "retention_prune" event is chained, so the audit trail shows that the
    logs were removed under the policy and not by hand."""
    total = 0
    make = sessions(url)
    while True:
        with make() as s, s.begin():
            ids = select(AccessLog.id).where(AccessLog.ts < before).limit(batch)
            stmt = delete(AccessLog).where(AccessLog.id.in_(ids)).execution_options(synchronize_session=False)
            n = cast(CursorResult[Any], s.execute(stmt)).rowcount
        total += n
        if on_batch and n:
            on_batch(n)
        if n < batch:
            break
    if total:
        with make() as s, s.begin():
            Chain(s).append(NewEvent(actor=SYSTEM, action="retention_prune", detail={
                "table": "access_log", "rows": total, "before": before.astimezone(UTC).isoformat(),
                "access_log_days": retention.access_log_days}))
    return total


# -- backups ---------------------------------------------------------------------------------------


class BackupError(Exception):
    """Said to the operator as it is: what failed and what to do."""


def default_name(url: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"esafety-{stamp}.{'db' if _is_sqlite(url) else 'dump'}"


def _is_sqlite(url: str) -> bool:
    return normalise_url(url).startswith("sqlite")


def backup(url: str, out: Path) -> Path:
    """Write a consistent copy of the store to `out` (written beside it, then renamed into place)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    try:
        if _is_sqlite(url):
            _backup_sqlite(url, tmp)
        else:
            _backup_postgresql(url, tmp)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _backup_sqlite(url: str, tmp: Path) -> None:
    path = make_url(normalise_url(url)).database
    if not path or path == ":memory:":
        raise BackupError("an in-memory SQLite store has nothing on disk to back up")
    if not Path(path).exists():
        raise BackupError(f"{path}: no such database file")
    tmp.unlink(missing_ok=True)
    # The online backup API copies page by page under a read lock: consistent while the proxy writes,
    # and it includes what is still only in the WAL file (a plain file copy would not).
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(tmp)
    try:
        src.backup(dst, pages=4096)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        ok = dst.execute("PRAGMA quick_check").fetchone()[0]
    finally:
        dst.close()
        src.close()
    if ok != "ok":
        raise BackupError(f"the copy failed its integrity check: {ok}")


def _backup_postgresql(url: str, tmp: Path) -> None:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupError("pg_dump not found on PATH: install the PostgreSQL client tools "
                          "(Debian: apt install postgresql-client, the server's major version or newer)")
    u = make_url(normalise_url(url))
    # The password goes in the environment, never on the command line (other users can read argv).
    env = dict(os.environ)
    for var, value in (("PGHOST", u.host), ("PGPORT", u.port), ("PGUSER", u.username),
                       ("PGPASSWORD", u.password), ("PGDATABASE", u.database)):
        if value is not None:
            env[var] = str(value)
    # Custom format: compressed, restorable table by table with pg_restore.
    cmd = [pg_dump, "--format=custom", "--no-owner", "--no-privileges", f"--file={tmp}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BackupError(f"pg_dump failed (exit {proc.returncode}): {proc.stderr.strip()}")


def keep_latest(folder: Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` esafety backups in `folder`; returns what was removed."""
    found = sorted((p for p in folder.glob("esafety-*") if p.suffix in (".db", ".dump") and p.is_file()),
                   key=lambda p: p.name, reverse=True)  # the names sort by their UTC timestamp
    gone = found[keep:]
    for p in gone:
        p.unlink()
    return gone
