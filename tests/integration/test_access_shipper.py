"""The access-log shipper, on SQLite and PostgreSQL: lines the proxy journaled reach the store as a
Core insert stores them, once each, through a store outage, a killed shipper, log rotation (by
renaming or copytruncate) and malformed lines; as a process it stores everything its proxy wrote
when the proxy goes, and a second shipper waits for the first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, delete, insert, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from esafety.store.access_insert import COLUMNS, AccessInserter
from esafety.store.db import get_engine
from esafety.store.journal import read_checkpoint, write_checkpoint
from esafety.store.models import AccessLog
from esafety.store.shipper import Shipper
from proxy_addons.accesslog import encode
from tests.integration.conftest import wait_for

BASE = datetime(2026, 3, 2, 9, 15, 30, 123456, tzinfo=UTC)
NOW = datetime.now(UTC)


def _rows(prefix: str, n: int = 5) -> list[dict[str, Any]]:
    """Rows like proxy_addons/accesslog.py builds, with the awkward values a URL or a clock can give."""
    stamps = [BASE, BASE.replace(microsecond=0), BASE + timedelta(days=40, microseconds=1),
              BASE.astimezone(timezone(timedelta(hours=1))),  # same instant, another offset
              NOW]
    paths = ["/", "/a\tb\\c\nd?q=%00é", "", "/" + "x" * 3999, "/search?q=it's \"quoted\""]
    return [{"ts": stamps[i % 5], "ref": f"{prefix}{i:04d}", "username": None if i % 2 else "amy",
             "policy_group": "year8", "device": "LAPTOP-1" if i % 3 else None, "client_ip": "10.0.0.5",
             "method": "CONNECT" if i % 5 == 2 else "GET", "scheme": "https", "host": "www.example.org",
             "path": paths[i % 5], "status": 200 + i % 5, "bytes": 2**40 + i, "action": "allow",
             "category": "education", "rule": ""}
            for i in range(n)]


def _journal(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "ab") as fh:
        fh.write(b"".join(encode(r) for r in rows))


def _read(url: str, prefix: str) -> list[tuple[Any, ...]]:
    with Session(get_engine(url)) as s:
        got = s.scalars(select(AccessLog).where(AccessLog.ref.like(f"{prefix}%")).order_by(AccessLog.ref)).all()
        return [tuple(getattr(r, c) for c in COLUMNS) for r in got]


def _refs(url: str, prefix: str) -> list[str]:
    return [r[1] for r in _read(url, prefix)]


def test_rows_read_back_as_a_core_insert_stores_them(database_url: str, tmp_path: Path) -> None:
    expected_path = "sqlite" if database_url.startswith("sqlite") else "copy"
    assert AccessInserter(database_url).path == expected_path
    journal = tmp_path / "access.jsonl"
    _journal(journal, _rows("w"))
    assert Shipper(journal, database_url).ship() == 5
    with get_engine(database_url).begin() as c:  # the reference: what a Core insert stores
        c.execute(insert(AccessLog.__table__), _rows("c"))  # type: ignore[arg-type]

    ours, core = _read(database_url, "w"), _read(database_url, "c")
    assert len(ours) == 5
    assert [r[1:] for r in ours] == [(f"w{r[1][1:]}",) + r[2:] for r in core]
    assert [r[0] for r in ours] == [r[0] for r in core]
    for got, sent in zip(ours, _rows("w"), strict=True):
        if got[0].tzinfo is None:  # SQLite keeps the clock fields without the offset (as a Core insert does)
            assert got[0] == sent["ts"].replace(tzinfo=None)
        else:
            assert got[0] == sent["ts"]
    if database_url.startswith("sqlite"):  # the very text a Core insert stores
        with get_engine(database_url).connect() as c:
            raw = c.execute(text("SELECT ref, ts FROM access_log ORDER BY ref")).all()
        assert [ts for ref, ts in raw if ref.startswith("w")] == [ts for ref, ts in raw if ref.startswith("c")]

    # selections and pruning by ts see the UTC rows where they belong (the proxy's clock is UTC)
    utc = ["w0000", "w0001", "w0002", "w0004"]
    with Session(get_engine(database_url)) as s:
        later = s.scalars(select(AccessLog.ref).where(AccessLog.ts > BASE, AccessLog.ref.in_(utc))).all()
        assert sorted(later) == ["w0002", "w0004"]
        s.execute(delete(AccessLog).where(AccessLog.ts < BASE))
        s.commit()
    assert [r[1] for r in _read(database_url, "w") if r[1] in utc] == ["w0000", "w0002", "w0004"]


def test_a_store_that_is_down_keeps_the_lines_in_the_journal_until_it_is_back(database_url: str,
                                                                              tmp_path: Path) -> None:
    journal = tmp_path / "access.jsonl"
    _journal(journal, _rows("s", 3))
    shipper = Shipper(journal, database_url)
    assert shipper.ship() == 3
    stored_to = read_checkpoint(journal)[1]
    assert stored_to == journal.stat().st_size

    table: Table = AccessLog.__table__  # type: ignore[assignment]
    with get_engine(database_url).begin() as c:
        c.execute(text(f"ALTER TABLE {table.name} RENAME TO access_log_away"))
    _journal(journal, _rows("t", 4))
    with pytest.raises(SQLAlchemyError):
        shipper.ship()
    assert read_checkpoint(journal)[1] == stored_to  # nothing counted as stored
    with get_engine(database_url).begin() as c:
        c.execute(text(f"ALTER TABLE access_log_away RENAME TO {table.name}"))
    assert shipper.ship() == 4
    assert _refs(database_url, "t") == [f"t{i:04d}" for i in range(4)]
    assert read_checkpoint(journal)[1] == journal.stat().st_size


def test_a_killed_shipper_stores_nothing_twice_and_a_half_written_line_waits(database_url: str,
                                                                            tmp_path: Path) -> None:
    journal = tmp_path / "access.jsonl"
    _journal(journal, _rows("k", 2500))  # more than one batch
    first = Shipper(journal, database_url)
    assert first.ship() == 2500
    first.close()
    # Killed after its last commit, before the checkpoint moved: the successor sees them all again.
    write_checkpoint(journal, journal.stat().st_ino, 0)
    _journal(journal, _rows("m", 3))
    with open(journal, "ab") as fh:
        fh.write(encode(_rows("p", 1)[0])[:40])  # a line still being written
    second = Shipper(journal, database_url)
    assert second.ship() == 3
    assert len(_refs(database_url, "k")) == 2500 and len(set(_refs(database_url, "k"))) == 2500
    assert _refs(database_url, "p") == []
    with open(journal, "ab") as fh:
        fh.write(encode(_rows("p", 1)[0])[40:])
    assert second.ship() == 1
    assert _refs(database_url, "p") == ["p0000"]


def test_rotation_by_renaming_and_by_copytruncate_loses_no_line(database_url: str, tmp_path: Path) -> None:
    journal = tmp_path / "access.jsonl"
    _journal(journal, _rows("a", 2))
    shipper = Shipper(journal, database_url)
    assert shipper.ship() == 2
    # The proxy writes two more lines, then logrotate renames the file and the proxy restarts.
    _journal(journal, _rows("b", 2))
    journal.rename(tmp_path / "access.jsonl.1")
    assert shipper.ship() == 2  # read to its end from the old descriptor
    _journal(journal, _rows("c", 3))  # the restarted proxy's new file
    assert shipper.ship() == 3
    shipper.close()

    # Rotated while no shipper ran: the next one finds the rest beside the journal by its inode.
    _journal(journal, _rows("d", 2))
    journal.rename(tmp_path / "access.jsonl.1")
    _journal(journal, _rows("e", 1))
    assert Shipper(journal, database_url).ship() == 3
    assert _refs(database_url, "d") == ["d0000", "d0001"] and _refs(database_url, "e") == ["e0000"]

    # copytruncate: the file is copied away and emptied in place; what comes next is read from its start.
    shipper = Shipper(journal, database_url)
    assert shipper.ship() == 0
    os.truncate(journal, 0)
    _journal(journal, _rows("f", 2))
    assert shipper.ship() == 2
    assert _refs(database_url, "f") == ["f0000", "f0001"]


def test_malformed_lines_are_skipped_and_counted(database_url: str, tmp_path: Path) -> None:
    journal = tmp_path / "access.jsonl"
    _journal(journal, _rows("g", 1))
    with open(journal, "ab") as fh:
        fh.write(b"not json\n{\"ts\": \"2026-01-01T00:00:00+00:00\"}\n{\"ts\": \"yesterday\", " +
                 encode({k: v for k, v in _rows("x", 1)[0].items() if k != "ts"})[1:])
    _journal(journal, _rows("h", 1))
    shipper = Shipper(journal, database_url)
    assert shipper.ship() == 2
    assert shipper.malformed == 3
    assert _refs(database_url, "g") == ["g0000"] and _refs(database_url, "h") == ["h0000"]


@pytest.mark.parametrize("batch", [1, 200])
def test_batches_of_any_size_are_stored_whole(database_url: str, batch: int) -> None:
    rows = [dict(r, ref=f"b{i:05d}") for i in range(batch) for r in _rows("")[i % 5:i % 5 + 1]]
    AccessInserter(database_url).write(rows)
    assert len(_read(database_url, "b")) == batch


def _shipper_args(journal: Path, url: str) -> list[str]:
    return [sys.executable, "-m", "esafety.store.shipper", "--journal", str(journal), "--database-url", url,
            "--interval-ms", "50"]


_PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen(sys.argv[1:] + ["--parent", str(os.getpid())], stderr=open(os.environ["LOG"], "ab"))
print(child.pid, flush=True)
time.sleep(600)
"""


def test_the_process_stores_what_its_parent_wrote_after_the_parent_dies(sqlite_url: str, tmp_path: Path) -> None:
    journal, log = tmp_path / "access.jsonl", tmp_path / "shipper.log"
    # A stand-in for the proxy: the shipper's parent, killed with SIGKILL below.
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, *_shipper_args(journal, sqlite_url)],
                              stdout=subprocess.PIPE, env={**os.environ, "LOG": str(log)})
    assert parent.stdout is not None
    first = int(parent.stdout.readline())
    second = None
    try:
        _journal(journal, _rows("q", 10))
        assert wait_for(lambda: len(_refs(sqlite_url, "q")) == 10), log.read_text()
        # A second shipper for the same journal (a restarted proxy's) waits for the first to go.
        with open(log, "ab") as out:
            second = subprocess.Popen([*_shipper_args(journal, sqlite_url), "--parent", str(os.getpid())],
                                      stderr=out)
        time.sleep(1.0)  # started, and waiting for the lock
        os.kill(first, signal.SIGSTOP)  # frozen: only the second could store the next lines
        _journal(journal, _rows("r", 5))
        time.sleep(0.5)
        assert _refs(sqlite_url, "r") == [], "the second shipper ran while the first held the journal"
        parent.kill()  # SIGKILL: the orphaned shipper stores what is written, then exits
        parent.wait()
        os.kill(first, signal.SIGCONT)
        assert wait_for(lambda: not _alive(first), timeout=20), log.read_text()
        assert _refs(sqlite_url, "r") == [f"r{i:04d}" for i in range(5)]
        _journal(journal, _rows("u", 2))  # now the second one holds the journal
        assert wait_for(lambda: len(_refs(sqlite_url, "u")) == 2), log.read_text()
        second.terminate()
        assert second.wait(timeout=20) == 0
    finally:
        for p in (parent, second):
            if p is not None and p.poll() is None:
                p.kill()
        if _alive(first):
            os.kill(first, signal.SIGKILL)
    assert len(_refs(sqlite_url, "")) == 17


def _alive(pid: int) -> bool:
    """Running (an orphan is reaped by init, so a zombie does not linger)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
