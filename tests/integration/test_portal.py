"""The captive portal's sign-in page against a real store (SQLite and PostgreSQL): what it binds,
what it refuses, and what it shows."""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update

from dashboard.app import create_app
from esafety.commands.users import create_user
from esafety.identity.portal import issue_token, load_key
from esafety.store.db import sessions
from esafety.store.models import IpBinding, User
from esafety.webauth import LoginAttempt
from tests.support.dsl import PASSWORD, csrf_of, settings_for

PUPIL_IP = "10.30.8.17"


@pytest.fixture
def app(database_url: str, tmp_path: Path) -> Any:
    create_user(database_url, "amy.y8", "year8", [], display_name="Amy Pond", password=PASSWORD)
    with sessions(database_url)() as s:
        s.execute(update(User).where(User.username == "amy.y8").values(year_group=8, tutor_group="8RB"))
        s.commit()
    return create_app(settings_for(database_url, tmp_path))


def _key(app: Any) -> bytes:
    return load_key(app.state.settings.home)


def _token(app: Any, ip: str = PUPIL_IP, at: float | None = None) -> str:
    return issue_token(_key(app), ip, time.time() if at is None else at)


def _sign_in(c: TestClient, t: str, password: str = PASSWORD, next_url: str = "http://www.bbc.co.uk/news",
             username: str = "amy.y8", csrf: str | None = None) -> Any:
    page = c.get("/portal", params={"t": t, "next": next_url})
    return c.post("/portal", data={"username": username, "password": password, "t": t, "next": next_url,
                                   "csrf_token": csrf_of(page.text) if csrf is None else csrf})


def _bindings(url: str) -> list[IpBinding]:
    with sessions(url)() as s:
        return list(s.scalars(select(IpBinding).order_by(IpBinding.ip)))


def _signins(result: str) -> float:
    return REGISTRY.get_sample_value("esafety_portal_signins_total", {"result": result}) or 0.0


def _aware(dt: datetime | None) -> datetime:
    assert dt is not None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def test_the_form_names_the_school_and_is_protected(app: Any) -> None:
    c = TestClient(app)
    r = c.get("/portal", params={"t": _token(app), "next": "http://www.bbc.co.uk/news"})
    assert r.status_code == 200
    assert "Example Academy" in r.text and "Sign in to use the internet" in r.text
    assert 'name="password" type="password"' in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"] and "<script" not in r.text
    assert r.headers["cache-control"] == "no-store" and r.headers["x-frame-options"] == "DENY"
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("esafety_portal_csrf="))
    assert "Path=/portal" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert c.get("/assets/portal.css").status_code == 200


def test_signing_in_binds_the_tokens_ip_for_the_policys_session(app: Any, database_url: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    before = _signins("ok")
    c = TestClient(app)
    with caplog.at_level(logging.INFO, logger="esafety.dashboard.portal"):
        r = _sign_in(c, _token(app))
    assert r.status_code == 200, r.text
    assert re.search(r"Signed in as <strong>Amy Pond</strong> \(Year 8, 8RB\)", r.text)
    assert '<a class="button" id="continue" href="http://www.bbc.co.uk/news"' in r.text
    assert "Sign out of this device" in r.text
    [b] = _bindings(database_url)
    # The token's address, not the test client's (the proxy saw the pupil; the dashboard sees whoever asked).
    assert (b.ip, b.username, b.source) == (PUPIL_IP, "amy.y8", "portal")
    assert b.session_id and len(b.session_id) >= 24
    left = (_aware(b.expires_at) - datetime.now(UTC)).total_seconds()
    assert 8 * 3600 - 60 < left <= 8 * 3600  # policies/aup.yaml: no portal section, so the 8 h default
    assert _signins("ok") == before + 1
    [rec] = [r for r in caplog.records if r.getMessage() == "portal sign-in"]
    assert rec.fields == {"result": "ok", "username": "amy.y8", "ip": PUPIL_IP,  # type: ignore[attr-defined]
                          "session_seconds": 8 * 3600}
    # No dashboard session: the portal names the device, not the person at the browser.
    assert "esafety_session" not in c.cookies
    # The device shows who is signed in when the page is opened again.
    again = c.get("/portal")
    assert "Signed in as" not in again.text  # the test client's own address is not the one bound
    again = c.get("/portal", params={"t": _token(app)})
    assert "Signed in as <strong>Amy Pond</strong>" in again.text


def test_a_second_sign_in_on_the_address_replaces_the_first(app: Any, database_url: str) -> None:
    create_user(database_url, "bo.y8", "year8", [], display_name="Bo", password=PASSWORD)
    assert _sign_in(TestClient(app), _token(app)).status_code == 200
    assert _sign_in(TestClient(app), _token(app), username="bo.y8").status_code == 200
    [b] = _bindings(database_url)
    assert b.username == "bo.y8"


def test_a_wrong_password_binds_nothing_and_counts(app: Any, database_url: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    before = _signins("rejected")
    c = TestClient(app)
    with caplog.at_level(logging.INFO, logger="esafety.dashboard.portal"):
        r = _sign_in(c, _token(app), password="guess")
    assert r.status_code == 401 and "Wrong username or password." in r.text
    assert 'value="amy.y8"' in r.text  # the form again, name kept
    assert _bindings(database_url) == []
    assert _signins("rejected") == before + 1
    assert [r.fields["result"] for r in caplog.records if r.getMessage() == "portal sign-in"] == ["rejected"]  # type: ignore[attr-defined]
    with sessions(database_url)() as s:  # the same failure count as /login, so the same lockout
        assert s.scalar(select(func.count()).select_from(LoginAttempt).where(
            LoginAttempt.username == "amy.y8", LoginAttempt.ok.is_(False))) == 1
    for _ in range(4):
        assert _sign_in(c, _token(app), password="guess").status_code == 401
    r = _sign_in(c, _token(app))
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text
    assert _bindings(database_url) == []


def test_a_forged_or_expired_token_is_refused(app: Any, database_url: str) -> None:
    good = _token(app)
    forged = {"expired": _token(app, at=time.time() - 3600),
              "other key": issue_token(b"k" * 32, PUPIL_IP, time.time()),
              "tampered": good[:10] + ("B" if good[10] == "A" else "A") + good[11:],
              "garbage": "<script>alert(1)</script>"}
    before = _signins("bad_token")
    c = TestClient(app)
    for how, t in forged.items():
        page = c.get("/portal", params={"t": t})
        assert page.status_code == 400, how
        assert "This sign-in link has expired: open any website again to get a new one" in page.text, how
        assert 'name="password"' not in page.text and "<script>alert" not in page.text, how
        r = c.post("/portal", data={"username": "amy.y8", "password": PASSWORD, "t": t, "next": "",
                                    "csrf_token": c.cookies["esafety_portal_csrf"]})
        assert r.status_code == 400 and "This sign-in link has expired" in r.text, how
    assert _bindings(database_url) == []
    assert _signins("bad_token") == before + len(forged)


def test_without_its_csrf_token_the_sign_in_is_refused(app: Any, database_url: str) -> None:
    c = TestClient(app)
    r = _sign_in(c, _token(app), csrf="not-the-cookie")
    assert r.status_code == 403 and "The sign-in form expired" in r.text
    fresh = TestClient(app)  # no cookie at all, the token copied from elsewhere
    r = fresh.post("/portal", data={"username": "amy.y8", "password": PASSWORD, "t": _token(app),
                                    "csrf_token": csrf_of(c.get("/portal", params={"t": _token(app)}).text)})
    assert r.status_code == 403
    page = c.get("/portal", params={"t": _token(app)})
    r = c.post("/portal", headers={"Origin": "http://evil.test"},
               data={"username": "amy.y8", "password": PASSWORD, "t": _token(app), "csrf_token": csrf_of(page.text)})
    assert r.status_code == 403  # another site posting the form
    assert _bindings(database_url) == []


def test_a_next_that_is_not_a_web_page_is_not_linked(app: Any, database_url: str) -> None:
    c = TestClient(app)
    r = _sign_in(c, _token(app), next_url="javascript:alert(document.cookie)")
    assert r.status_code == 200 and "Signed in as" in r.text
    assert 'id="continue"' not in r.text and "You can now open any website." in r.text
    assert 'href="javascript' not in r.text.lower()
    assert len(_bindings(database_url)) == 1
    for next_url in ("JavaScript:alert(1)", "data:text/html,<script>alert(1)</script>", " javascript:alert(1)",
                     "java\tscript:alert(1)", "//evil.test/x", "/admin/users", "http://", "http://[::1"):
        page = c.get("/portal", params={"t": _token(app), "next": next_url})  # the signed-in device's page
        assert "Signed in as" in page.text, next_url
        assert 'id="continue"' not in page.text and "<script>alert" not in page.text, next_url
    page = c.get("/portal", params={"t": _token(app), "next": "https://www.bbc.co.uk/news?a=1&b=2"})
    assert '<a class="button" id="continue" href="https://www.bbc.co.uk/news?a=1&amp;b=2"' in page.text


def test_a_next_is_shown_escaped(app: Any) -> None:
    hostile = 'http://www.bbc.co.uk/"><script>alert(1)</script>'
    r = _sign_in(TestClient(app), _token(app), next_url=hostile)
    assert "<script>alert(1)</script>" not in r.text
    assert 'href="http://www.bbc.co.uk/&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in r.text


def test_sign_out_removes_only_this_devices_binding(app: Any, database_url: str) -> None:
    other = TestClient(app)
    assert _sign_in(other, _token(app, ip="10.30.8.99")).status_code == 200
    c = TestClient(app)
    page = _sign_in(c, _token(app))
    assert {b.ip for b in _bindings(database_url)} == {PUPIL_IP, "10.30.8.99"}
    r = c.post("/portal/signout", data={"csrf_token": "wrong"})
    assert r.status_code == 403 and len(_bindings(database_url)) == 2
    r = c.post("/portal/signout", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 200 and "This device is no longer signed in" in r.text
    assert [b.ip for b in _bindings(database_url)] == ["10.30.8.99"]
    assert "Signed in as" not in c.get("/portal", params={"t": _token(app)}).text


def test_a_live_agent_binding_is_never_replaced(app: Any, database_url: str) -> None:
    now = datetime.now(UTC)
    with sessions(database_url)() as s:
        s.add(IpBinding(ip=PUPIL_IP, username="amy.y8", device="SCHOOL-PC-12", source="agent", updated_at=now,
                        expires_at=now + timedelta(minutes=10)))
        s.add(IpBinding(ip="10.30.8.50", username="amy.y8", device="OLD-PC", source="agent", updated_at=now,
                        expires_at=now - timedelta(minutes=10)))
        s.commit()
    create_user(database_url, "bo.y8", "year8", [], password=PASSWORD)
    before = _signins("managed")
    r = _sign_in(TestClient(app), _token(app), username="bo.y8")
    assert r.status_code == 409 and "already known to the school" in r.text
    assert _signins("managed") == before + 1
    # An expired agent binding is history: the pupil now at that address signs in.
    assert _sign_in(TestClient(app), _token(app, ip="10.30.8.50"), username="bo.y8").status_code == 200
    got = {b.ip: (b.username, b.source, b.device) for b in _bindings(database_url)}
    assert got == {PUPIL_IP: ("amy.y8", "agent", "SCHOOL-PC-12"), "10.30.8.50": ("bo.y8", "portal", None)}


def test_without_a_token_the_address_the_dashboard_sees_is_bound(app: Any, database_url: str) -> None:
    c = TestClient(app, client=("10.30.8.77", 50000))
    page = c.get("/portal")
    assert page.status_code == 200 and 'name="password"' in page.text
    r = c.post("/portal", data={"username": "amy.y8", "password": PASSWORD, "t": "", "next": "",
                                "csrf_token": csrf_of(page.text)})
    assert r.status_code == 200
    assert [(b.ip, b.username) for b in _bindings(database_url)] == [("10.30.8.77", "amy.y8")]
    assert "Signed in as <strong>Amy Pond</strong>" in c.get("/portal").text  # and the device shows it
