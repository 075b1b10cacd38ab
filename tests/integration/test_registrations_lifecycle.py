"""The registration lifecycle on a real store (SQLite and PostgreSQL): AUP gating, bad input
refused with nothing stored, approval email to the school address, leases feeding identity,
device checks and quarantine, credential-sharing bans, SLA breaches, expiry, exports."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from esafety.identity import IdentityResolver
from esafety.incidents.tables import NotificationOutbox
from esafety.registrations import aup, decisions, export, leases, sweep
from esafety.registrations.errors import Conflict, Forbidden, Invalid
from esafety.registrations.lifecycle import Actor, history
from esafety.registrations.prereqs import DeviceCompliance, StaticCompliance
from esafety.registrations.tables import AupAcceptance, Registration, RegistrationEvent, WifiBan
from esafety.registrations.workdays import SchoolCalendar
from esafety.store.db import sessions
from esafety.store.models import IpBinding, User
from tests.support import wifi

IT = Actor("itadmin", frozenset({"it_admin"}))
DSL = Actor("dsl", frozenset({"dsl"}))
MAC = "3c:22:fb:12:34:56"
CAL = SchoolCalendar()
PASS = DeviceCompliance({"patched": True, "antivirus": True, "no_p2p": True, "no_hotspot": True})


def _rows(url: str) -> tuple[int, int, int]:
    with sessions(url)() as s:
        return (s.scalar(select(func.count()).select_from(Registration)) or 0,
                s.scalar(select(func.count()).select_from(RegistrationEvent)) or 0,
                s.scalar(select(func.count()).select_from(NotificationOutbox)) or 0)


def _approve(url: str, reg_id: int, compliance: StaticCompliance | None = None, actor: Actor = IT) -> str | None:
    with sessions(url)() as s:
        out = decisions.approve(s, reg_id, actor, "ok", compliance or StaticCompliance(), CAL, "School-BYOD",
                                "http://dash.test")
        s.commit()
        return out.emailed


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels or None) or 0.0


def test_a_request_needs_the_current_aup_with_a_parent_for_pupils(database_url: str) -> None:
    wifi.add_pupil(database_url)
    with pytest.raises(Conflict, match="No AUP has been published"):
        wifi.request_device(database_url, "sam.y9", MAC)
    v1 = wifi.publish(database_url)
    with pytest.raises(Conflict, match="Accept the current AUP .*parent or guardian"):
        wifi.request_device(database_url, "sam.y9", MAC)
    with sessions(database_url)() as s:  # a pupil cannot accept without the parent's name and date
        u = wifi.user(s, "sam.y9")
        with pytest.raises(Invalid, match="parent or guardian"):
            aup.accept(s, u, v1.id, v1.text_sha256, True, "", None)
        with pytest.raises(Invalid, match="future"):
            aup.accept(s, u, v1.id, v1.text_sha256, True, "Jo Parent", date.today() + timedelta(days=2))
        with pytest.raises(Conflict, match="newer version"):
            aup.accept(s, u, v1.id, "0" * 64, True, "Jo Parent", date.today())
    wifi.accept(database_url, "sam.y9")
    first = wifi.request_device(database_url, "sam.y9", MAC)
    assert wifi.reg(database_url, first).state == "pending_approval"

    wifi.publish(database_url, "2027-01", wifi.AUP_TEXT + "\n\nUpdated for 2027.")
    with pytest.raises(Conflict, match="2027-01"):
        wifi.request_device(database_url, "sam.y9", "3c:22:fb:12:34:57")
    wifi.accept(database_url, "sam.y9")
    wifi.request_device(database_url, "sam.y9", "3c:22:fb:12:34:57")
    with sessions(database_url)() as s:
        accs = list(s.scalars(select(AupAcceptance).order_by(AupAcceptance.id)))
        assert [a.parent_name for a in accs] == ["Jo Parent", "Jo Parent"]
        assert len({a.text_sha256 for a in accs}) == 2
        evs = [(e.action, e.from_state, e.to_state, e.actor) for e in history(s, first)]
    assert evs == [("submit", None, "submitted", "sam.y9"), ("queue", "submitted", "pending_approval", "system")]


def test_staff_need_no_parent(database_url: str) -> None:
    wifi.add_staff(database_url)
    wifi.publish(database_url)
    wifi.accept(database_url, "ms.khan")
    reg_id = wifi.request_device(database_url, "ms.khan", MAC, device="Laptop", dtype="laptop")
    with sessions(database_url)() as s:
        assert s.scalars(select(AupAcceptance)).one().parent_name is None
    assert wifi.reg(database_url, reg_id).state == "pending_approval"


def test_bad_input_is_refused_and_nothing_is_stored(database_url: str) -> None:
    wifi.add_pupil(database_url)
    wifi.add_pupil(database_url, "ali.y10", group="year10")
    wifi.publish(database_url)
    wifi.accept(database_url, "sam.y9")
    wifi.accept(database_url, "ali.y10")
    reg_id = wifi.request_device(database_url, "sam.y9", MAC)
    before = _rows(database_url)
    for mac, why in (("3c:22:fb:12:34", "six pairs"), ("ff:ff:ff:ff:ff:ff", "group"),
                     ("da:a1:19:00:11:22", "private")):
        with pytest.raises(Invalid, match=why):
            wifi.request_device(database_url, "ali.y10", mac)
    with pytest.raises(Conflict, match="already registered"):  # the same MAC, another spelling, another pupil
        wifi.request_device(database_url, "ali.y10", "3C-22-FB-12-34-56")
    with pytest.raises(Invalid, match="device a short name"):
        wifi.request_device(database_url, "ali.y10", "3c:22:fb:12:34:99", device="<script>")
    with pytest.raises(Invalid, match="reject needs a note"), sessions(database_url)() as s:
        decisions.reject(s, reg_id, IT, "  ", "http://dash.test")
    with pytest.raises(Forbidden):
        _approve(database_url, reg_id, actor=Actor("sam.y9"))
    assert _rows(database_url) == before
    assert _approve(database_url, reg_id) == "sam.y9@pupils.school.test"
    after = _rows(database_url)
    with pytest.raises(Conflict, match="approved \\(already decided\\)"):
        _approve(database_url, reg_id)
    with pytest.raises(Conflict, match="already decided"), sessions(database_url)() as s:
        decisions.reject(s, reg_id, IT, "changed my mind", "http://dash.test")
    assert _rows(database_url) == after  # a refused decision writes no event and no email
    # A private address the owner confirms is fixed is accepted, and flagged for IT.
    other = wifi.request_device(database_url, "ali.y10", "da:a1:19:00:11:22", private_ok=True)
    assert wifi.reg(database_url, other).mac_private


def test_approval_emails_the_school_address_and_the_lease_feeds_identity(database_url: str) -> None:
    wifi.add_pupil(database_url)
    wifi.publish(database_url)
    wifi.accept(database_url, "sam.y9")
    reg_id = wifi.request_device(database_url, "sam.y9", MAC)
    assert _approve(database_url, reg_id) == "sam.y9@pupils.school.test"
    with sessions(database_url)() as s:
        mail = s.scalars(select(NotificationOutbox)).one()
        assert mail.kind == "registration" and mail.recipient == "sam.y9@pupils.school.test"
        assert "School-BYOD" in mail.body and MAC in mail.body and "permanently" in mail.body
        r = s.get(Registration, reg_id)
        assert r is not None and r.state == "approved" and r.decided_by == "itadmin" and r.expires_at is None
    expiry = datetime.now(UTC) + timedelta(hours=8)
    found = [leases.Lease(MAC, "10.20.0.15", expiry, "iphone"), leases.Lease("aa:bb:cc:dd:ee:01", "10.20.0.99", None)]
    with sessions(database_url)() as s:
        s.add(IpBinding(ip="10.20.0.50", username="sam.y9", device="SCHOOL-PC", source="agent"))
        result = leases.sync(s, found, StaticCompliance())
        s.commit()
    assert result.activated == [reg_id] and result.bound == 1
    resolver = IdentityResolver(database_url, "unknown")
    resolver.refresh()
    who = resolver.resolve("10.20.0.15")
    assert (who.user, who.group, who.device, who.source) == ("sam.y9", "year9", "Sam's iPhone", "wifi")
    assert resolver.resolve("10.20.0.99").user is None  # unregistered devices stay unknown
    # The device moves to another IP; then its lease ends: the binding follows, the agent's stays.
    with sessions(database_url)() as s:
        leases.sync(s, [leases.Lease(MAC, "10.20.0.16", expiry)], StaticCompliance())
        s.commit()
        assert [b.ip for b in s.scalars(select(IpBinding).where(IpBinding.source == "wifi"))] == ["10.20.0.16"]
        leases.sync(s, [], StaticCompliance())
        s.commit()
        assert [(b.ip, b.source) for b in s.scalars(select(IpBinding))] == [("10.20.0.50", "agent")]
        assert s.get(Registration, reg_id).state == "active"  # type: ignore[union-attr]


def test_credential_sharing_bans_until_it_and_the_dsl_both_sign_off(database_url: str) -> None:
    wifi.add_pupil(database_url)
    wifi.publish(database_url)
    wifi.accept(database_url, "sam.y9")
    phone = wifi.request_device(database_url, "sam.y9", MAC)
    _approve(database_url, phone)
    tablet = wifi.request_device(database_url, "sam.y9", "3c:22:fb:00:00:02", device="Tablet", dtype="tablet")
    before = _sample("esafety_registrations_revocations_total", reason="credential_sharing")
    with sessions(database_url)() as s:
        with pytest.raises(Invalid, match="reason"):
            decisions.revoke(s, phone, IT, "sharing", "", "http://dash.test")
        decisions.revoke(s, phone, IT, "credential_sharing", "password seen on 5 devices", "http://dash.test")
        s.commit()
    assert _sample("esafety_registrations_revocations_total", reason="credential_sharing") == before + 1
    assert wifi.reg(database_url, phone).state == "revoked" and wifi.reg(database_url, tablet).state == "rejected"
    with pytest.raises(Conflict, match="removed permanently"):
        wifi.request_device(database_url, "sam.y9", "3c:22:fb:00:00:03")
    with sessions(database_url)() as s:
        ban = s.scalars(select(WifiBan)).one()
        with pytest.raises(Forbidden):
            decisions.sign_off_ban(s, ban.id, Actor("slt", frozenset({"slt"})))
        decisions.sign_off_ban(s, ban.id, IT, "spoken to the pupil")
        s.commit()
        with pytest.raises(Conflict, match="different person"):
            decisions.sign_off_ban(s, ban.id, Actor("itadmin", frozenset({"it_admin", "dsl"})))
    with pytest.raises(Conflict, match="removed permanently"):  # one signature is not enough
        wifi.request_device(database_url, "sam.y9", "3c:22:fb:00:00:03")
    with sessions(database_url)() as s:
        ban = decisions.sign_off_ban(s, ban.id, DSL, "agreed at the safeguarding meeting")
        s.commit()
        assert ban.lifted_at is not None and ban.it_signoff_by == "itadmin" and ban.dsl_signoff_by == "dsl"
    # The same MAC is free again after revocation, and the person may register once more.
    assert wifi.reg(database_url, wifi.request_device(database_url, "sam.y9", MAC)).state == "pending_approval"


def test_agent_checks_gate_approval_and_quarantine_after_grace(database_url: str) -> None:
    wifi.add_pupil(database_url)
    wifi.publish(database_url)
    wifi.accept(database_url, "sam.y9")
    reg_id = wifi.request_device(database_url, "sam.y9", MAC)
    agent = StaticCompliance({MAC: DeviceCompliance({"patched": False, "antivirus": True, "no_p2p": False})})
    with pytest.raises(Conflict, match="Security updates, No P2P programs, No hotspot"):
        _approve(database_url, reg_id, agent)
    agent.set(MAC, PASS)
    _approve(database_url, reg_id, agent)
    t0 = datetime.now(UTC)
    agent.set(MAC, DeviceCompliance({**PASS.checks, "no_p2p": False}))
    with sessions(database_url)() as s:  # approved but failing: not activated by its lease
        assert leases.sync(s, [leases.Lease(MAC, "10.0.0.9", None)], agent).held_back == [reg_id]
        s.commit()
    agent.set(MAC, PASS)
    with sessions(database_url)() as s:
        assert leases.sync(s, [leases.Lease(MAC, "10.0.0.9", None)], agent).activated == [reg_id]
        s.commit()
    agent.set(MAC, DeviceCompliance({**PASS.checks, "antivirus": False}))
    grace = timedelta(hours=24)
    steps = ((t0, "active"), (t0 + timedelta(hours=23), "active"), (t0 + timedelta(hours=25), "quarantined"))
    for when, state in steps:
        with sessions(database_url)() as s:
            sweep.enforce_compliance(s, agent, grace, "http://dash.test", now=when)
            s.commit()
        assert wifi.reg(database_url, reg_id).state == state
    r = wifi.reg(database_url, reg_id)
    assert r.failed_checks == "antivirus"
    with sessions(database_url)() as s:
        assert s.scalar(select(func.count()).select_from(IpBinding)) == 0  # disconnected from identity
        ev = s.scalars(select(RegistrationEvent).where(RegistrationEvent.to_state == "quarantined")).one()
        assert ev.actor == "system" and "Antivirus" in ev.note
        last = s.scalars(select(NotificationOutbox).order_by(NotificationOutbox.id.desc())).first()
        assert last is not None and "/wifi/devices/" in last.body and "quarantined" in last.subject
    agent.set(MAC, PASS)
    with sessions(database_url)() as s:
        assert sweep.enforce_compliance(s, agent, grace, "http://dash.test")["released"] == 1
        s.commit()
    assert wifi.reg(database_url, reg_id).state == "active" and wifi.reg(database_url, reg_id).failed_checks == ""


def test_sla_breaches_are_counted_once_and_gauges_set(database_url: str) -> None:
    wifi.add_pupil(database_url)
    wifi.publish(database_url)
    wifi.accept(database_url, "sam.y9")
    friday = datetime(2026, 11, 20, 10, tzinfo=UTC)
    old = wifi.request_device(database_url, "sam.y9", MAC, when=friday, calendar=CAL)
    wifi.request_device(database_url, "sam.y9", "3c:22:fb:00:00:02", when=datetime(2026, 11, 24, 9, tzinfo=UTC),
                        calendar=CAL)
    assert wifi.reg(database_url, old).due_at.replace(tzinfo=UTC) == datetime(2026, 11, 23, 10, tzinfo=UTC)
    before = _sample("esafety_registrations_sla_breaches_total")
    tuesday = datetime(2026, 11, 24, 12, tzinfo=UTC)
    with sessions(database_url)() as s:
        assert sweep.mark_sla_breaches(s, tuesday) == 1
        assert sweep.mark_sla_breaches(s, tuesday) == 0
        sweep.collect(s, CAL, tuesday)
        s.commit()
    assert _sample("esafety_registrations_sla_breaches_total") >= before + 1
    assert _sample("esafety_registrations", state="pending_approval") == 2
    assert _sample("esafety_registrations_overdue") == 1
    # Fri 10:00 -> Tue 12:00 UTC (= school time in November): 14h Fri + 24h Mon + 12h Tue.
    assert _sample("esafety_registrations_oldest_pending_working_seconds") == (14 + 24 + 12) * 3600


def test_expiry_and_deactivated_accounts(database_url: str) -> None:
    wifi.add_pupil(database_url)
    wifi.add_pupil(database_url, "leaver.y11", group="year11")
    wifi.publish(database_url)
    for name, mac in (("sam.y9", MAC), ("leaver.y11", "3c:22:fb:00:00:09")):
        wifi.accept(database_url, name)
        _approve(database_url, wifi.request_device(database_url, name, mac))
    with sessions(database_url)() as s:
        s.execute(Registration.__table__.update().where(Registration.username == "sam.y9")  # type: ignore[attr-defined]
                  .values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))
        wifi.user(s, "leaver.y11").active = False
        s.commit()
        assert sweep.expire(s, "http://dash.test") == 2
        s.commit()
        assert {r.state for r in s.scalars(select(Registration))} == {"expired"}
        assert s.scalar(select(func.count()).select_from(Registration).where(Registration.live_mac.is_not(None))) == 0


def test_export_lists_only_devices_allowed_on_the_network(database_url: str) -> None:
    wifi.add_pupil(database_url)
    wifi.add_staff(database_url)
    wifi.publish(database_url)
    wifi.accept(database_url, "sam.y9")
    wifi.accept(database_url, "ms.khan")
    a = wifi.request_device(database_url, "sam.y9", MAC, device="-2+3 (phone)")
    _approve(database_url, a)
    b = wifi.request_device(database_url, "ms.khan", "3c:22:fb:00:00:0b", device="Laptop", dtype="laptop")
    _approve(database_url, b)
    wifi.request_device(database_url, "ms.khan", "3c:22:fb:00:00:0c", device="Phone")  # pending: not listed
    with sessions(database_url)() as s:
        decisions.quarantine(s, b, IT, "suspicious traffic", "http://dash.test")
        s.commit()
        out = {fmt: export.export(s, fmt) for fmt in export.FORMATS}
    assert f"dhcp-host={MAC},set:registered" in out["dnsmasq"] and "00:00:0b" not in out["dnsmasq"]
    assert f"hardware ethernet {MAC};" in out["isc-dhcp"] and "00:00:0c" not in out["isc-dhcp"]
    assert '3c22fb123456\tCleartext-Password := "3c22fb123456"' in out["freeradius-users"]
    assert "sam.y9" not in out["dnsmasq"] + out["isc-dhcp"] + out["freeradius-users"]  # no names in router configs
    assert out["csv"].splitlines()[1].startswith(f"{MAC},sam.y9,'-2+3 (phone),phone,approved")
    assert len(out["csv"].splitlines()) == 2


def test_a_user_without_email_is_approved_without_mail(database_url: str) -> None:
    wifi.add_pupil(database_url, email="")
    wifi.publish(database_url)
    wifi.accept(database_url, "sam.y9")
    reg_id = wifi.request_device(database_url, "sam.y9", MAC)
    assert _approve(database_url, reg_id) is None
    with sessions(database_url)() as s:
        assert s.scalar(select(func.count()).select_from(NotificationOutbox)) == 0
        assert s.scalar(select(User.email).where(User.username == "sam.y9")) == ""
