"""The devices pages: who may see and change what, filters, a device's checks with evidence,
remediation and AUP clause, history, exceptions (time-boxed, approved by a named person,
audited), enrolment tokens shown once, retiring a device; escaping and CSRF."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dashboard.app import create_app
from esafety.compliance.tables import DeviceException, EnrolmentToken
from esafety.incidents.tables import IncidentEvent
from esafety.store.db import sessions
from tests.support import devices as dev
from tests.support.dsl import add_role_users, csrf_of, signed_in
from tests.support.wifi import add_pupil


@pytest.fixture
def app(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ESAFETY_COMPLIANCE_WORKER", "0")
    add_role_users(database_url)
    add_pupil(database_url, "sam.y9")
    return create_app(dev.settings(database_url, tmp_path / "home", dev.policy_with(tmp_path, grace="1h")))


def _two_devices(app, database_url: str) -> tuple[dev.Agent, dev.Agent]:  # type: ignore[no-untyped-def]
    api = TestClient(app)
    a = dev.Agent(api, dev.token(database_url), hostname="lab-pc-01")
    b = dev.Agent(api, dev.token(database_url), hostname="<script>alert(1)</script>")
    assert a.send(users=["sam.y9"], checks=dev.all_passing(
        p2p_clients="fail", listening_servers="fail")).status_code == 200
    b_checks = dev.all_passing()
    b_checks[3]["evidence"] = {"idle_lock": "<img src=x onerror=alert(1)>"}  # screen_lock, not critical
    b_checks[3]["status"] = "fail"
    assert b.send(checks=b_checks).status_code == 200
    return a, b


def test_roles(app, database_url: str) -> None:  # type: ignore[no-untyped-def]
    a, _ = _two_devices(app, database_url)
    for name in ("itadmin", "admin", "dsl", "deputy", "slt"):
        c = signed_in(app, name)
        assert c.get("/devices").status_code == 200, name
        assert c.get(f"/devices/{a.device_id}").status_code == 200, name
    for name in ("coord", "auditor"):
        c = signed_in(app, name)
        assert c.get("/devices").status_code == 403 and c.get(f"/devices/{a.device_id}").status_code == 403
    sam = signed_in(app, "sam.y9")
    assert sam.get("/devices", follow_redirects=False).status_code == 403
    anon = TestClient(app)
    assert anon.get("/devices", follow_redirects=False).headers["location"].startswith("/login")
    dsl = signed_in(app, "dsl")
    page = dsl.get(f"/devices/{a.device_id}").text
    assert 'id="exception-form"' not in page and 'id="retire-form"' not in page
    assert 'id="token-form"' not in dsl.get("/devices").text
    token = csrf_of(page)  # the sign-out form's token: the DSL's session is real, the role is not enough
    r = dsl.post(f"/devices/{a.device_id}/retire", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 403
    r = dsl.post("/devices/tokens", data={"csrf_token": token, "hours": "1"}, follow_redirects=False)
    assert r.status_code == 403


def test_list_filters_and_escaping(app, database_url: str) -> None:  # type: ignore[no-untyped-def]
    a, b = _two_devices(app, database_url)
    it = signed_in(app, "itadmin")
    page = it.get("/devices").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.index(f'data-device="{a.device_id}"') < page.index(f'data-device="{b.device_id}"')  # in_grace first
    rows = lambda html: set(re.findall(r'data-device="([0-9a-f]+)"', html))  # noqa: E731
    assert rows(it.get("/devices?state=in_grace").text) == {a.device_id}
    assert rows(it.get("/devices?state=warning").text) == {b.device_id}
    assert rows(it.get("/devices?check=p2p_clients").text) == {a.device_id}
    assert rows(it.get("/devices?check=screen_lock").text) == {b.device_id}
    assert rows(it.get("/devices?platform=windows").text) == set()
    assert rows(it.get("/devices?q=SAM.Y9").text) == {a.device_id}
    assert rows(it.get("/devices?q=3c:22:fb").text) == {a.device_id, b.device_id}
    odd = it.get("/devices?state=sideways").text
    assert "&#39;sideways&#39; is not a filter value here" in odd and rows(odd) == {a.device_id, b.device_id}


def test_device_page_shows_checks_evidence_remediation_clause_and_history(app, database_url: str) -> None:  # type: ignore[no-untyped-def]
    a, b = _two_devices(app, database_url)
    it = signed_in(app, "itadmin")
    page = it.get(f"/devices/{a.device_id}").text
    row = page[page.index('data-check="p2p_clients"'):]
    row = row[:row.index("</tr>")]
    assert "fail" in row and "critical" in row and "grace ends" in row
    from esafety.compliance.catalogue import BY_ID
    from esafety.policy.loader import load_policy
    spec = BY_ID["p2p_clients"]
    clause = load_policy(app.state.settings.policy_path).clauses[spec.aup_clause]
    assert spec.remediation.split("'")[0] in row.replace("&#39;", "'")
    assert clause.text.split("'")[0] in row.replace("&#39;", "'")
    assert "sam.y9" in page and "in_grace" in page and "10.20.30.40" in page
    hist = page[page.index('id="history"'):]
    assert "pass" in hist or "fail" in hist
    other = it.get(f"/devices/{b.device_id}").text
    assert "<img src=x" not in other and "&lt;img src=x" in other.replace("\\u003c", "&lt;")
    assert it.get("/devices/nope").status_code == 404


def test_exception_form_is_time_boxed_named_audited_and_csrf_protected(app, database_url: str) -> None:  # type: ignore[no-untyped-def]
    a, _ = _two_devices(app, database_url)
    it = signed_in(app, "itadmin")
    url = f"/devices/{a.device_id}"
    token = csrf_of(it.get(url).text)
    friday = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    form = {"check": "listening_servers", "reason": "Y10 web dev: node on port 3000", "approved_by": "Ms Patel",
            "until": friday}
    assert it.post(f"{url}/exceptions", data=form, follow_redirects=False).status_code == 403  # no CSRF token
    r = it.post(f"{url}/exceptions", data={**form, "csrf_token": token}, headers={"Origin": "http://evil.test"},
                follow_redirects=False)
    assert r.status_code == 403
    r = it.post(f"{url}/exceptions", data={**form, "csrf_token": token, "approved_by": ""})
    assert r.status_code == 422 and "name the person who approved" in r.text
    r = it.post(f"{url}/exceptions", data={**form, "csrf_token": token, "until": "next friday"})
    assert r.status_code == 422 and "date and time" in r.text
    past = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert "must be in the future" in it.post(f"{url}/exceptions", data={**form, "csrf_token": token,
                                                                           "until": past}).text
    r = it.post(f"{url}/exceptions", data={**form, "csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    page = it.get(url).text
    row = page[page.index('data-check="listening_servers"'):]
    assert "excepted" in row[:row.index("</tr>")]
    assert "Ms Patel" in page and "Y10 web dev" in page
    with sessions(database_url)() as s:
        exc = s.scalars(select(DeviceException)).one()
        assert (exc.approved_by, exc.created_by) == ("Ms Patel", "itadmin")
        ev = s.scalars(select(IncidentEvent).where(IncidentEvent.action == "device_exception")).one()
        assert ev.detail["device_id"] == a.device_id and ev.actor == "itadmin"
    r = it.post(f"{url}/exceptions/{exc.id}/revoke", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    assert it.post(f"{url}/exceptions/{exc.id}/revoke", data={"csrf_token": token}).status_code == 409


def test_a_token_is_shown_once_and_retiring_stops_the_credential(app, database_url: str) -> None:  # type: ignore[no-untyped-def]
    it = signed_in(app, "itadmin")
    token = csrf_of(it.get("/devices").text)
    assert it.post("/devices/tokens", data={"csrf_token": token, "hours": "0"}).status_code == 422
    assert "No active account named &#39;nobody&#39;" in it.post("/devices/tokens", data={
        "csrf_token": token, "hours": "2", "owner": "nobody"}).text
    r = it.post("/devices/tokens", data={"csrf_token": token, "hours": "2", "note": "ICT suite PC 14",
                                         "owner": "Sam.Y9"})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    shown = re.search(r'id="token-value">(enr_[A-Za-z0-9_-]+)<', r.text)
    assert shown
    listing = it.get("/devices").text
    assert shown[1] not in listing and "ICT suite PC 14" in listing and "sam.y9" in listing
    with sessions(database_url)() as s:
        row = s.scalars(select(EnrolmentToken)).one()
        assert row.owner == "sam.y9" and shown[1] not in row.token_sha256
    agent = dev.Agent(TestClient(app), shown[1])
    assert agent.send().status_code == 200
    page = it.get(f"/devices/{agent.device_id}").text
    assert "ICT suite PC 14" in page and "sam.y9" in page
    r = it.post(f"/devices/{agent.device_id}/retire", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    assert agent.send("heartbeat").status_code == 401
    assert "retired" in it.get(f"/devices/{agent.device_id}").text
    assert f'data-device="{agent.device_id}"' in it.get("/devices?state=retired").text
    assert f'data-device="{agent.device_id}"' not in it.get("/devices").text  # (its token row still links it)
