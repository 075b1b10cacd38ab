"""Alembic migrations on SQLite and PostgreSQL: up to heads matches the models, down to base
removes everything, up again works, and `esafety db upgrade` (the real CLI) is idempotent."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect

# The same imports as the migrations' env.py: every module that puts tables on Base.
import esafety.compliance.tables  # noqa: F401
import esafety.identity.tables  # noqa: F401
import esafety.incidents.tables  # noqa: F401
import esafety.registrations.tables  # noqa: F401
import esafety.webauth  # noqa: F401
from esafety.store.db import downgrade, get_engine, upgrade
from esafety.store.models import Base
from tests.conftest import ROOT, _pg_available, drop_pg_database, make_pg_database

ESAFETY = str(Path(sys.executable).with_name("esafety"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store (no migrations run), made the way tests/conftest.py makes them."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'esafety.db'}"
        return
    if not _pg_available():
        pytest.fail("PostgreSQL is not running at 127.0.0.1:5432 (it is part of the test environment)")
    url = make_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


def _tables(url: str) -> set[str]:
    engine = get_engine(url)
    engine.dispose()  # the inspector must see the schema as it is now, not a cached connection's view
    return set(inspect(engine).get_table_names())


def _schema(url: str) -> set[str]:
    """Every table, and every table.column: a branch may add only columns to a shared table."""
    engine = get_engine(url)
    engine.dispose()
    insp = inspect(engine)
    tables = set(insp.get_table_names())
    return tables | {f"{t}.{c['name']}" for t in tables for c in insp.get_columns(t)}


def _columns(url: str, table: str) -> dict[str, bool]:
    return {c["name"]: bool(c["nullable"]) for c in inspect(get_engine(url)).get_columns(table)}


def _indexes(url: str, table: str) -> set[str]:
    return {i["name"] for i in inspect(get_engine(url)).get_indexes(table) if i["name"]}


def _assert_matches_models(url: str) -> None:
    tables = _tables(url)
    expected = set(Base.metadata.tables)
    assert expected - tables == set(), "tables in the models but not created by the migrations"
    assert tables - expected == {"alembic_version"}, "tables created by migrations but not in the models"
    for name, table in Base.metadata.tables.items():
        cols = _columns(url, name)
        model_cols = {c.name: bool(c.nullable) for c in table.columns}
        assert set(cols) == set(model_cols), f"{name}: columns differ"
        for col, nullable in model_cols.items():
            if not table.columns[col].primary_key:
                assert cols[col] == nullable, f"{name}.{col}: nullable differs from the model"
        model_indexes = {i.name for i in table.indexes if i.name}
        assert model_indexes <= _indexes(url, name), f"{name}: indexes missing"


def test_upgrade_down_to_base_and_up_again(empty_url: str) -> None:
    upgrade(empty_url)
    _assert_matches_models(empty_url)

    downgrade(empty_url, "base")
    assert _tables(empty_url) <= {"alembic_version"}

    upgrade(empty_url)  # the round trip: every downgrade left nothing behind that blocks upgrading
    _assert_matches_models(empty_url)


def test_each_branch_downgrades_alone(empty_url: str) -> None:
    """A branch head can be taken off without touching the others (they share incidents_0001)."""
    from alembic.script import ScriptDirectory

    from esafety.store.db import alembic_config

    upgrade(empty_url)
    heads = ScriptDirectory.from_config(alembic_config(empty_url)).get_heads()
    assert len(heads) >= 2
    everything = _schema(empty_url)
    for head in heads:
        downgrade(empty_url, f"{head}@-1")
        left = _schema(empty_url)
        assert left < everything and "incident_events" in left, f"{head}: only its own tables and columns go"
        upgrade(empty_url)
        assert _schema(empty_url) == everything
    _assert_matches_models(empty_url)


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ESAFETY_DATABASE_URL=url)
    return subprocess.run([ESAFETY, "db", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_upgrade_is_idempotent(empty_url: str) -> None:
    first = _cli(empty_url, "upgrade")
    assert first.returncode == 0, first.stderr
    assert "database at heads" in first.stdout
    _assert_matches_models(empty_url)
    second = _cli(empty_url, "upgrade")
    assert second.returncode == 0, second.stderr
    _assert_matches_models(empty_url)

    down = _cli(empty_url, "downgrade", "base")
    assert down.returncode == 0, down.stderr
    assert _tables(empty_url) <= {"alembic_version"}
    again = _cli(empty_url, "upgrade")
    assert again.returncode == 0, again.stderr
    _assert_matches_models(empty_url)
