"""The WiFi pages over HTTP: pupils sign in as members and see only their own pages; bad input
and forged posts are refused with a clear message; IT's queue and decisions; bans and AUPs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from dashboard.app import create_app
from esafety.incidents.tables import NotificationOutbox
from esafety.registrations import sweep
from esafety.registrations.prereqs import DeviceCompliance, StaticCompliance
from esafety.registrations.tables import AupAcceptance, Registration, RegistrationEvent
from esafety.store.db import sessions
from tests.support import wifi
from tests.support.dsl import add_role_users, csrf_of, settings_for, signed_in

MAC = "3c:22:fb:12:34:56"
TODAY = datetime.now(UTC).date().isoformat()


def _app(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    add_role_users(database_url)
    wifi.add_pupil(database_url)
    wifi.add_pupil(database_url, "ali.y10", group="year10")
    return create_app(settings_for(database_url, tmp_path))


def _count(url: str, table: type) -> int:
    with sessions(url)() as s:
        return s.scalar(select(func.count()).select_from(table)) or 0


def _accept(c, parent: str = "Jo Parent") -> None:  # type: ignore[no-untyped-def]
    page = c.get("/wifi/aup").text
    vid = re.search(r'name="version_id" value="(\d+)"', page)
    digest = re.search(r'name="text_sha256" value="([0-9a-f]{64})"', page)
    assert vid and digest
    r = c.post("/wifi/aup", data={"csrf_token": csrf_of(page), "version_id": vid[1], "text_sha256": digest[1],
                                  "accept": "yes", "parent_name": parent, "parent_date": TODAY},
               follow_redirects=False)
    assert r.status_code == 303, r.text


def _register(c, mac: str = MAC, **extra: str):  # type: ignore[no-untyped-def]
    token = csrf_of(c.get("/wifi").text)
    data = {"csrf_token": token, "device_name": "Sam's iPhone", "device_type": "phone", "mac": mac, "aup_ok": "yes",
            **extra}
    return c.post("/wifi/register", data=data, follow_redirects=False)


def test_a_pupil_signs_in_as_a_member_and_registers(database_url: str, tmp_path: Path) -> None:
    app = _app(database_url, tmp_path)
    wifi.publish(database_url)
    c = signed_in(app, "sam.y9")
    r = c.get("/", follow_redirects=False)
    assert r.headers["location"] == "/wifi"
    home = c.get("/wifi").text
    assert "Read and accept the AUP" in home and "(member)" in home and 'action="/wifi/register"' not in home
    for staff_page in ("/incidents", "/registrations", "/registrations/bans", "/registrations/aup", "/admin/users"):
        assert c.get(staff_page, follow_redirects=False).status_code == 403, staff_page
    assert _register(c).status_code == 409  # no acceptance yet
    _accept(c)
    with sessions(database_url)() as s:
        acc = s.scalars(select(AupAcceptance)).one()
        assert (acc.username, acc.parent_name, str(acc.parent_accepted_on)) == ("sam.y9", "Jo Parent", TODAY)
    r = _register(c)
    assert r.status_code == 303 and r.headers["location"].startswith("/wifi/devices/")
    page = c.get(r.headers["location"]).text
    assert "pending_approval" in page and "IT services will decide by" in page


def test_bad_input_and_forged_posts_are_refused_with_a_message(database_url: str, tmp_path: Path) -> None:
    app = _app(database_url, tmp_path)
    wifi.publish(database_url)
    sam, ali = signed_in(app, "sam.y9"), signed_in(app, "ali.y10")
    _accept(sam)
    _accept(ali)
    assert _register(sam).status_code == 303
    rows = (_count(database_url, Registration), _count(database_url, RegistrationEvent))
    r = _register(ali, mac="3c:22:fb:12:34")
    assert r.status_code == 400 and "six pairs of hex digits" in r.text and 'value="3c:22:fb:12:34"' in r.text
    r = _register(ali, mac="3a:22:fb:12:34:56")
    assert r.status_code == 400 and "private (randomised) WiFi address" in r.text
    r = _register(ali, mac="3C-22-FB-12-34-56")
    assert r.status_code == 409 and "already registered" in r.text and "sam" not in r.text.split("<main>")[1]
    r = _register(ali, mac="3c:22:fb:00:00:01", aup_ok="")
    assert r.status_code == 400 and "Tick the box" in r.text
    # Forged: no token, a wrong token, and a right token posted from another site.
    for data, headers in (({}, {}), ({"csrf_token": "forged"}, {}),
                          ({"csrf_token": csrf_of(ali.get("/wifi").text)}, {"Origin": "http://evil.test"})):
        r = ali.post("/wifi/register", data={"device_name": "X", "device_type": "phone", "mac": "3c:22:fb:00:00:02",
                                             "aup_ok": "yes", **data}, headers=headers, follow_redirects=False)
        assert r.status_code == 403 and "expired or did not come from this site" in r.text
    assert (_count(database_url, Registration), _count(database_url, RegistrationEvent)) == rows
    with sessions(database_url)() as s:
        sam_reg = s.scalars(select(Registration)).one().id
    assert ali.get(f"/wifi/devices/{sam_reg}").status_code == 404  # not another pupil's device
    token = csrf_of(ali.get("/wifi").text)
    assert ali.post(f"/wifi/devices/{sam_reg}/withdraw", data={"csrf_token": token}).status_code == 404
    assert ali.post(f"/registrations/{sam_reg}/approve", data={"csrf_token": token}).status_code == 403


def test_it_works_the_queue_and_a_second_decision_is_refused(database_url: str, tmp_path: Path) -> None:
    app = _app(database_url, tmp_path)
    wifi.publish(database_url)
    sam = signed_in(app, "sam.y9")
    _accept(sam)
    reg_id = int(_register(sam).headers["location"].rsplit("/", 1)[1])
    it = signed_in(app, "itadmin")
    q = it.get("/registrations").text
    assert "1 waiting" in q and "Sam Y9 (sam.y9)" in q and MAC in q and "WiFi registrations" in q
    token = csrf_of(q)
    r = it.post(f"/registrations/{reg_id}/reject", data={"csrf_token": token, "note": ""})
    assert r.status_code == 400 and "needs a note" in r.text
    r = it.post(f"/registrations/{reg_id}/approve", data={"csrf_token": token, "note": "welcome"},
                follow_redirects=False)
    assert r.status_code == 303
    r = it.post(f"/registrations/{reg_id}/approve", data={"csrf_token": token, "note": "again"})
    assert r.status_code == 409 and "already decided" in r.text
    r = it.post(f"/registrations/{reg_id}/reject", data={"csrf_token": token, "note": "no"})
    assert r.status_code == 409
    with sessions(database_url)() as s:
        mail = s.scalars(select(NotificationOutbox)).one()
    assert mail.recipient == "sam.y9@pupils.school.test"
    detail = it.get(f"/registrations/{reg_id}").text
    assert "approved" in detail and "welcome" in detail and "no agent reports" in detail
    r = it.post(f"/registrations/{reg_id}/revoke", data={"csrf_token": token, "reason": "credential_sharing",
                                                          "note": "seen on 6 machines"}, follow_redirects=False)
    assert r.status_code == 303
    r = _register(sam, mac="3c:22:fb:00:00:07")
    assert r.status_code == 409 and "removed permanently" in r.text
    bans = it.get("/registrations/bans").text
    assert "sam.y9" in bans and "in force" in bans
    ban_id = re.search(r'/registrations/bans/(\d+)/signoff', bans)
    assert ban_id
    it.post(f"/registrations/bans/{ban_id[1]}/signoff", data={"csrf_token": token, "note": "ok"})
    dsl = signed_in(app, "dsl")
    dsl_token = csrf_of(dsl.get("/registrations/bans").text)
    assert dsl.get("/registrations", follow_redirects=False).status_code == 403  # the DSL signs bans only
    r = dsl.post(f"/registrations/bans/{ban_id[1]}/signoff", data={"csrf_token": dsl_token}, follow_redirects=False)
    assert r.status_code == 303 and "lifted" in dsl.get("/registrations/bans").text
    assert _register(sam, mac="3c:22:fb:00:00:07").status_code == 303


def test_it_publishes_a_new_aup_and_members_accept_again(database_url: str, tmp_path: Path) -> None:
    app = _app(database_url, tmp_path)
    it = signed_in(app, "itadmin")
    token = csrf_of(it.get("/registrations/aup").text)
    r = it.post("/registrations/aup", data={"csrf_token": token, "version": "2026-09", "title": "AUP",
                                            "text": wifi.AUP_TEXT}, follow_redirects=False)
    assert r.status_code == 303
    r = it.post("/registrations/aup", data={"csrf_token": token, "version": "2026-09", "title": "AUP", "text": "x"})
    assert r.status_code == 409 and "never changed" in r.text
    sam = signed_in(app, "sam.y9")
    _accept(sam)
    assert "You accepted the AUP (version 2026-09)" in sam.get("/wifi").text
    it.post("/registrations/aup", data={"csrf_token": token, "version": "2027-01", "title": "AUP",
                                        "text": wifi.AUP_TEXT + " Revised."})
    home = sam.get("/wifi").text
    assert "accept the current AUP (version 2027-01)" in home and 'action="/wifi/register"' not in home


def test_a_quarantined_device_page_says_what_to_fix_and_quotes_the_aup(database_url: str, tmp_path: Path) -> None:
    app = _app(database_url, tmp_path)
    agent = StaticCompliance({MAC: DeviceCompliance({"patched": True, "antivirus": True, "no_p2p": True,
                                                     "no_hotspot": True})})
    app.state.registration_compliance = agent
    wifi.publish(database_url)
    sam, it = signed_in(app, "sam.y9"), signed_in(app, "itadmin")
    _accept(sam)
    reg_id = int(_register(sam).headers["location"].rsplit("/", 1)[1])
    token = csrf_of(it.get("/registrations").text)
    assert it.post(f"/registrations/{reg_id}/approve", data={"csrf_token": token}, follow_redirects=False
                   ).status_code == 303
    with sessions(database_url)() as s:
        s.execute(Registration.__table__.update().values(state="active"))  # type: ignore[attr-defined]
        s.commit()
    agent.set(MAC, DeviceCompliance({"patched": True, "antivirus": True, "no_p2p": False, "no_hotspot": True}))
    with sessions(database_url)() as s:
        sweep.enforce_compliance(s, agent, timedelta(0), "http://dash.test")
        s.commit()
    page = sam.get(f"/wifi/devices/{reg_id}").text
    assert "quarantined" in page and "disconnected until it is fixed" in page
    assert "Uninstall peer-to-peer" in page and "run antivirus and have no peer-to-peer programs" in page
    detail = it.get(f"/registrations/{reg_id}").text
    assert "failing: No P2P programs" in detail
    r = it.post(f"/registrations/{reg_id}/release", data={"csrf_token": token, "note": "looked fine"})
    assert r.status_code == 409 and "still fails" in r.text
