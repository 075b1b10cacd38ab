"""The periodic sweep on a real store (SQLite and PostgreSQL): time alone makes devices stale,
noncompliant after the grace or the silence limit, and ends exceptions; a silenced agent on a
device still browsing raises the tamper pair once; gauges; WiFi registrations read the rollup."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from esafety.compliance import exceptions, reports, sweep
from esafety.compliance.enrol import create_token, enrol
from esafety.compliance.rollup import Timing
from esafety.compliance.source import RollupCompliance
from esafety.compliance.tables import Device, DeviceCheckEvent
from esafety.compliance.wire import parse_enrol, parse_report
from esafety.incidents.audit import verify
from esafety.incidents.tables import IncidentEvent
from esafety.policy.loader import load_policy
from esafety.registrations.leases import parse_dnsmasq
from esafety.store.db import sessions
from esafety.store.models import AccessLog, Incident, IpBinding
from tests.support import devices as dev
from tests.support.wifi import add_pupil

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def policy(tmp_path):  # type: ignore[no-untyped-def]
    return load_policy(dev.policy_with(tmp_path, heartbeat="60s", stale_buffer="2m", grace="24h", stale_limit="3d"))


def _enrol(url: str, hostname: str = "lab-pc-01", mac: str = "3c:22:fb:00:00:01") -> str:
    with sessions(url)() as s:
        tok = create_token(s, "itadmin", 1, now=T0)
        d = enrol(s, parse_enrol(json.dumps(dev.enrol_body(tok.token, hostname, [mac])).encode()), "10.0.0.5",
                  now=T0).device
        s.commit()
        return d.id


def _send(url: str, device_id: str, seq: int, at: datetime, policy, kind: str = "snapshot", ip: str = "10.20.30.40",  # type: ignore[no-untyped-def]
          **kw: Any) -> reports.Outcome:
    body = dev.report(device_id, seq, kind, **kw)
    with sessions(url)() as s:
        d = s.get(Device, device_id)
        assert d is not None
        out = reports.accept(s, d, parse_report(json.dumps(body).encode()), ip, policy, at)
        s.commit()
        return out


def _sweep(url: str, policy, at: datetime, leases: sweep.LeaseWatch | None = None) -> sweep.SweepResult:  # type: ignore[no-untyped-def]
    with sessions(url)() as s:
        r = sweep.sweep(s, policy, at, leases)
        s.commit()
        return r


def _state(url: str, device_id: str) -> str:
    with sessions(url)() as s:
        return s.get(Device, device_id).state  # type: ignore[union-attr]


def _gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_time_moves_devices_through_grace_and_staleness(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    policy = load_policy(dev.policy_with(tmp_path / "hourly", heartbeat="1h", stale_buffer="5m", grace="24h",
                                         stale_limit="3d"))
    a, b = _enrol(database_url), _enrol(database_url, "lab-pc-02", "3c:22:fb:00:00:02")
    _send(database_url, a, 1, T0, policy, checks=dev.all_passing(p2p_clients="fail"))
    _send(database_url, b, 1, T0, policy)
    assert (_state(database_url, a), _state(database_url, b)) == ("in_grace", "compliant")
    # Both keep reporting hourly; 24 h after the failure started, the sweep alone makes it noncompliant.
    for hour in range(1, 24):
        _send(database_url, a, 1 + hour, T0 + timedelta(hours=hour), policy, "heartbeat")
        _send(database_url, b, 1 + hour, T0 + timedelta(hours=hour), policy, "heartbeat")
    assert _state(database_url, a) == "in_grace"
    r = _sweep(database_url, policy, T0 + timedelta(hours=24, seconds=30))
    assert r.changed == 1 and _state(database_url, a) == "noncompliant"
    assert _gauge("esafety_devices", state="noncompliant") == 1 and _gauge("esafety_devices", state="compliant") == 1
    assert _gauge("esafety_devices_failing", check="p2p_clients") == 1
    assert _gauge("esafety_devices_failing", check="hotspot") == 0
    assert _gauge("esafety_devices_by_report_age", age="1d") == 2 and _gauge("esafety_device_stale") == 0
    # Then both go silent: stale after heartbeat + buffer (1h05), noncompliant after 3 days.
    last = T0 + timedelta(hours=23)
    _sweep(database_url, policy, last + timedelta(hours=1, minutes=4, seconds=59))
    assert _state(database_url, b) == "compliant"
    _sweep(database_url, policy, last + timedelta(hours=1, minutes=5, seconds=1))
    assert _state(database_url, b) == "stale" and _gauge("esafety_device_stale") == 2
    assert _state(database_url, a) == "noncompliant"  # worse than stale already
    _sweep(database_url, policy, last + timedelta(days=3, seconds=1))
    assert _state(database_url, b) == "noncompliant" and _gauge("esafety_devices_by_report_age", age="older") == 2
    with sessions(database_url)() as s:
        states = [e.to_status for e in s.scalars(select(DeviceCheckEvent).where(
            DeviceCheckEvent.device_id == b, DeviceCheckEvent.check_id.is_(None)).order_by(DeviceCheckEvent.id))]
        assert states == ["compliant", "stale", "noncompliant"]
        # No traffic from its address: a switched-off device is stale, not tampered with.
        assert s.scalars(select(Incident).where(Incident.category == "agent_tamper")).first() is None
    # Reporting again brings it back at once.
    _send(database_url, b, 25, last + timedelta(days=3, minutes=1), policy)
    assert _state(database_url, b) == "compliant"


def test_a_silenced_agent_on_a_device_still_browsing_raises_tamper_once(database_url: str, policy) -> None:  # type: ignore[no-untyped-def]
    add_pupil(database_url, "sam.y9")
    d = _enrol(database_url)
    _send(database_url, d, 1, T0, policy, users=["sam.y9"])
    with sessions(database_url)() as s:  # the binding lapses; the proxy logs the device's traffic unattributed
        s.add(AccessLog(ts=T0 + timedelta(seconds=30), ref="R0", username="sam.y9", policy_group="year9",
                        device="lab-pc-01", client_ip="10.20.30.40", method="GET", scheme="https", host="a.test",
                        path="/", status=200, bytes=1, action="allow", category="uncategorised", rule=""))
        s.commit()
    r = _sweep(database_url, policy, T0 + timedelta(minutes=4))
    assert r.tamper == [] and _state(database_url, d) == "stale"  # traffic only before the missed heartbeat
    tampers = _gauge("esafety_device_tamper_total") or 0.0
    with sessions(database_url)() as s:
        for i, host in enumerate(("b.test", "c.test")):
            s.add(AccessLog(ts=T0 + timedelta(minutes=5, seconds=i), ref=f"R{i + 1}", username=None,
                            policy_group="unknown", device=None, client_ip="10.20.30.40", method="GET",
                            scheme="https", host=host, path="/", status=200, bytes=1, action="allow",
                            category="uncategorised", rule=""))
        s.add(AccessLog(ts=T0 + timedelta(minutes=5), ref="R9", username="ali", policy_group="year10",
                        device="someone-else", client_ip="10.20.30.40", method="GET", scheme="https", host="d.test",
                        path="/", status=200, bytes=1, action="allow", category="uncategorised", rule=""))
        s.commit()
    r = _sweep(database_url, policy, T0 + timedelta(minutes=6))
    assert r.tamper == [d] and _gauge("esafety_device_tamper_total") == tampers + 1
    with sessions(database_url)() as s:
        incs = {i.category: i for i in s.scalars(select(Incident))}
        assert set(incs) == {"agent_tamper", "monitoring_tamper"}
        it, dsl = incs["agent_tamper"], incs["monitoring_tamper"]
        assert (it.queue, dsl.queue, dsl.subject, dsl.device) == ("it_services", "dsl", "sam.y9", "lab-pc-01")
        assert it.evidence["requests"] == 2 and it.evidence["client_ip"] == "10.20.30.40"  # not someone-else's
        assert "stopped reporting" in it.summary and it.pipeline_done is False  # the worker chains it
    assert _sweep(database_url, policy, T0 + timedelta(minutes=7)).tamper == []  # once per silence
    _send(database_url, d, 2, T0 + timedelta(minutes=8), policy, users=["sam.y9"])
    with sessions(database_url)() as s:
        assert s.get(Device, d).tamper_raised_at is None  # type: ignore[union-attr]


def test_a_dhcp_lease_renewed_while_the_agent_is_silent_is_tamper(database_url: str, policy) -> None:  # type: ignore[no-untyped-def]
    d = _enrol(database_url, mac="3c:22:fb:aa:bb:cc")
    _send(database_url, d, 1, T0, policy)
    watch = sweep.LeaseWatch()

    def leases(expiry: datetime) -> None:  # a dnsmasq leases file, as the DHCP server rewrites it
        watch.load(parse_dnsmasq(f"{int(expiry.timestamp())} 3c:22:fb:aa:bb:cc 10.20.30.40 lab-pc-01 *\n"), T0)

    leases(T0 + timedelta(hours=1))
    assert _sweep(database_url, policy, T0 + timedelta(seconds=30), watch).tamper == []  # alive: remembered
    assert _sweep(database_url, policy, T0 + timedelta(minutes=4), watch).tamper == []  # silent, same lease
    assert _state(database_url, d) == "stale"
    leases(T0 + timedelta(hours=1, minutes=30))  # the device renewed its lease: it is switched on
    r = _sweep(database_url, policy, T0 + timedelta(minutes=5), watch)
    assert r.tamper == [d]
    with sessions(database_url)() as s:
        it = s.scalars(select(Incident).where(Incident.category == "agent_tamper")).one()
        assert it.evidence["signal"] == "dhcp_lease_renewed" and "DHCP lease for 10.20.30.40" in it.summary


def test_exceptions_excuse_a_check_until_they_end_and_are_audited(database_url: str, policy) -> None:  # type: ignore[no-untyped-def]
    d = _enrol(database_url)
    _send(database_url, d, 1, T0, policy, checks=dev.all_passing(listening_servers="fail"))
    assert _state(database_url, d) == "warning"
    timing = Timing.from_policy(policy.compliance)
    with sessions(database_url)() as s:
        with pytest.raises(exceptions.ExceptionRefused, match="name the person"):
            exceptions.grant(s, d, "listening_servers", "dev server", "", T0 + timedelta(days=4), "itadmin", timing,
                             now=T0)
        with pytest.raises(exceptions.ExceptionRefused, match="at most 180 days"):
            exceptions.grant(s, d, "listening_servers", "dev server", "Ms Patel", T0 + timedelta(days=200),
                             "itadmin", timing, now=T0)
        with pytest.raises(exceptions.ExceptionRefused, match="unknown check"):
            exceptions.grant(s, d, "port_3000", "dev server", "Ms Patel", T0 + timedelta(days=4), "itadmin", timing,
                             now=T0)
        exceptions.grant(s, d, "listening_servers", "Y10 web dev: node on port 3000", "Ms Patel (Head of Computing)",
                         T0 + timedelta(days=4), "itadmin", timing, now=T0)
        s.commit()
    assert _state(database_url, d) == "compliant"
    _send(database_url, d, 2, T0 + timedelta(days=3, hours=23, minutes=59), policy, "heartbeat")
    assert _state(database_url, d) == "compliant"
    _sweep(database_url, policy, T0 + timedelta(days=4, minutes=1))
    assert _state(database_url, d) == "warning"  # the exception ended on Friday, with no report needed
    with sessions(database_url)() as s:
        ev = s.scalars(select(IncidentEvent).where(IncidentEvent.action == "device_exception")).one()
        assert ev.detail["approved_by"] == "Ms Patel (Head of Computing)" and ev.actor == "itadmin"
        assert verify(s).ok


def test_registrations_read_the_rollup_by_mac(database_url: str, policy) -> None:  # type: ignore[no-untyped-def]
    d = _enrol(database_url, mac="3c:22:fb:aa:bb:cc")
    src = RollupCompliance()
    with sessions(database_url)() as s:
        assert src.for_mac(s, "3C-22-FB-AA-BB-CC") is not None
        assert src.for_mac(s, "3c:22:fb:aa:bb:cc").failed() == ["patched", "antivirus", "no_p2p", "no_hotspot"]  # type: ignore[union-attr]
        assert src.for_mac(s, "3c:22:fb:00:00:99") is None  # no agent on that device
    _send(database_url, d, 1, T0, policy, checks=dev.all_passing(p2p_clients="fail", hotspot="not_applicable",
                                                                  antivirus="error"),
          addresses=[{"ip": "10.20.30.41", "mac": "3c:22:fb:dd:ee:ff", "iface": "wlan0"}])
    with sessions(database_url)() as s:
        got = src.for_mac(s, "3c:22:fb:aa:bb:cc")
        assert got is not None and got.checks == {"patched": True, "antivirus": False, "no_p2p": False,
                                                  "no_hotspot": True}
        assert src.for_mac(s, "3c:22:fb:dd:ee:ff") is not None  # a MAC learnt from a report
        exceptions.grant(s, d, "p2p_clients", "music department's licensed sharing", "Mr Jones",
                         datetime.now(UTC) + timedelta(days=1), "itadmin", Timing.from_policy(policy.compliance))
        s.commit()
        assert src.for_mac(s, "3c:22:fb:aa:bb:cc").failed() == ["antivirus"]  # type: ignore[union-attr]


def test_expired_agent_bindings_are_dropped(database_url: str, policy) -> None:  # type: ignore[no-untyped-def]
    add_pupil(database_url, "sam.y9")
    d = _enrol(database_url)
    _send(database_url, d, 1, T0, policy, users=["sam.y9"])
    with sessions(database_url)() as s:
        assert s.get(IpBinding, "10.20.30.40").expires_at is not None  # type: ignore[union-attr]
    _sweep(database_url, policy, T0 + timedelta(minutes=2))
    with sessions(database_url)() as s:
        assert s.get(IpBinding, "10.20.30.40") is not None
    _sweep(database_url, policy, T0 + timedelta(minutes=4))
    with sessions(database_url)() as s:
        assert s.get(IpBinding, "10.20.30.40") is None  # a WiFi lease may bind the address again
