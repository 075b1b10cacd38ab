"""The agent API over real HTTP against a real uvicorn dashboard, on SQLite and PostgreSQL:
enrolment with one-time tokens, reports and their effects (checks, transitions, state, incidents,
identity), and every refusal with its reason, counted in Prometheus."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from dashboard.app import create_app
from esafety.compliance.tables import AgentSession, Device, DeviceCheck, DeviceCheckEvent, EnrolmentToken
from esafety.identity import IdentityResolver
from esafety.incidents.tables import IncidentLink
from esafety.store.db import sessions
from esafety.store.models import Incident, IpBinding
from tests.conftest import free_port
from tests.support import devices as dev
from tests.support.dsl import add_role_users, live_server
from tests.support.wifi import add_pupil


@pytest.fixture
def api(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    monkeypatch.setenv("ESAFETY_COMPLIANCE_WORKER", "0")  # these tests call the sweep themselves
    monkeypatch.setenv("ESAFETY_REGISTRATIONS_WORKER", "0")
    add_role_users(database_url)
    policy = dev.policy_with(tmp_path, heartbeat="30s", grace="1h")
    app = create_app(dev.settings(database_url, tmp_path / "home", policy))
    with live_server(app, free_port()) as srv, httpx.Client(base_url=srv.url, timeout=15) as client:
        yield client


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("esafety_agent_reports_refused_total", {"reason": reason}) or 0.0


def accepted(kind: str) -> float:
    return REGISTRY.get_sample_value("esafety_agent_reports_total", {"kind": kind}) or 0.0


def device(url: str, device_id: str) -> Device:
    with sessions(url)() as s:
        d = s.get(Device, device_id)
        assert d is not None
        return d


def test_enrolment_trades_a_one_time_token_for_a_credential(api: httpx.Client, database_url: str) -> None:
    tok = dev.token(database_url)
    agent = dev.Agent(api, tok)
    e = agent.enrolment
    assert e["heartbeat_seconds"] == 30 and e["check_seconds"] == 900
    assert "transmission-daemon" in e["settings"]["p2p_names"] and e["settings"]["check_timeout_seconds"] == 10
    with sessions(database_url)() as s:
        d = s.get(Device, agent.device_id)
        assert d is not None and d.state == "pending" and d.macs == ["3c:22:fb:00:00:01"]
        assert agent.credential not in d.credential_sha256 and len(d.credential_sha256) == 64
        t = s.scalars(select(EnrolmentToken)).one()
        assert t.used_at is not None and t.device_id == agent.device_id and tok not in t.token_sha256
    before = refused("bad_token")
    again = api.post("/api/agent/enrol", json=dev.enrol_body(tok))
    assert again.status_code == 401 and again.json() == {"error": "bad_token",
                                                        "detail": "this enrolment token has already been used"}
    assert api.post("/api/agent/enrol", json=dev.enrol_body("enr_" + "x" * 32)).json()["detail"] == \
        "unknown enrolment token"
    with sessions(database_url)() as s:  # an expired token
        t = s.scalars(select(EnrolmentToken)).one()
        t.used_at, t.device_id = None, None
        t.expires_at = t.created_at
        s.commit()
    assert "expired" in api.post("/api/agent/enrol", json=dev.enrol_body(tok)).json()["detail"]
    assert refused("bad_token") == before + 3
    bad = api.post("/api/agent/enrol", json={**dev.enrol_body(dev.token(database_url)), "platform": "beos"})
    assert bad.status_code == 422 and bad.json()["field"] == "platform" and "linux" in bad.json()["detail"]


def test_a_snapshot_then_diffs_and_heartbeats(api: httpx.Client, database_url: str) -> None:
    agent = dev.Agent(api, dev.token(database_url))
    snapshots = accepted("snapshot")
    r = agent.send("snapshot")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted_seq"] == 1 and body["want_snapshot"] is False and body["heartbeat_seconds"] == 30
    assert accepted("snapshot") == snapshots + 1
    d = device(database_url, agent.device_id)
    assert (d.state, d.last_seq, d.monitor_sha256) == ("compliant", 1, dev.MONITOR)
    with sessions(database_url)() as s:
        assert s.scalar(select(func.count()).select_from(DeviceCheck)) == len(dev.CHECK_IDS)
    # A non-critical check fails: warning, no incident.
    r = agent.send("diff", checks=[dev.check("screen_lock", "fail", idle_lock_seconds=None)])
    assert r.status_code == 200 and device(database_url, agent.device_id).state == "warning"
    # A critical one: in grace (1h in this policy) and an incident for IT, with the evidence.
    r = agent.send("diff", checks=[dev.check("p2p_clients", "fail", running=["transmission-daemon"])])
    assert r.status_code == 200 and device(database_url, agent.device_id).state == "in_grace"
    with sessions(database_url)() as s:
        inc = s.scalars(select(Incident)).one()
        assert (inc.category, inc.queue, inc.source, inc.device) == ("device_noncompliance", "it_services", "agent",
                                                                     "lab-pc-01")
        assert inc.evidence["checks"][0]["id"] == "p2p_clients"
        assert inc.evidence["checks"][0]["evidence"] == {"running": ["transmission-daemon"]}
        assert inc.pipeline_done
        hist = [(e.check_id, e.from_status, e.to_status) for e in
                s.scalars(select(DeviceCheckEvent).where(DeviceCheckEvent.check_id.is_not(None))
                          .order_by(DeviceCheckEvent.id))]
        assert hist[-2:] == [("screen_lock", "pass", "fail"), ("p2p_clients", "pass", "fail")]
        states = [e.to_status for e in s.scalars(select(DeviceCheckEvent).where(DeviceCheckEvent.check_id.is_(None))
                                                 .order_by(DeviceCheckEvent.id))]
        assert states == ["compliant", "warning", "in_grace"]
    # A heartbeat changes nothing but the clock; fixing both clears the state; no new incident.
    heartbeats = accepted("heartbeat")
    assert agent.send("heartbeat").status_code == 200 and accepted("heartbeat") == heartbeats + 1
    agent.send("diff", checks=[dev.check("p2p_clients", "pass"), dev.check("screen_lock", "pass")])
    assert device(database_url, agent.device_id).state == "compliant"
    with sessions(database_url)() as s:
        assert s.scalar(select(func.count()).select_from(Incident)) == 1


def test_lost_reports_and_a_diff_before_any_snapshot_ask_for_a_snapshot(api: httpx.Client, database_url: str) -> None:
    agent = dev.Agent(api, dev.token(database_url))
    assert agent.send("heartbeat").json()["want_snapshot"] is True  # the server has no checks for it yet
    assert agent.send("snapshot").json()["want_snapshot"] is False
    assert agent.send("heartbeat").json()["want_snapshot"] is False
    assert agent.send("heartbeat", seq=10).json()["want_snapshot"] is True  # 4..9 never arrived
    agent.seq = 10
    assert agent.send("diff", checks=[]).json()["want_snapshot"] is True  # until a snapshot comes
    assert agent.send("snapshot").json()["want_snapshot"] is False


def test_refusals_have_reasons_and_are_counted(api: httpx.Client, database_url: str) -> None:
    agent = dev.Agent(api, dev.token(database_url))
    other = dev.Agent(api, dev.token(database_url), hostname="lab-pc-02")
    assert agent.send("snapshot").status_code == 200
    before = {r: refused(r) for r in ("replayed", "unauthenticated", "too_large", "malformed")}

    replay = agent.send("snapshot", seq=1)
    assert replay.status_code == 409 and replay.json()["error"] == "replayed_or_out_of_order"
    assert replay.json()["last_seq"] == 1
    agent.send("heartbeat", seq=5)
    older = agent.send("heartbeat", seq=3)
    assert older.status_code == 409 and older.json()["last_seq"] == 5 and "not above" in older.json()["detail"]

    body = dev.report(agent.device_id, 6)
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": f"Bearer {agent.device_id}.wrong"},
                    {"Authorization": f"Bearer {agent.device_id}.{other.credential}"},
                    {"Authorization": f"Basic {agent.device_id}.{agent.credential}"}):
        r = api.post("/api/agent/report", json=body, headers=headers)
        assert r.status_code == 401 and r.json()["error"] == "unauthenticated", headers

    big = dev.report(agent.device_id, 6, checks=[dev.check("os_updates", "pass", blob="x" * 300_000)])
    r = api.post("/api/agent/report", content=json.dumps(big), headers=agent.auth)
    assert r.status_code == 413 and r.json()["error"] == "too_large"

    def bad(change: dict, field: str) -> None:
        r = api.post("/api/agent/report", json={**dev.report(agent.device_id, 6), **change}, headers=agent.auth)
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "malformed" and r.json()["field"] == field and field in r.json()["detail"]

    bad({"seq": "6"}, "seq")
    bad({"kind": "everything"}, "kind")
    bad({"checks": [dev.check("os_updates", "maybe")]}, "checks.0.status")
    bad({"checks": [dev.check("os_updates", "pass"), dev.check("os_updates", "fail")]}, "checks")
    bad({"addresses": [{"ip": "10.0.0.300", "mac": None, "iface": "eth0"}]}, "addresses.0.ip")
    bad({"monitor": {"sha256": "not-a-hash", "pid": 1}}, "monitor.sha256")
    bad({"device_id": other.device_id}, "device_id")
    r = api.post("/api/agent/report", content=b"{not json", headers=agent.auth)
    assert r.status_code == 422 and "not JSON" in r.json()["detail"]
    r = api.post("/api/agent/report", json={**dev.report(agent.device_id, 6), "hostname": "pc\x00"}, headers=agent.auth)
    assert r.status_code == 422 and "NUL" in r.json()["detail"]  # PostgreSQL could not store it

    assert refused("replayed") == before["replayed"] + 2
    assert refused("unauthenticated") == before["unauthenticated"] + 5
    assert refused("too_large") == before["too_large"] + 1
    assert refused("malformed") == before["malformed"] + 9
    assert device(database_url, agent.device_id).last_seq == 5  # nothing refused was applied
    text = api.get("/metrics").text
    assert f'esafety_agent_reports_refused_total{{reason="replayed"}} {refused("replayed")}' in text


def test_a_retired_device_is_refused(api: httpx.Client, database_url: str) -> None:
    agent = dev.Agent(api, dev.token(database_url))
    assert agent.send().status_code == 200
    with sessions(database_url)() as s:
        d = s.get(Device, agent.device_id)
        assert d is not None
        d.retired_at = d.enrolled_at
        s.commit()
    assert agent.send("heartbeat").status_code == 401


def test_the_signed_in_user_is_bound_to_the_device_address_for_the_proxy(api: httpx.Client,
                                                                         database_url: str) -> None:
    add_pupil(database_url, "sam.y9", group="year9")
    agent = dev.Agent(api, dev.token(database_url))
    resolver = IdentityResolver(database_url, "unknown")
    # A remote SSH session of a staff account and an unknown local account do not win over the pupil at the console.
    users = [{"name": "SCHOOL\\Sam.Y9", "terminal": "tty1", "host": None, "started": dev.now_iso()},
             {"name": "itadmin", "terminal": "pts/0", "host": "10.9.9.9", "started": dev.now_iso()},
             {"name": "localonly", "terminal": ":0", "host": ":0", "started": None}]
    body = dev.report(agent.device_id, 1)
    body["users"] = users
    assert api.post("/api/agent/report", json=body, headers=agent.auth).status_code == 200
    resolver.refresh()
    for ip in ("127.0.0.1", "10.20.30.40"):  # where the report came from, and the device's own address
        who = resolver.resolve(ip)
        assert (who.user, who.group, who.device, who.source) == ("sam.y9", "year9", "lab-pc-01", "agent")
    with sessions(database_url)() as s:
        sess = {(x.username, x.ip, x.mac) for x in s.scalars(select(AgentSession))}
        assert sess == {("sam.y9", "127.0.0.1", None), ("sam.y9", "10.20.30.40", "3c:22:fb:00:00:01")}
        assert s.get(IpBinding, "10.20.30.40").expires_at is not None  # type: ignore[union-attr]
    # Signed out: the bindings go at once (not at expiry) and the proxy falls back to the default group.
    agent.seq = 1
    assert agent.send("heartbeat", users=[]).status_code == 200
    resolver.refresh()
    assert resolver.resolve("10.20.30.40").user is None and resolver.resolve("127.0.0.1").group == "unknown"


def test_the_assigned_user_is_bound_when_nobody_known_is_signed_in(api: httpx.Client, database_url: str) -> None:
    add_pupil(database_url, "ali.y10", group="year10")
    agent = dev.Agent(api, dev.token(database_url, owner="ali.y10"))
    assert agent.send(users=["kiosk"]).status_code == 200
    resolver = IdentityResolver(database_url, "unknown")
    resolver.refresh()
    assert resolver.resolve("10.20.30.40").user == "ali.y10"


def test_monitor_tamper_raises_the_linked_pair_for_it_and_the_dsl(api: httpx.Client, database_url: str) -> None:
    add_pupil(database_url, "sam.y9", group="year9")
    agent = dev.Agent(api, dev.token(database_url))
    assert agent.send(users=["sam.y9"]).status_code == 200
    assert agent.send("heartbeat", users=["sam.y9"], monitor="cd" * 32).status_code == 200  # same agent version
    with sessions(database_url)() as s:
        incs = {i.category: i for i in s.scalars(select(Incident))}
        assert set(incs) == {"agent_tamper", "monitoring_tamper"}
        assert incs["agent_tamper"].queue == "it_services" and incs["monitoring_tamper"].queue == "dsl"
        assert incs["monitoring_tamper"].subject == "sam.y9"
        assert "hash changed" in incs["agent_tamper"].summary
        link = s.scalars(select(IncidentLink)).one()
        assert {link.a_id, link.b_id} == {incs["agent_tamper"].id, incs["monitoring_tamper"].id}
    # An upgrade changes the hash legitimately; the safeguarding monitor check failing is tamper again.
    assert agent.send("heartbeat", users=["sam.y9"], monitor="ef" * 32, agent_version="0.2.0").status_code == 200
    assert agent.send("diff", users=["sam.y9"], monitor="ef" * 32, agent_version="0.2.0",
                      checks=[dev.check("safeguarding_monitor", "fail", running=False)]).status_code == 200
    with sessions(database_url)() as s:  # within the burst window: the same two incidents, counted twice
        assert sorted((i.category, i.count) for i in s.scalars(select(Incident))) == [("agent_tamper", 2),
                                                                                      ("monitoring_tamper", 2)]
    assert device(database_url, agent.device_id).state == "in_grace"
