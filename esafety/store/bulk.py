"""Multi-row inserts that stay fast on PostgreSQL.

SQLAlchemy turns an INSERT ... RETURNING of many rows into one statement with a bind parameter per
value ("insertmanyvalues"); psycopg then re-parses that statement text for every batch (it caches
only statements of up to 50 parameters), which cost more than the insert itself: ~0.3 s for 2,000
incidents. A plain executemany is sent in psycopg's pipeline mode: one short, cached statement and
all rows in one round trip. So on PostgreSQL the ids are taken from the table's sequence first
(what the column default would have done) and the rows are inserted with them; SQLite's driver
has no such cost and keeps INSERT ... RETURNING.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, any_, bindparam, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import QueryableAttribute, Session


def insert_with_ids(session: Session, table: Table, rows: list[dict[str, Any]]) -> list[int]:
    """Insert `rows` in order; returns their new primary keys in the same order (ascending)."""
    if not rows:
        return []
    pk = table.primary_key.columns.values()[0]
    if len(rows) > 1 and session.get_bind().dialect.name == "postgresql":  # one row: RETURNING is one round trip
        seq = func.pg_get_serial_sequence(table.name, pk.name)
        ids = sorted(session.scalars(select(func.nextval(seq)).select_from(func.generate_series(1, len(rows)))))
        session.execute(insert(table), [{**row, pk.name: i} for row, i in zip(rows, ids, strict=True)])
        return ids
    return list(session.scalars(insert(table).returning(pk, sort_by_parameter_order=True), rows))


def one_of(session: Session, column: ColumnElement[Any] | QueryableAttribute[Any],
           values: Sequence[Any]) -> ColumnElement[bool]:
    """`column IN (values)`; on PostgreSQL `column = ANY(array)`: one bind parameter, so psycopg's
    statement cache applies and a 500-key lookup is not re-parsed for every chunk."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)
