"""Detections become incidents: routed, attributed to the pupil behind the address, bursts merged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from agent.sensor.config import load_sensor_config
from agent.sensor.report import IncidentSink, Tee
from agent.sensor.service import read_file
from esafety.config import PROJECT_ROOT
from esafety.store.db import sessions
from esafety.store.models import Incident, IpBinding, User
from tests.conftest import shared_data

AUP = PROJECT_ROOT / "policies" / "aup.yaml"


def _bind(url: str, ip: str, username: str, device: str) -> None:
    with sessions(url)() as s:
        s.add(User(username=username, display_name="Test Pupil", policy_group="year9"))
        s.add(IpBinding(ip=ip, username=username, device=device, source="agent",
                        expires_at=datetime.now(UTC) + timedelta(hours=1)))
        s.commit()


def _incidents(url: str) -> list[Incident]:
    with sessions(url)() as s:
        return list(s.scalars(select(Incident).order_by(Incident.id)))


def test_tor_and_bittorrent_become_incidents(database_url: str, tmp_path: Path):
    _bind(database_url, "192.168.1.252", "jsmith", "LAPTOP-17")
    sink = IncidentSink(database_url, AUP, tmp_path / "spool")
    try:
        read_file(shared_data("pcaps/ndpi/tor.pcap"), load_sensor_config(), sink)
        read_file(shared_data("pcaps/ndpi/bittorrent.pcap"), load_sensor_config(), sink)
    finally:
        sink.close()
    rows = _incidents(database_url)
    tor = [r for r in rows if r.category == "tor"]
    p2p = [r for r in rows if r.category == "p2p"]
    # Seven Tor links from one pupil within minutes are one incident with a count, not seven.
    assert len(tor) == 1 and tor[0].count == 7
    t = tor[0]
    assert (t.source, t.subject, t.device, t.client_ip) == ("sensor", "jsmith", "LAPTOP-17", "192.168.1.252")
    assert t.level >= 3 and t.state == "new"
    assert t.evidence["protocol"] == "tor" and t.evidence["server_port"] == 443
    assert t.evidence["evidence"]["sni"].startswith("www.") and "Tor" in t.summary
    # Unbound address: no subject, but the client address and MAC are kept for IT to trace.
    assert len(p2p) == 1 and p2p[0].subject is None and p2p[0].client_ip == "192.168.1.3"
    assert p2p[0].device == "c4:2c:03:06:49:fe" and p2p[0].count == 24
    assert not (tmp_path / "spool" / "incidents.jsonl").exists()


def test_low_confidence_and_non_incident_protocols_raise_nothing(sqlite_url: str, tmp_path: Path):
    sink = IncidentSink(sqlite_url, AUP, tmp_path / "spool")
    seen = []
    try:
        for name in ("ssh", "quic"):  # reported, but `incident: false` in policies/sensor.yaml
            read_file(shared_data(f"pcaps/ndpi/{name}.pcap"), load_sensor_config(), Tee(seen.append, sink))
    finally:
        sink.close()
    assert {d.protocol for d in seen} == {"ssh", "quic"}
    assert _incidents(sqlite_url) == [] and sink.raised == 0


def test_store_down_spools_then_replays(tmp_path: Path, sqlite_url: str):
    dead = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    sink = IncidentSink(dead, AUP, tmp_path / "spool")
    try:
        read_file(shared_data("pcaps/ndpi/pptp.pcap"), load_sensor_config(), sink)
    finally:
        sink.close()
    spooled = (tmp_path / "spool" / "incidents.jsonl").read_text().splitlines()
    assert [json.loads(x)["category"] for x in spooled] == ["vpn"]
    sink = IncidentSink(sqlite_url, AUP, tmp_path / "spool")  # the store is back
    sink.close()
    assert [(r.category, r.client_ip) for r in _incidents(sqlite_url)] == [("vpn", "192.168.43.22")]


def test_cli_read_store(sqlite_url: str, tmp_path: Path):
    env = {**os.environ, "ESAFETY_DATABASE_URL": sqlite_url, "ESAFETY_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "esafety.cli", "sensor", "read", str(shared_data("pcaps/ndpi/openvpn.pcap")),
           "--store"]
    for _ in range(2):  # reading the same capture again stores nothing new
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert len(r.stdout.splitlines()) == 10
    rows = _incidents(sqlite_url)
    assert {r.category for r in rows} == {"vpn"}
    # Ten OpenVPN flows, one client seen twice a week apart (two incidents); the second read added nothing.
    assert len(rows) == 10 and sum(r.count for r in rows) == 10
