"""A real mitmdump with the esafety add-ons, shared by the tests of one module."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from esafety.store.db import sessions
from esafety.store.models import AccessLog, Incident
from tests.support.proxy import ProxyUnderTest, start_proxy


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyUnderTest]:
    p = start_proxy(tmp_path_factory.mktemp("proxy"))
    yield p
    p.stop()


def wait_for(check: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> object:
    """Poll until check() is truthy; the upper bound is generous for noisy machines."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def incidents(p: ProxyUnderTest, **where: object) -> list[Incident]:
    with sessions(p.database_url)() as s:
        q = select(Incident)
        for k, v in where.items():
            q = q.where(getattr(Incident, k) == v)
        return list(s.scalars(q))


def access_rows(p: ProxyUnderTest, host: str | None = None) -> list[AccessLog]:
    with sessions(p.database_url)() as s:
        q = select(AccessLog)
        if host:
            q = q.where(AccessLog.host == host)
        return list(s.scalars(q.order_by(AccessLog.id)))


def access_count(p: ProxyUnderTest) -> int:
    with sessions(p.database_url)() as s:
        return s.scalar(select(func.count()).select_from(AccessLog)) or 0


def jsonl_lines(p: ProxyUnderTest) -> list[str]:
    path: Path = p.home / "log" / "access.jsonl"
    return path.read_text().splitlines() if path.exists() else []
