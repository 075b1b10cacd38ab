"""The flow table: bidirectional keys, inspection on first packets only, bounded memory, idle expiry."""

from __future__ import annotations

from dataclasses import replace

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from agent.sensor.config import load_sensor_config
from agent.sensor.engine import Sensor
from agent.sensor.flows import flow_key
from tests.support.sensor_pkts import c2s, run, s2c


def test_both_directions_share_one_flow():
    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    assert flow_key(6, a, 1000, b, 80) == flow_key(6, b, 80, a, 1000)
    assert flow_key(6, a, 1000, b, 80) != flow_key(17, a, 1000, b, 80)


def test_inside_end_is_the_client_even_when_outside_speaks_first():
    dht = b"d1:rd2:id20:" + b"x" * 40
    _, dets = run([s2c(dht, dport=6881), c2s(b"?" * 20, dport=6881), s2c(b"!" * 20, dport=6881)])
    (d,) = dets
    assert (d.client_ip, d.client_port, d.server_ip, d.server_port) == ("192.168.10.20", 40000, "203.0.113.7", 6881)


def test_inspection_stops_after_budget():
    """After `inspect_packets` payloads a flow is only counted: a late signature is not looked at."""
    cfg = replace(load_sensor_config(), inspect_packets=3)
    filler = [c2s(b"\x99" * 50, dport=7000) for _ in range(3)]
    late = c2s(b"d1:ad2:id20:" + b"x" * 40, dport=7000)
    _, dets = run([*filler, late], cfg)
    assert dets == []
    _, dets = run([late, *filler], cfg)
    assert [d.protocol for d in dets] == ["bittorrent"]


def test_table_is_bounded_and_evictions_counted():
    cfg = replace(load_sensor_config(), max_flows=100)
    sensor = Sensor(cfg)
    for i in range(1000):
        frame = bytes(Ether() / IP(src="10.0.0.1", dst="198.51.100.9") / UDP(sport=1024 + i, dport=9) / Raw(b"x"))
        sensor.feed(1000.0 + i * 0.001, frame, 1)
        assert len(sensor.table) <= 100
    assert sensor.table.evicted == 900
    assert sensor.stats()["evictions"] == 900


def test_idle_flows_expire():
    cfg = replace(load_sensor_config(), idle_timeout=10)
    sensor = Sensor(cfg)
    for i in range(3000):  # one packet every 0.1 s, each a new flow: about 100 alive at any time
        frame = bytes(Ether() / IP(src="10.0.0.1", dst="198.51.100.9") / UDP(sport=1024 + i, dport=9) / Raw(b"x"))
        sensor.feed(1000.0 + i * 0.1, frame, 1)
    assert sensor.table.expired > 2000
    assert len(sensor.table) < 250
    assert sensor.table.evicted == 0


def test_pending_evidence_reported_when_flow_ends():
    """One WireGuard initiation and nothing else: reported (at lower confidence) when the flow ends."""
    _, dets = run([c2s(b"\x01\0\0\0" + b"\x22" * 144, dport=51820)])
    assert [(d.protocol, d.confidence) for d in dets] == [("wireguard", 0.8)]


def test_metrics_published(monkeypatch):
    from esafety import metrics

    before = metrics.SENSOR_PACKETS._value.get()
    drops_before = metrics.SENSOR_DROPPED.labels(reason="truncated")._value.get()
    run([c2s(b"\x13BitTorrent protocol" + b"\0" * 48, proto="tcp", dport=6881), b"\x00\x01"])
    assert metrics.SENSOR_PACKETS._value.get() - before == 2
    assert metrics.SENSOR_DROPPED.labels(reason="truncated")._value.get() - drops_before == 1
    assert metrics.SENSOR_DETECTIONS.labels(protocol="bittorrent")._value.get() >= 1
