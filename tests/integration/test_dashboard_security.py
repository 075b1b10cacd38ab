"""Sign-in, cookies, CSRF, rate limiting, XSS and SQL injection against the DSL pages."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dashboard.app import create_app
from esafety.store.db import sessions
from esafety.store.models import Incident
from tests.support.dsl import add_role_users, csrf_of, login, raise_incident, settings_for, signed_in


@pytest.fixture
def app(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    add_role_users(database_url)
    return create_app(settings_for(database_url, tmp_path))


def test_session_cookie_flags_and_sign_out(app) -> None:  # type: ignore[no-untyped-def]
    c = TestClient(app)
    r = login(c, "dsl")
    assert r.status_code == 303
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("esafety_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie  # plain HTTP here
    https = TestClient(app, base_url="https://testserver")
    cookie = next(v for k, v in login(https, "dsl").headers.multi_items() if v.startswith("esafety_session="))
    assert "Secure" in cookie
    page = c.get("/incidents")
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    c.post("/logout", data={"csrf_token": csrf_of(page.text)})
    assert c.get("/incidents", follow_redirects=False).status_code == 303


def test_wrong_passwords_are_rate_limited_and_no_default_accounts(app) -> None:  # type: ignore[no-untyped-def]
    c = TestClient(app)
    for name in ("admin", "root", "esafety"):
        assert login(c, name, "admin").status_code == 401
    for _ in range(4):
        assert login(c, "dsl", "guess").status_code == 401
    r = login(c, "dsl", "guess")
    assert r.status_code == 401
    r = login(c, "dsl")  # even the right password waits out the lock
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text


def test_login_needs_its_csrf_token_and_next_is_local_only(app) -> None:  # type: ignore[no-untyped-def]
    c = TestClient(app)
    r = c.post("/login", data={"username": "dsl", "password": "correct-horse-battery-staple", "csrf_token": "x"})
    assert r.status_code == 403
    page = c.get("/login")
    r = c.post("/login", data={"username": "dsl", "password": "correct-horse-battery-staple",
                               "csrf_token": csrf_of(page.text), "next": "//evil.test/phish"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_forms_need_the_session_csrf_token(app, database_url: str) -> None:  # type: ignore[no-untyped-def]
    inc = raise_incident(database_url, category="vpn", level=2)
    c = signed_in(app, "dsl")
    token = csrf_of(c.get(f"/incidents/{inc.id}").text)
    url = f"/incidents/{inc.id}/transition"
    assert c.post(url, data={"action": "acknowledge"}).status_code == 403
    assert c.post(url, data={"action": "acknowledge", "csrf_token": "forged"}).status_code == 403
    other = signed_in(app, "deputy")
    other_token = csrf_of(other.get(f"/incidents/{inc.id}").text)
    assert c.post(url, data={"action": "acknowledge", "csrf_token": other_token}).status_code == 403
    # A cross-site form post carries the right cookie but a foreign Origin.
    r = c.post(url, data={"action": "acknowledge", "csrf_token": token}, headers={"Origin": "http://evil.test"})
    assert r.status_code == 403
    with sessions(database_url)() as s:
        assert s.get(Incident, inc.id).state == "new"  # type: ignore[union-attr]
    r = c.post(url, data={"action": "acknowledge", "csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    with sessions(database_url)() as s:
        assert s.get(Incident, inc.id).state == "triage"  # type: ignore[union-attr]


def test_hostile_evidence_renders_inert(app, database_url: str) -> None:  # type: ignore[no-untyped-def]
    url = 'http://evil.test/?q="><script>alert(document.cookie)</script><img src=x onerror=alert(1)>'
    inc = raise_incident(database_url, category="vpn", level=2, subject="<b>pupil</b>",
                         evidence={"url": url, "<svg onload=alert(1)>": "key"}, summary="<script>x()</script>")
    c = signed_in(app, "dsl")
    page = c.get(f"/incidents/{inc.id}").text
    assert "<script>alert" not in page and "<img src=x" not in page and "<svg" not in page and "<b>pupil" not in page
    assert "&lt;script&gt;alert(document.cookie)&lt;/script&gt;" in page
    assert "&lt;script&gt;x()&lt;/script&gt;" in page
    # A note is attacker-free but still escaped; the queue escapes the pupil name too.
    token = csrf_of(page)
    c.post(f"/incidents/{inc.id}/note", data={"text": "<script>note()</script>", "csrf_token": token})
    assert "<script>note()" not in c.get(f"/incidents/{inc.id}").text
    assert "<b>pupil</b>" not in c.get("/incidents").text


def test_sql_injection_in_filters_is_just_data(app, database_url: str) -> None:  # type: ignore[no-untyped-def]
    raise_incident(database_url, category="vpn", level=2, subject="pupil9")
    c = signed_in(app, "dsl")
    hostile = ["' OR 1=1 --", "x'; DROP TABLE incidents; --", "1 UNION SELECT password_hash FROM users",
               "\" OR \"\"=\"", "%' OR '%'='"]
    for value in hostile:
        for param in ("category", "pupil", "state", "level", "queue", "page"):
            r = c.get("/incidents", params={param: value})
            assert r.status_code == 200, (param, value)
            if param in ("category", "pupil"):
                assert "No incidents match." in r.text and "0 matching" in r.text
    assert "1 matching" in c.get("/incidents", params={"pupil": "pupil9"}).text
    with sessions(database_url)() as s:
        assert s.scalar(select(func.count()).select_from(Incident)) == 1
