"""`esafety db prune` and `esafety db backup`, run as real processes against SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from esafety.incidents.audit import SYSTEM, Chain, evidence_digest
from esafety.incidents.tables import IncidentEvent
from esafety.store.db import get_engine, sessions
from esafety.store.models import AccessLog, Incident
from tests.conftest import ROOT, drop_pg_database, make_pg_database

ESAFETY = str(Path(sys.executable).with_name("esafety"))
POLICY = ROOT / "policies" / "aup.yaml"  # retention: access_log_days 90, incident_years 25
NOW = datetime.now(UTC)
OLD_DAYS = (91, 120, 400)  # past 90 days
RECENT_DAYS = (0, 1, 89)


def esafety(url: str, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ESAFETY_DATABASE_URL=url, ESAFETY_POLICY=str(POLICY))
    if path is not None:
        env["PATH"] = path
    return subprocess.run([ESAFETY, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _log_row(ts: datetime, n: int) -> AccessLog:
    return AccessLog(ts=ts, ref=f"r{n}", username="amy", policy_group="year8", device=None, client_ip="10.0.0.5",
                     method="GET", scheme="https", host=f"h{n}.example", path="/", status=200, bytes=10,
                     action="allow", category="", rule="default")


def _incident(session, n: int, state: str, closed_at: datetime | None) -> Incident:  # type: ignore[no-untyped-def]
    at = closed_at or NOW
    inc = Incident(key=f"k{n}", ref=f"INC-{n}", source="staff", subject="amy", category="selfharm", kcsie="content",
                   level=3, queue="dsl", state=state, summary=f"concern {n}", evidence={"n": n}, occurred_at=at,
                   last_seen_at=at, created_at=at, closed_at=closed_at, outcome="logged_nfa" if closed_at else None,
                   pipeline_done=True)
    session.add(inc)
    session.flush()
    Chain(session).add(inc, SYSTEM, "raised", evidence_sha256=evidence_digest(inc))
    return inc


def seed(url: str, old_per_age: int = 10) -> tuple[int, int]:
    """Old and recent access-log rows, and incidents (open and closed, old and recent); returns
    (old rows, recent rows)."""
    rows, n = [], 0
    for days in OLD_DAYS:
        for _ in range(old_per_age):
            n += 1
            rows.append(_log_row(NOW - timedelta(days=days), n))
    for days in RECENT_DAYS:
        for _ in range(3):
            n += 1
            rows.append(_log_row(NOW - timedelta(days=days), n))
    with sessions(url)() as s, s.begin():
        s.add_all(rows)
        _incident(s, 1, "closed", NOW - timedelta(days=365 * 26))  # past 25 years
        _incident(s, 2, "closed", NOW - timedelta(days=30))
        _incident(s, 3, "monitoring", None)  # open: never touched whatever its age
    return len(OLD_DAYS) * old_per_age, len(RECENT_DAYS) * 3


def _log_ages(url: str) -> list[int]:
    with sessions(url)() as s:
        return sorted((NOW - (t if t.tzinfo else t.replace(tzinfo=UTC))).days for t in s.scalars(select(AccessLog.ts)))


def _count(url: str, model: type) -> int:
    with sessions(url)() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def test_prune_dry_run_counts_and_deletes_nothing(database_url: str) -> None:
    old, recent = seed(database_url)
    r = esafety(database_url, "db", "prune", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert f"would delete {old} rows older than 90 days" in r.stdout
    assert "1 closed incidents are past the 25-year retention" in r.stdout
    assert _count(database_url, AccessLog) == old + recent
    assert _count(database_url, Incident) == 3


def test_prune_deletes_old_rows_in_batches_and_keeps_recent(database_url: str) -> None:
    old, recent = seed(database_url)
    events_before = _count(database_url, IncidentEvent)

    r = esafety(database_url, "db", "prune", "--batch", "7")  # 30 old rows: five batches
    assert r.returncode == 0, r.stderr
    assert f"deleting {old} rows older than 90 days" in r.stdout
    assert f"access log: deleted {old} rows" in r.stdout
    assert "pruning access log" in r.stderr  # the progress bar
    assert _log_ages(database_url) == sorted(d for d in RECENT_DAYS for _ in range(3))

    # Incidents are kept, closed or open, and the chain records the prune and still verifies.
    assert _count(database_url, Incident) == 3
    with sessions(database_url)() as s:
        last = s.scalars(select(IncidentEvent).order_by(IncidentEvent.seq.desc()).limit(1)).one()
    assert (last.action, last.actor, last.detail["rows"], last.detail["table"]) == ("retention_prune", SYSTEM, old,
                                                                                   "access_log")
    assert _count(database_url, IncidentEvent) == events_before + 1
    v = esafety(database_url, "audit", "verify")
    assert v.returncode == 0 and "audit chain OK" in v.stdout, v.stdout

    again = esafety(database_url, "db", "prune")  # nothing left to do: no new chain event either
    assert again.returncode == 0, again.stderr
    assert "deleting 0 rows" in again.stdout
    assert _count(database_url, IncidentEvent) == events_before + 1
    assert _count(database_url, AccessLog) == recent


def test_prune_follows_the_policy_retention(database_url: str, tmp_path: Path) -> None:
    """A policy keeping 100 days: the 91-day-old rows stay."""
    seed(database_url)
    shutil.copytree(POLICY.parent, tmp_path / "policies")  # the lists it names are relative to it
    policy = tmp_path / "policies" / "aup.yaml"
    policy.write_text(POLICY.read_text().replace("access_log_days: 90", "access_log_days: 100"))
    r = esafety(database_url, "db", "prune", "--policy", str(policy))
    assert r.returncode == 0, r.stderr
    assert "deleting 20 rows older than 100 days" in r.stdout
    assert min(_log_ages(database_url)) == 0 and max(_log_ages(database_url)) == 91


def test_backup_sqlite_is_a_complete_openable_copy(sqlite_url: str, tmp_path: Path) -> None:
    old, recent = seed(sqlite_url)
    out = tmp_path / "backups" / "copy.db"
    r = esafety(sqlite_url, "db", "backup", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert f"backup written: {out}" in r.stdout
    with sqlite3.connect(out) as c:
        assert c.execute("SELECT count(*) FROM access_log").fetchone()[0] == old + recent
        assert c.execute("SELECT count(*) FROM incidents").fetchone()[0] == 3
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert not list(out.parent.glob(".*partial"))
    # The copy is a working store: the audit chain verifies in it.
    v = esafety(f"sqlite:///{out}", "audit", "verify")
    assert v.returncode == 0 and "audit chain OK: 3 events" in v.stdout, v.stdout


def test_backup_into_a_folder_keeps_the_newest(sqlite_url: str, tmp_path: Path) -> None:
    seed(sqlite_url, old_per_age=1)
    folder = tmp_path / "backups"
    folder.mkdir()
    for stamp in ("20250101T000000Z", "20250102T000000Z", "20250103T000000Z"):
        (folder / f"esafety-{stamp}.db").write_bytes(b"older")
    (folder / "notes.txt").write_text("not a backup: left alone")
    r = esafety(sqlite_url, "db", "backup", "--out", str(folder), "--keep", "2")
    assert r.returncode == 0, r.stderr
    made = re.search(r"backup written: (\S+)", r.stdout)
    assert made and Path(made.group(1)).parent == folder
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(["esafety-20250103T000000Z.db", Path(made.group(1)).name, "notes.txt"])


@pytest.mark.postgres
def test_backup_postgresql_restores_with_pg_restore(tmp_path: Path) -> None:
    from esafety.store.db import upgrade

    src, dst = make_pg_database(), make_pg_database()
    try:
        upgrade(src)
        old, recent = seed(src)
        out = tmp_path / "esafety.dump"
        r = esafety(src, "db", "backup", "--out", str(out))
        assert r.returncode == 0, r.stderr
        libpq_url = dst.replace("+psycopg", "")
        restore = subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={libpq_url}", str(out)],
                                 capture_output=True, text=True, timeout=120)
        assert restore.returncode == 0, restore.stderr
        assert _count(dst, AccessLog) == old + recent
        assert _count(dst, Incident) == 3
        v = esafety(dst, "audit", "verify")
        assert v.returncode == 0 and "audit chain OK: 3 events" in v.stdout, v.stdout
    finally:
        get_engine(src).dispose()
        drop_pg_database(src)
        drop_pg_database(dst)


@pytest.mark.postgres
def test_backup_postgresql_without_pg_dump_says_what_to_install(tmp_path: Path) -> None:
    database_url = make_pg_database()
    try:
        _no_pg_dump(database_url, tmp_path)
    finally:
        drop_pg_database(database_url)


def _no_pg_dump(database_url: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    assert shutil.which("pg_dump", path=str(empty)) is None
    out = tmp_path / "x.dump"
    r = esafety(database_url, "db", "backup", "--out", str(out), path=str(empty))
    assert r.returncode == 2
    assert "pg_dump not found" in r.stderr and "postgresql-client" in r.stderr
    assert not out.exists()
