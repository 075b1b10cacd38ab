"""The sensor on nDPI's public labelled captures: each protocol is found, on the flows nDPI labels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.sensor.config import load_sensor_config
from agent.sensor.service import read_file
from esafety.config import PROJECT_ROOT
from tests.bench.bench_sensor import _expected_flows
from tests.conftest import shared_data

# capture -> (our protocol, nDPI's label for it in the capture's expected output)
CAPTURES = {
    "openvpn": ("openvpn", "OpenVPN"),
    "wireguard": ("wireguard", "WireGuard"),
    "tor": ("tor", "Tor"),
    "ipsec_isakmp_esp": ("ipsec", "IPSec"),
    "pptp": ("pptp", "PPTP"),
    "ssh": ("ssh", "SSH"),
    "socks": ("socks", "SOCKS"),
    "dns_dot": ("dot", "DoH_DoT"),
    "quic": ("quic", "QUIC"),
    "bittorrent": ("bittorrent", "BitTorrent"),
}


def _ends(d) -> frozenset[tuple[str, int]]:
    return frozenset({(d.client_ip, d.client_port), (d.server_ip, d.server_port)})


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_detects_every_flow_ndpi_labels(name: str):
    pcap = shared_data(f"pcaps/ndpi/{name}.pcap")
    ours, label = CAPTURES[name]
    sensor = read_file(pcap, load_sensor_config())
    found = {_ends(d) for d in sensor.detections if d.protocol == ours}
    labelled = {ends for ends, proto in _expected_flows(Path(f"{pcap}.out"))
                if label in proto.split(".") and "Match by port" not in proto}
    assert labelled, "the expected output lists no flow for this protocol"
    # nDPI's QUIC label on one flow is a port guess ([Confidence: Match by port]); we need a header.
    missing = labelled - found
    if name == "quic":
        assert len(missing) <= 1
    else:
        assert not missing, f"nDPI labels {len(labelled)} {label} flows; we missed {sorted(map(sorted, missing))}"
    assert sensor.stats()["dropped"].keys() <= {"not_ip", "other_proto"}


def test_tor_capture_finds_links_ndpi_only_calls_tls():
    """nDPI's expected output labels 3 of the 7 Tor links; the 4 others are plain 'TLS' there, with the
    same random www.*.com names. The sensor flags all 7, at the SNI-shape confidence."""
    sensor = read_file(shared_data("pcaps/ndpi/tor.pcap"), load_sensor_config())
    tor = [d for d in sensor.detections if d.protocol == "tor"]
    assert len(tor) == 7
    assert all(d.evidence["sni"].startswith("www.") and d.category == "tor" and d.incident for d in tor)


def test_cli_read_prints_one_line_per_detection():
    pcap = shared_data("pcaps/ndpi/wireguard.pcap")
    r = subprocess.run([sys.executable, "-m", "esafety.cli", "sensor", "read", str(pcap), "--json"],
                       capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert {(d["client"], d["server"], d["server_port"], d["protocol"]) for d in docs} == {
        ("10.9.0.1", "10.9.0.2", 51820, "wireguard"), ("192.168.0.14", "139.162.192.157", 51820, "wireguard")}
    assert all(d["category"] == "vpn" and d["evidence"]["pattern"] for d in docs)
    stats = json.loads(r.stderr.strip().splitlines()[-1])
    assert stats["packets"] == 52 and stats["complete_file"] is True

    r = subprocess.run([sys.executable, "-m", "esafety.cli", "sensor", "read", str(pcap)],
                       capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and all(" wireguard " in line and "confidence=" in line for line in lines)


def test_cut_off_and_garbage_files(tmp_path: Path):
    pcap = shared_data("pcaps/ndpi/bittorrent.pcap")
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(pcap.read_bytes()[:100_000])  # ends mid-record
    sensor = read_file(cut, load_sensor_config())
    assert sensor.detections and getattr(sensor, "incomplete_file", None) is True
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture at all" * 10)
    r = subprocess.run([sys.executable, "-m", "esafety.cli", "sensor", "read", str(junk)],
                       capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    assert r.returncode == 2 and "not a readable pcap" in r.stderr
