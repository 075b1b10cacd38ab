"""The role matrix: every role against every page and the API, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from dashboard.app import create_app
from esafety.incidents.tables import IncidentEvent
from esafety.store.db import sessions
from tests.support.dsl import ROLE_USERS, add_role_users, csrf_of, raise_incident, settings_for, signed_in

READERS_ALL = {"dsl", "deputy_dsl", "slt", "auditor"}


def test_role_matrix(database_url: str, tmp_path: Path) -> None:
    add_role_users(database_url)
    dsl_inc = raise_incident(database_url, category="self_harm", level=4, subject="pupil1",
                             evidence={"search": "secret-dsl-evidence"})
    it_inc = raise_incident(database_url, category="vpn", level=2, subject="pupil2")
    co_inc = raise_incident(database_url, category="gambling", level=2, subject="pupil3")
    assert (dsl_inc.queue, it_inc.queue, co_inc.queue) == ("dsl", "it_services", "esafety_coordinator")
    app = create_app(settings_for(database_url, tmp_path))

    def expect_read(role: str, queue: str) -> int:
        if role == "admin":
            return 403
        if role in READERS_ALL or (role, queue) in {("it_admin", "it_services"),
                                                     ("esafety_coordinator", "esafety_coordinator")}:
            return 200
        return 404  # not in a queue the role can see: indistinguishable from absent

    def expect_write(role: str, queue: str) -> int:
        read = expect_read(role, queue)
        if read != 200:
            return read
        return 303 if role not in ("slt", "auditor") else 403  # readers who are not workers: read-only

    wrong: list[str] = []

    def check(role: str, what: str, got: int, want: int) -> None:
        if got != want:
            wrong.append(f"{role} {what}: got {got}, want {want}")

    for role, username in ROLE_USERS.items():
        c = signed_in(app, username)
        q = c.get("/incidents", follow_redirects=False)
        check(role, "queue", q.status_code, 403 if role == "admin" else 200)
        if q.status_code == 200:
            for inc in (dsl_inc, it_inc, co_inc):
                listed = f'href="/incidents/{inc.id}"' in q.text
                check(role, f"queue lists {inc.queue}", int(listed), int(expect_read(role, inc.queue) == 200))
        token = None
        for inc in (dsl_inc, it_inc, co_inc):
            r = c.get(f"/incidents/{inc.id}", follow_redirects=False)
            check(role, f"view {inc.queue}", r.status_code, expect_read(role, inc.queue))
            if r.status_code == 200:
                token = csrf_of(r.text)
                assert "secret-dsl-evidence" not in r.text  # self-harm evidence is hidden until revealed
        token = token or csrf_of(c.get("/account").text)
        for inc in (dsl_inc, it_inc, co_inc):
            r = c.post(f"/incidents/{inc.id}/note", data={"text": f"note by {role}", "csrf_token": token},
                       follow_redirects=False)
            check(role, f"note {inc.queue}", r.status_code, expect_write(role, inc.queue))
            r = c.post(f"/incidents/{inc.id}/level", data={"level": "3", "csrf_token": token},
                       follow_redirects=False)
            check(role, f"level {inc.queue}", r.status_code, expect_write(role, inc.queue))
        r = c.get("/pupils/pupil1/chronology", follow_redirects=False)
        check(role, "chronology", r.status_code, 200 if role in READERS_ALL else 403)
        r = c.get(f"/incidents/{dsl_inc.id}/export.csv", follow_redirects=False)
        check(role, "export dsl", r.status_code, expect_read(role, "dsl"))
        r = c.get("/admin/users", follow_redirects=False)
        check(role, "admin users", r.status_code, 200 if role == "admin" else 403)
        r = c.post(f"/incidents/{dsl_inc.id}/reveal", data={"csrf_token": token}, follow_redirects=False)
        check(role, "reveal dsl", r.status_code, 200 if role in ("dsl", "deputy_dsl") else expect_write(role, "dsl"))
        if r.status_code == 200:
            assert "secret-dsl-evidence" in r.text
        r = c.post("/api/incidents", json={"source": "staff", "category": "self_harm", "level": 3,
                                           "summary": f"seen in class by {role}"}, headers={"X-CSRF-Token": token})
        check(role, "api", r.status_code, 201 if role in ("dsl", "deputy_dsl", "it_admin", "esafety_coordinator")
              else 403)
    assert wrong == []

    # Auditors and SLT read but cannot change: no action forms on the page either.
    auditor = signed_in(app, "auditor")
    page = auditor.get(f"/incidents/{dsl_inc.id}").text
    assert 'id="actions"' not in page and 'id="add-note"' not in page and "secret-dsl-evidence" not in page
    # ...but every view was recorded with who looked.
    with sessions(database_url)() as s:
        viewers = set(s.scalars(select(IncidentEvent.actor).where(IncidentEvent.incident_id == dsl_inc.id,
                                                                  IncidentEvent.action == "view")))
        assert viewers == {"dsl", "deputy", "slt", "auditor"}
        revealers = set(s.scalars(select(IncidentEvent.actor).where(IncidentEvent.incident_id == dsl_inc.id,
                                                                    IncidentEvent.action == "reveal")))
        assert revealers == {"dsl", "deputy"}
        assert s.scalar(select(func.count()).select_from(IncidentEvent).where(
            IncidentEvent.action == "note", IncidentEvent.incident_id == dsl_inc.id)) == 2


def test_signed_out_visitors_are_sent_to_sign_in(sqlite_url: str, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    c = TestClient(create_app(settings_for(sqlite_url, tmp_path)))
    r = c.get("/incidents?state=open", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fincidents%3Fstate%3Dopen"
    assert c.post("/api/incidents", json={}).status_code == 401
    assert c.get("/admin/users", follow_redirects=False).status_code == 303
