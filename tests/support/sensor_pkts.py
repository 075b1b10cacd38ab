"""Crafting frames for sensor tests with scapy, and running them through a Sensor."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from agent.sensor.config import SensorConfig, load_sensor_config
from agent.sensor.engine import Detection, Sensor

CLIENT = "192.168.10.20"
SERVER = "203.0.113.7"
CMAC = "02:00:00:00:00:01"
SMAC = "02:00:00:00:00:02"


def c2s(payload: bytes, proto: str = "udp", sport: int = 40000, dport: int = 443, flags: str = "PA",
        src: str = CLIENT, dst: str = SERVER, ttl: int = 64) -> Packet:
    l4 = UDP(sport=sport, dport=dport) if proto == "udp" else TCP(sport=sport, dport=dport, flags=flags)
    ip = IPv6(src=src, dst=dst, hlim=ttl) if ":" in src else IP(src=src, dst=dst, ttl=ttl)
    return Ether(src=CMAC, dst=SMAC) / ip / l4 / Raw(payload)


def s2c(payload: bytes, proto: str = "udp", sport: int = 40000, dport: int = 443, flags: str = "PA",
        src: str = CLIENT, dst: str = SERVER) -> Packet:
    """The reply to c2s(...) with the same arguments."""
    l4 = UDP(sport=dport, dport=sport) if proto == "udp" else TCP(sport=dport, dport=sport, flags=flags)
    ip = IPv6(src=dst, dst=src) if ":" in src else IP(src=dst, dst=src)
    return Ether(src=SMAC, dst=CMAC) / ip / l4 / Raw(payload)


def tcp_open(sport: int = 40000, dport: int = 443, src: str = CLIENT, dst: str = SERVER) -> list[Packet]:
    """SYN, SYN-ACK, ACK."""
    return [Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S"),
            Ether() / IP(src=dst, dst=src) / TCP(sport=dport, dport=sport, flags="SA"),
            Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="A")]


def run(packets: Iterable[Packet | bytes], cfg: SensorConfig | None = None, linktype: int = 1,
        t0: float = 1_700_000_000.0, step: float = 0.01) -> tuple[Sensor, list[Detection]]:
    sensor = Sensor(cfg or load_sensor_config())
    for i, p in enumerate(packets):
        sensor.feed(t0 + i * step, p if isinstance(p, bytes) else bytes(p), linktype)
    sensor.finish()
    return sensor, sensor.detections


def protocols(dets: Iterable[Detection]) -> list[str]:
    return [d.protocol for d in dets]


def write_pcap(path: Path, packets: Iterable[Packet]) -> Path:
    wrpcap(str(path), list(packets))
    return path
