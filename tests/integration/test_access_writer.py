"""Access-log rows written by the batch writer (straight through the DBAPI) read back through the ORM
exactly as rows written by a Core insert do, on SQLite and PostgreSQL; a store that is down spools
them and they are replayed once it is back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, delete, insert, select, text
from sqlalchemy.orm import Session

from esafety.store.access_insert import COLUMNS, AccessInserter
from esafety.store.db import get_engine
from esafety.store.models import AccessLog
from esafety.store.writer import BatchWriter

BASE = datetime(2026, 3, 2, 9, 15, 30, 123456, tzinfo=UTC)
NOW = datetime.now(UTC)


def _rows(prefix: str) -> list[dict[str, Any]]:
    """Rows like proxy_addons/accesslog.py builds, with the awkward values a URL or a clock can give."""
    stamps = [BASE, BASE.replace(microsecond=0), BASE + timedelta(days=40, microseconds=1),
              BASE.astimezone(timezone(timedelta(hours=1))),  # same instant, another offset
              NOW]
    paths = ["/", "/a\tb\\c\nd?q=%00é", "", "/" + "x" * 3999, "/search?q=it's \"quoted\""]
    return [{"ts": ts, "ref": f"{prefix}{i:03d}", "username": None if i % 2 else "amy", "policy_group": "year8",
             "device": "LAPTOP-1" if i % 3 else None, "client_ip": "10.0.0.5", "method": "CONNECT" if i == 2 else "GET",
             "scheme": "https", "host": "www.example.org", "path": path, "status": 200 + i, "bytes": 2**40 + i,
             "action": "allow", "category": "education", "rule": ""}
            for i, (ts, path) in enumerate(zip(stamps, paths, strict=True))]


def _read(url: str, prefix: str) -> list[tuple[Any, ...]]:
    with Session(get_engine(url)) as s:
        got = s.scalars(select(AccessLog).where(AccessLog.ref.like(f"{prefix}%")).order_by(AccessLog.ref)).all()
        return [tuple(getattr(r, c) for c in COLUMNS) for r in got]


def test_rows_read_back_as_a_core_insert_stores_them(database_url: str, tmp_path: Path) -> None:
    expected_path = "sqlite" if database_url.startswith("sqlite") else "copy"
    assert AccessInserter(database_url).path == expected_path
    writer = BatchWriter(database_url, tmp_path / "spool", tmp_path / "access.jsonl", lambda: None)
    writer.start()
    try:
        for row in _rows("w"):
            writer.log_access(row)
        writer.flush()
    finally:
        writer.stop()
    with get_engine(database_url).begin() as c:  # the reference: what the writer stored before
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
    utc = ["w000", "w001", "w002", "w004"]
    with Session(get_engine(database_url)) as s:
        later = s.scalars(select(AccessLog.ref).where(AccessLog.ts > BASE, AccessLog.ref.in_(utc))).all()
        assert sorted(later) == ["w002", "w004"]
        s.execute(delete(AccessLog).where(AccessLog.ts < BASE))
        s.commit()
    assert [r[1] for r in _read(database_url, "w") if r[1] in utc] == ["w000", "w002", "w004"]


def test_a_store_that_is_down_spools_and_the_rows_are_replayed(database_url: str, tmp_path: Path) -> None:
    writer = BatchWriter(database_url, tmp_path / "spool", None, lambda: None)
    table: Table = AccessLog.__table__  # type: ignore[assignment]
    with get_engine(database_url).begin() as c:
        c.execute(text(f"ALTER TABLE {table.name} RENAME TO access_log_away"))
    rows = _rows("s")
    assert not writer._write_access(rows)  # the table is gone: an error the writer catches
    writer._spool(writer._spool_access, rows)
    with get_engine(database_url).begin() as c:
        c.execute(text(f"ALTER TABLE access_log_away RENAME TO {table.name}"))
    writer._replay_spool()
    assert not writer._spool_access.exists()
    got = _read(database_url, "s")
    assert [r[1:] for r in got] == [tuple(r[c] for c in COLUMNS[1:]) for r in rows]


@pytest.mark.parametrize("batch", [1, 200])
def test_batches_of_any_size_are_stored_whole(database_url: str, batch: int) -> None:
    rows = [dict(r, ref=f"b{i:05d}") for i in range(batch) for r in _rows("")[i % 5:i % 5 + 1]]
    AccessInserter(database_url).write(rows)
    assert len(_read(database_url, "b")) == batch
