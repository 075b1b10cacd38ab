"""Helpers for the incident/dashboard tests: accounts, a configured app, signing in, a live server."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from esafety.commands.users import create_user
from esafety.config import PROJECT_ROOT, Settings, load_settings
from esafety.incidents.ingest import ingest
from esafety.incidents.model import IncidentReport
from esafety.incidents.pipeline import run_until_done
from esafety.policy.loader import load_policy
from esafety.store.db import sessions
from esafety.store.models import Incident

POLICY_PATH = PROJECT_ROOT / "policies" / "aup.yaml"
PASSWORD = "correct-horse-battery-staple"
ROLE_USERS = {"dsl": "dsl", "deputy_dsl": "deputy", "esafety_coordinator": "coord", "it_admin": "itadmin",
              "slt": "slt", "auditor": "auditor", "admin": "admin"}


def settings_for(database_url: str, home: Path, smtp_port: int = 1,
                 dashboard_url: str = "http://dash.test") -> Settings:
    return load_settings({"ESAFETY_HOME": str(home), "ESAFETY_DATABASE_URL": database_url,
                          "ESAFETY_POLICY": str(POLICY_PATH), "ESAFETY_SMTP_HOST": "127.0.0.1",
                          "ESAFETY_SMTP_PORT": str(smtp_port), "ESAFETY_SMTP_FROM": "esafety@school.test",
                          "ESAFETY_DASHBOARD_URL": dashboard_url})


def add_role_users(database_url: str) -> None:
    for role, name in ROLE_USERS.items():
        create_user(database_url, name, "staff", [role], email=f"{name}@school.test", password=PASSWORD)


def raise_incident(database_url: str, category: str = "self_harm", level: int = 4, subject: str | None = "pupil1",
                   evidence: dict[str, Any] | None = None, source: str = "proxy", summary: str = "a concern",
                   key: str | None = None) -> Incident:
    """Store one incident the way the proxy does (ingest, routed by the policy), then run the pipeline."""
    pol = load_policy(POLICY_PATH)
    rep = IncidentReport(source=source, category=category, level=level, summary=summary, subject=subject,
                         evidence=evidence or {"url": "http://example.test/page"}, key=key or "")
    with sessions(database_url)() as s:
        created = ingest(s, [rep], pol)
        s.commit()
    run_until_done(database_url, pol, "http://dash.test")
    assert created, "expected a new incident, not a burst merge"
    return created[0]


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


def login(client: TestClient | httpx.Client, username: str, password: str = PASSWORD) -> httpx.Response:
    page = client.get("/login")
    return client.post("/login", data={"username": username, "password": password, "csrf_token": csrf_of(page.text),
                                       "next": "/"}, follow_redirects=False)


def signed_in(app: Any, username: str) -> TestClient:
    client = TestClient(app, base_url="http://testserver")
    r = login(client, username)
    assert r.status_code == 303, r.text
    return client


@dataclass
class LiveServer:
    url: str
    server: Any
    thread: threading.Thread


@contextmanager
def live_server(app: Any, port: int) -> Iterator[LiveServer]:
    """uvicorn in a thread (lifespan on, so the incident worker runs)."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("dashboard did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", server, t)
    finally:
        server.should_exit = True
        t.join(timeout=15)
