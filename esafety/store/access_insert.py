"""Access-log rows into the store straight through the DBAPI: the batch writer's hot path.

The writer thread's Python work holds the GIL that the proxy's event loop needs. A Core
`insert(...)` executemany costs ~10-12 us (SQLite) / ~16-20 us (PostgreSQL) of thread CPU a row, most of
it SQLAlchemy processing each row's parameters and a Session around the batch; here rows go to the
driver as tuples in column order (tests/bench/bench_writer.py measures both):

* SQLite: one `executemany`, `ts` turned into text by SQLAlchemy's own bind processor for the
  column, so the stored text (and what the ORM reads back) is exactly what a Core insert stores.
* PostgreSQL (psycopg 3): `COPY ... FROM STDIN` in text format, values adapted by their Python type
  as an INSERT's parameters are (a naive datetime is read in the session's time zone either way).
  Binary COPY is a little cheaper but fails on a naive datetime.
* Any other dialect, or a model change adding a column that needs processing: the Core insert.

Errors leave as SQLAlchemyError, as from a Core insert, so the writer spools on them; the DBAPI
connection behind a failed batch is invalidated rather than handed back to the pool half-broken.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import Engine, Table, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from esafety.store.db import get_engine
from esafety.store.models import AccessLog

_TABLE = cast(Table, AccessLog.__table__)
# Every column but the generated id, in table order (ts first); every row carries all of them.
COLUMNS: tuple[str, ...] = tuple(c.name for c in _TABLE.columns if c.name != "id")
_INSERT = insert(_TABLE)

Rows = Sequence[dict[str, Any]]


class AccessInserter:
    """Writes batches of access-log rows (dicts with every column) to one store, in one transaction."""

    def __init__(self, url: str):
        self.engine: Engine = get_engine(url)
        dialect = self.engine.dialect
        self._dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
        procs = {name: p for name in COLUMNS
                 if (p := _TABLE.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None}
        self._write: Callable[[Rows], None] = self._write_core
        self.path = "core"  # which way rows go, for tests and benchmarks
        if dialect.name == "sqlite" and set(procs) <= {"ts"} and COLUMNS[0] == "ts":
            self._ts = procs.get("ts") or (lambda v: v)
            self._rest = itemgetter(*COLUMNS[1:])
            self._sql = f"INSERT INTO {_TABLE.name} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
            self._write, self.path = self._write_sqlite, "sqlite"
        elif dialect.name == "postgresql" and dialect.driver == "psycopg" and not procs:
            self._values = itemgetter(*COLUMNS)
            self._sql = f"COPY {_TABLE.name} ({', '.join(COLUMNS)}) FROM STDIN"
            self._write, self.path = self._write_copy, "copy"

    def write(self, rows: Rows) -> None:
        """Store the rows or raise SQLAlchemyError (nothing stored: one transaction)."""
        self._write(rows)

    def _write_core(self, rows: Rows) -> None:
        with Session(self.engine) as s:
            s.execute(_INSERT, list(rows))
            s.commit()

    def _write_sqlite(self, rows: Rows) -> None:
        ts, rest = self._ts, self._rest
        self._on_raw_connection(
            lambda cur: cur.executemany(self._sql, [(ts(r["ts"]),) + rest(r) for r in rows]))

    def _write_copy(self, rows: Rows) -> None:
        values = self._values

        def copy(cur: Any) -> None:
            with cur.copy(self._sql) as cp:
                for r in rows:
                    cp.write_row(values(r))

        self._on_raw_connection(copy)

    def _on_raw_connection(self, work: Callable[[Any], None]) -> None:
        conn = None
        try:
            conn = self.engine.raw_connection()  # a pooled connection (pre-pinged on PostgreSQL)
            cur = conn.cursor()
            try:
                work(cur)
            finally:
                cur.close()
            conn.commit()
        except self._dbapi_error as exc:
            if conn is not None:
                conn.invalidate(exc)  # it may be broken; the pool opens a fresh one next time
            raise DBAPIError.instance(self._sql, None, exc, self._dbapi_error) from exc
        finally:
            if conn is not None:
                conn.close()
