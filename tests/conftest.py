"""Shared fixtures: a fresh store on SQLite or PostgreSQL, free ports, paths to shared data."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
PG_ADMIN_URL = os.environ.get("ESAFETY_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> int:
    """A port p with p..p+n-1 all free (proxy workers' listen and metrics ports are consecutive)."""
    for _ in range(200):
        base = free_port()
        socks: list[socket.socket] = []
        try:
            for i in range(n):
                socks.append(socket.socket())
                socks[-1].bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no run of free ports")


def shared_data(rel: str) -> Path:
    """A path under ../shared/data, or skip (saying why) when the shared data is absent."""
    p = SHARED_DATA / rel
    if not p.exists():
        pytest.skip(f"shared test data not present: {p}")
    return p


def _pg_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def make_pg_database() -> str:
    """Create an empty PostgreSQL database for one test module; returns its URL."""
    from sqlalchemy import create_engine, text

    name = f"esafety_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(url: str) -> None:
    from sqlalchemy import create_engine, text

    from esafety.store.db import get_engine

    get_engine(url).dispose()
    name = url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated store: the same test runs on SQLite and on PostgreSQL."""
    from esafety.store.db import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'esafety.db'}"
        upgrade(url)
        yield url
        return
    if not _pg_available():
        pytest.fail("PostgreSQL is not running at 127.0.0.1:5432 (it is part of the test environment)")
    url = make_pg_database()
    try:
        upgrade(url)
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    from esafety.store.db import upgrade

    url = f"sqlite:///{tmp_path / 'esafety.db'}"
    upgrade(url)
    return url
