"""POST /api/incidents: strict validation with reasons, idempotency keys, bearer tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dashboard.app import create_app
from esafety.cli import main
from esafety.incidents.tables import IncidentEvent
from esafety.store.db import sessions
from esafety.store.models import Incident

GOOD = {"source": "sensor", "category": "vpn", "level": 2, "summary": "WireGuard handshake seen",
        "client_ip": "10.1.2.3", "evidence": {"dst": "198.51.100.7:51820", "proto": "udp"}}


@pytest.fixture
def api(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ESAFETY_DATABASE_URL", database_url)
    assert main(["users", "token", "sensor-hall"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    from tests.support.dsl import settings_for

    client = TestClient(create_app(settings_for(database_url, tmp_path)))
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def raised_total() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("esafety_incidents_raised_total",
                                     {"source": "sensor", "queue": "it_services", "level": "2"}) or 0.0


def test_a_sensor_raises_an_incident_into_the_queue(api: TestClient, database_url: str) -> None:
    before = raised_total()
    r = api.post("/api/incidents", json=GOOD, headers={"Idempotency-Key": "sensor-0001"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["queue"] == "it_services" and body["state"] == "new" and body["created"] is True
    again = api.post("/api/incidents", json=GOOD, headers={"Idempotency-Key": "sensor-0001"})
    assert again.status_code == 200 and again.json()["id"] == body["id"] and again.json()["created"] is False
    assert raised_total() == before + 1  # counted once, like the proxy's and the agents' incidents
    with sessions(database_url)() as s:
        assert s.scalar(select(func.count()).select_from(Incident)) == 1
        inc = s.get(Incident, body["id"])
        assert inc is not None and inc.pipeline_done and inc.count == 1
        assert s.scalar(select(IncidentEvent.action).where(IncidentEvent.incident_id == inc.id)) == "raised"


def test_burst_merges_honour_their_keys(api: TestClient, database_url: str) -> None:
    first = api.post("/api/incidents", json=GOOD, headers={"Idempotency-Key": "burst-0001"}).json()
    merged = api.post("/api/incidents", json=GOOD, headers={"Idempotency-Key": "burst-0002"})
    assert merged.status_code == 200 and merged.json()["merged"] is True and merged.json()["id"] == first["id"]
    api.post("/api/incidents", json=GOOD, headers={"Idempotency-Key": "burst-0002"})  # retry: no double count
    with sessions(database_url)() as s:
        assert s.get(Incident, first["id"]).count == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(("change", "reason"), [
    ({"colour": "red"}, "Extra inputs are not permitted"),
    ({"level": "5"}, "Input should be a valid integer"),
    ({"level": 9}, "less than or equal to 5"),
    ({"source": "rumour"}, "Input should be 'proxy', 'agent', 'sensor' or 'staff'"),
    ({"category": "no_such_category"}, "unknown category 'no_such_category'"),
    ({"client_ip": "999.1.1.1"}, "does not appear to be an IPv4 or IPv6 address"),
    ({"evidence": {"page": "x" * 20_000}}, "the limit is 16384"),
    ({"summary": ""}, "at least 1 character"),
])
def test_bad_reports_are_refused_with_the_reason(api: TestClient, change: dict, reason: str) -> None:  # type: ignore[type-arg]
    r = api.post("/api/incidents", json={**GOOD, **change})
    assert r.status_code == 422
    assert reason in r.text


def test_tokens_are_checked(api: TestClient, database_url: str) -> None:
    r = api.post("/api/incidents", json=GOOD, headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401
    assert api.post("/api/incidents", content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 415
    huge = b'{"summary": "' + b"x" * 100_000 + b'"}'
    assert api.post("/api/incidents", content=huge, headers={"Content-Type": "application/json"}).status_code == 413
