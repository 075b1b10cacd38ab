"""Credential sharing: one account from too many devices at once, or many client IPs in a short
window, raises a routed incident with evidence for review; nothing is blocked automatically."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY
from sqlalchemy import select

from esafety.incidents.pipeline import run_until_done
from esafety.registrations import decisions, sharing
from esafety.registrations.lifecycle import Actor
from esafety.registrations.prereqs import StaticCompliance
from esafety.registrations.workdays import SchoolCalendar
from esafety.store.db import sessions
from esafety.store.models import AccessLog, Incident, IpBinding
from tests.support import wifi

NOW = datetime.now(UTC)
RULES = sharing.SharingRules(window=timedelta(minutes=15), max_devices=3, max_ips=6)


def _log(s, username: str, ip: str, device: str | None, minutes_ago: float) -> None:  # type: ignore[no-untyped-def]
    s.add(AccessLog(ts=NOW - timedelta(minutes=minutes_ago), ref="R", username=username, policy_group="year9",
                    device=device, client_ip=ip, method="GET", scheme="https", host="example.org", path="/",
                    status=200, bytes=1, action="allow", category="uncategorised", rule="default"))


def test_many_ips_and_devices_raise_one_routed_incident(database_url: str) -> None:
    wifi.add_pupil(database_url)
    with sessions(database_url)() as s:
        for i in range(8):  # proxy-authenticated from eight machines in ten minutes
            _log(s, "sam.y9", f"10.20.0.{10 + i}", None, minutes_ago=i)
        _log(s, "sam.y9", "10.20.0.99", None, minutes_ago=40)  # outside the window
        for i in range(2):  # an ordinary pupil on two devices
            _log(s, "ali.y10", f"10.30.0.{i}", f"ALI-{i}", minutes_ago=1)
        s.add(IpBinding(ip="10.40.0.1", username="ms.khan", device="LAB-1", source="agent"))
        for i in range(2, 6):
            s.add(IpBinding(ip=f"10.40.0.{i}", username="ms.khan", device=f"LAB-{i}", source="agent"))
        s.commit()
    before = REGISTRY.get_sample_value("esafety_registrations_credential_sharing_detections_total",
                                       {"signal": "ips"}) or 0.0
    with sessions(database_url)() as s:
        assert sharing.raise_incidents(s, RULES, wifi.policy(), now=NOW) == 2
        s.commit()
        assert sharing.raise_incidents(s, RULES, wifi.policy(), now=NOW) == 0  # the same window: no duplicate
        s.commit()
    run_until_done(database_url, wifi.policy(), "http://dash.test")
    with sessions(database_url)() as s:
        incs = {i.subject: i for i in s.scalars(select(Incident))}
    assert set(incs) == {"sam.y9", "ms.khan"}
    sam = incs["sam.y9"]
    assert (sam.category, sam.queue, sam.level, sam.source) == ("credential_sharing", "it_services", 3, "proxy")
    assert sam.evidence["signals"] == ["ips"] and sam.evidence["client_ip_count"] == 8
    assert "10.20.0.99" not in sam.evidence["client_ips"] and "none taken automatically" in sam.evidence["action"]
    assert incs["ms.khan"].evidence["signals"] == ["devices"] and incs["ms.khan"].evidence["device_count"] == 5
    after = REGISTRY.get_sample_value("esafety_registrations_credential_sharing_detections_total", {"signal": "ips"})
    assert after == before + 1
    with sessions(database_url)() as s:  # review, not a silent block: no binding or account was touched
        assert len(list(s.scalars(select(IpBinding)))) == 5
        assert wifi.user(s, "sam.y9").active


def test_registered_devices_raise_the_allowance(database_url: str) -> None:
    wifi.add_pupil(database_url)
    wifi.publish(database_url)
    wifi.accept(database_url, "sam.y9")
    with sessions(database_url)() as s:
        for i in range(3):
            reg = wifi.request_device(database_url, "sam.y9", f"3c:22:fb:00:00:0{i}", device=f"Dev {i}")
            decisions.approve(s, reg, Actor("it", frozenset({"it_admin"})), "", StaticCompliance(), SchoolCalendar(),
                              "S", "http://d")
            s.commit()
        for i in range(4):  # four devices: allowed, as three are registered (+1 school device)
            _log(s, "sam.y9", "10.20.0.1", f"DEV-{i}", minutes_ago=1)
        s.commit()
        assert sharing.detect(s, RULES, now=NOW) == []
        _log(s, "sam.y9", "10.20.0.1", "DEV-9", minutes_ago=1)
        s.commit()
        found = sharing.detect(s, RULES, now=NOW)
    assert len(found) == 1 and found[0].evidence["allowed_devices"] == 4
    assert found[0].evidence["registered_devices"] == ["Dev 0", "Dev 1", "Dev 2"]
