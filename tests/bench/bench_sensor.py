"""Sensor throughput, and agreement with nDPI on the shared labelled captures.

`run(quick)` writes a deterministic pcap (1,000,000 frames; quick: 100,000) mixing web, QUIC, VPN,
Tor-like and P2P flows to var/bench/, classifies it on one core and returns packets/s. If
`ndpiReader` (Debian libndpi-bin) is installed it reads the same file for comparison, and both are
checked against nDPI's labels for the VPN/Tor/P2P flows of the shared captures.

    python -m tests.bench.bench_sensor [--quick]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.sensor.config import load_sensor_config
from agent.sensor.service import read_file

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "var" / "bench"
SHARED = ROOT.parent / "shared" / "data" / "pcaps" / "ndpi"
SHARED_CAPTURES = ("openvpn", "wireguard", "ipsec_isakmp_esp", "pptp", "tor", "bittorrent", "socks", "ssh",
                   "dns_dot", "quic")

# Protocol classes compared with nDPI: ours -> class, and nDPI's protocol names -> class. VPN, Tor
# and P2P are the point; proxies, SSH, encrypted DNS and QUIC are compared too, for information.
CLASSES = {"openvpn": "vpn", "wireguard": "vpn", "ipsec": "vpn", "pptp": "vpn", "l2tp": "vpn", "tor": "tor",
           "bittorrent": "p2p", "socks": "proxy", "http_connect": "proxy", "ssh": "ssh", "dot": "dns",
           "doh": "dns", "quic": "quic"}
NDPI_CLASSES = {"OpenVPN": "vpn", "WireGuard": "vpn", "IPSec": "vpn", "IPsec": "vpn", "PPTP": "vpn", "L2TP": "vpn",
                "Tor": "tor", "BitTorrent": "p2p", "SOCKS": "proxy", "SSH": "ssh", "DoH_DoT": "dns", "QUIC": "quic"}

# -- deterministic traffic -------------------------------------------------------------------------

_ETH = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
_ETH_R = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"


def _frame(c2s: bool, src: bytes, dst: bytes, proto: int, l4: bytes) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0, src, dst)
    return (_ETH if c2s else _ETH_R) + ip + l4


def _tcp(sp: int, dp: int, flags: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sp, dp, 1, 1, 0x50, flags, 65535, 0, 0) + payload


def _udp(sp: int, dp: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sp, dp, 8 + len(payload), 0) + payload


def _client_hello(sni: str, alpn: tuple[str, ...]) -> bytes:
    name = sni.encode()
    exts = struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    if alpn:
        lst = b"".join(bytes([len(a)]) + a.encode() for a in alpn)
        exts += struct.pack("!HHH", 16, len(lst) + 2, len(lst)) + lst
    body = b"\x03\x03" + bytes(range(32)) + b"\x00" + b"\x00\x04\x13\x01\x13\x02" + b"\x01\x00"
    body += struct.pack("!H", len(exts)) + exts
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


class _Traffic:
    def __init__(self, seed: int = 6):
        self.rng = random.Random(seed)
        self.blob = self.rng.randbytes(4096)
        self.hellos = {"web": _client_hello("www.example.org", ("h2", "http/1.1")),
                       "tor": _client_hello("www.k3vzq7mfn2xq.com", ())}

    def data(self, n: int) -> bytes:
        off = self.rng.randrange(0, 4096 - n)
        return self.blob[off:off + n]

    def flow(self, i: int) -> list[tuple[bool, bytes]]:
        """One flow's frames as (client-to-server, frame)."""
        r = self.rng
        cli = bytes([10, 1 + (i >> 16) % 200, (i >> 8) & 0xFF, i & 0xFF or 1])
        srv = bytes([198, 51, (i >> 8) & 0xFF, (i * 7) & 0xFF or 1])
        sp = 1024 + i % 60000
        n = r.randint(8, 70)
        kind = r.choices(("web", "http", "quic", "openvpn", "wireguard", "tor", "bittorrent", "dht"),
                         (45, 10, 12, 7, 7, 6, 8, 5))[0]
        out: list[tuple[bool, bytes]] = []
        if kind in ("web", "http", "tor", "bittorrent"):
            dp = {"web": 443, "http": 80, "tor": 9001, "bittorrent": 51413}[kind]
            out += [(True, _frame(True, cli, srv, 6, _tcp(sp, dp, 0x02))),
                    (False, _frame(False, srv, cli, 6, _tcp(dp, sp, 0x12))),
                    (True, _frame(True, cli, srv, 6, _tcp(sp, dp, 0x10)))]
            first = {"web": self.hellos["web"], "tor": self.hellos["tor"],
                     "http": b"GET /index.html HTTP/1.1\r\nHost: example.org\r\n\r\n",
                     "bittorrent": b"\x13BitTorrent protocol" + bytes(8) + self.data(40)}[kind]
            out.append((True, _frame(True, cli, srv, 6, _tcp(sp, dp, 0x18, first))))
            for k in range(n):
                c2s = k % 3 == 0
                size = r.choice((60, 200, 600, 1400)) if not c2s else 60
                out.append((c2s, _frame(c2s, cli if c2s else srv, srv if c2s else cli, 6,
                                        _tcp(sp if c2s else dp, dp if c2s else sp, 0x18, self.data(size)))))
            return out
        dp = {"quic": 443, "openvpn": 1194, "wireguard": 51820, "dht": 6881}[kind]
        if kind == "openvpn":
            first = [bytes([7 << 3]) + bytes(8) + b"\x00\x00\x00\x00\x00",
                     bytes([8 << 3]) + b"\x01" * 8 + b"\x01" + b"\0\0\0\0" + bytes(8) + b"\0\0\0\0"]
        elif kind == "wireguard":
            first = [b"\x01\0\0\0" + b"\x05\x06\x07\x08" + self.data(140),
                     b"\x02\0\0\0" + b"\x09\x09\x09\x09" + b"\x05\x06\x07\x08" + self.data(80)]
        elif kind == "quic":
            first = [b"\xc3\x00\x00\x00\x01\x08" + self.data(8) + b"\x00" + self.data(1200)]
        else:
            first = [b"d1:ad2:id20:" + self.data(20) + b"6:target20:" + self.data(20) + b"e1:q9:find_node1:y1:qe"]
        for k, p in enumerate(first):
            c2s = k % 2 == 0
            out.append((c2s, _frame(c2s, cli if c2s else srv, srv if c2s else cli, 17,
                                    _udp(sp if c2s else dp, dp if c2s else sp, p))))
        for k in range(n):
            c2s = k % 2 == 0
            size = r.choice((80, 160, 600, 1200))
            out.append((c2s, _frame(c2s, cli if c2s else srv, srv if c2s else cli, 17,
                                    _udp(sp if c2s else dp, dp if c2s else sp, b"\x48" + self.data(size)))))
        return out


def generate(path: Path, packets: int, concurrent: int = 2000, seed: int = 6) -> int:
    """Write `packets` frames, `concurrent` flows interleaved at a time; returns the flow count."""
    t = _Traffic(seed)
    rng = random.Random(seed + 1)
    active = [t.flow(i) for i in range(concurrent)]
    pos = [0] * concurrent
    flows = concurrent
    path.parent.mkdir(parents=True, exist_ok=True)
    ts_us = 1_700_000_000 * 1_000_000
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        buf = []
        for _ in range(packets):
            j = rng.randrange(concurrent)
            frame = active[j][pos[j]][1]
            pos[j] += 1
            if pos[j] == len(active[j]):
                active[j], pos[j] = t.flow(flows), 0
                flows += 1
            ts_us += 10
            buf.append(struct.pack("<IIII", ts_us // 1_000_000, ts_us % 1_000_000, len(frame), len(frame)) + frame)
            if len(buf) >= 8192:
                fh.write(b"".join(buf))
                buf.clear()
        fh.write(b"".join(buf))
    return flows


# -- nDPI ------------------------------------------------------------------------------------------

def _ndpi_flows(pcap: Path) -> list[tuple[frozenset[tuple[str, int]], str]] | None:
    """(endpoints, protocol name) per flow from ndpiReader's CSV, or None without ndpiReader."""
    exe = shutil.which("ndpiReader")
    if not exe:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "flows.csv"
        subprocess.run([exe, "-q", "-i", str(pcap), "-C", str(out)], capture_output=True, timeout=600, check=False)
        if not out.exists():
            return []
        with open(out, newline="") as fh:
            rows = list(csv.DictReader(fh))
    key = next((k for k in rows[0] if k and k.lstrip("#") == "flow_id"), None) if rows else None
    flows = []
    for r in rows:
        if key is None:
            break
        ends = frozenset({(r["src_ip"], int(r["src_port"] or 0)), (r["dst_ip"], int(r["dst_port"] or 0))})
        flows.append((ends, r["ndpi_proto"]))
    return flows


_OUT_LINE = re.compile(r"^\t\d+\t(\w+) (\S+) <?-> (\S+) \[proto: [\d.]+/([\w.]+)\]")


def _expected_flows(out_file: Path) -> list[tuple[frozenset[tuple[str, int]], str]]:
    """Flows and labels from nDPI's own expected-output file shipped with the capture."""
    flows = []
    for line in out_file.read_text(errors="replace").splitlines():
        m = _OUT_LINE.match(line)
        if not m:
            continue
        ends = []
        for ep in (m.group(2), m.group(3)):
            host, _, port = ep.rpartition(":")
            ends.append((host.strip("[]"), int(port) if port.isdigit() else 0))
        flows.append((frozenset(ends), m.group(4)))
    return flows


def _classes(name: str) -> str | None:
    for part in name.split("."):
        if part in NDPI_CLASSES:
            return NDPI_CLASSES[part]
    return None


def agreement() -> dict[str, Any]:
    """Per shared capture: nDPI's VPN/Tor/P2P flows we also flag (same class), and what we flag beyond."""
    cfg = load_sensor_config()
    result: dict[str, Any] = {}
    for name in SHARED_CAPTURES:
        pcap = SHARED / f"{name}.pcap"
        if not pcap.exists():
            continue
        ours: dict[frozenset[tuple[str, int]], str] = {}
        for d in read_file(pcap, cfg).detections:
            cls = CLASSES.get(d.protocol)
            if cls:
                ours[frozenset({(d.client_ip, d.client_port), (d.server_ip, d.server_port)})] = cls
        entry: dict[str, Any] = {"sensor_flagged": len(ours)}
        refs = {"expected": _expected_flows(pcap.with_suffix(".pcap.out"))
                if pcap.with_suffix(".pcap.out").exists() else None, "ndpiReader": _ndpi_flows(pcap)}
        for ref_name, flows in refs.items():
            if flows is None:
                continue
            labelled = {ends: _classes(proto) for ends, proto in flows if _classes(proto)}
            both = sum(1 for ends, cls in labelled.items() if ours.get(ends) == cls)
            entry[ref_name] = {"labelled": len(labelled), "agreed": both,
                               "sensor_only": sum(1 for e in ours if e not in labelled)}
        result[name] = entry
    return result


# -- the benchmark ---------------------------------------------------------------------------------

def run(quick: bool) -> dict[str, Any]:
    packets = 100_000 if quick else 1_000_000
    path = OUT_DIR / f"sensor_{packets}.pcap"
    t0 = time.perf_counter()
    flows = generate(path, packets)
    gen_s = time.perf_counter() - t0
    cfg = load_sensor_config()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    sensor = read_file(path, cfg)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    res: dict[str, Any] = {
        "packets": sensor.packets, "flows_generated": flows, "generate_seconds": round(gen_s, 2),
        "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
        "packets_per_second": round(sensor.packets / wall), "goal_packets_per_second": 100_000,
        "cpu_packets_per_second": round(sensor.packets / cpu),  # what one core does when not shared
        "detections": dict(sorted(sensor.detected.items())), "flow_table_evictions": sensor.table.evicted,
        "dropped": {k: v for k, v in sensor.dropped.items() if v}, "pcap": str(path),
    }
    exe = shutil.which("ndpiReader")
    if exe:
        t0 = time.perf_counter()
        subprocess.run([exe, "-q", "-i", str(path)], capture_output=True, timeout=1200, check=False)
        nd = time.perf_counter() - t0
        res["ndpi_seconds"] = round(nd, 3)
        res["ndpi_packets_per_second"] = round(packets / nd)
        res["sensor_to_ndpi_ratio"] = round((sensor.packets / wall) / (packets / nd), 3)
    res["agreement"] = agreement()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100,000 frames instead of 1,000,000")
    print(json.dumps(run(ap.parse_args().quick), indent=2))


if __name__ == "__main__":
    main()
