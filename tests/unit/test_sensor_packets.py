"""Raw frame parsing: every link type we claim, and bad input counted and skipped, never raised."""

from __future__ import annotations

import random
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import CookedLinux, Dot1Q, Ether
from scapy.packet import Raw

from agent.sensor.packets import DROP_REASONS, parse
from tests.support.sensor_pkts import protocols, run

IP4 = IP(src="10.0.0.1", dst="8.8.8.8", ttl=63) / UDP(sport=5555, dport=53) / Raw(b"hello")


def test_ethernet_ipv4_udp_fields():
    r = parse(1, bytes(Ether(src="02:00:00:00:00:09") / IP4))
    assert not isinstance(r, str)
    proto, src, dst, sport, dport, ttl, payload, flags, mac = r
    assert (proto, src, dst, sport, dport, ttl, payload) == (17, bytes([10, 0, 0, 1]), bytes([8, 8, 8, 8]), 5555, 53,
                                                            63, b"hello")
    assert mac == bytes.fromhex("020000000009")


def test_vlan_tags_are_skipped():
    r = parse(1, bytes(Ether() / Dot1Q(vlan=10) / Dot1Q(vlan=20) / IP4))
    assert not isinstance(r, str) and r[6] == b"hello"


def test_ethernet_padding_is_not_payload():
    """Short frames are padded to 60 bytes; the IP length, not the frame, decides the payload."""
    frame = bytes(Ether() / IP(src="1.2.3.4", dst="5.6.7.8") / UDP(sport=1, dport=2) / Raw(b"x")) + b"\0" * 20
    r = parse(1, frame)
    assert not isinstance(r, str) and r[6] == b"x"


@pytest.mark.parametrize("linktype,frame", [
    (113, bytes(CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02\0\0\0\0\x07\0\0", proto=0x0800) / IP4)),
    (276, struct.pack(">HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, b"\x02\0\0\0\0\x07\0\0") + bytes(IP4)),
    (101, bytes(IP4)),
    (228, bytes(IP4)),
    (0, struct.pack("<I", 2) + bytes(IP4)),
    (0, struct.pack(">I", 2) + bytes(IP4)),  # written on a big-endian machine
    (108, struct.pack(">I", 2) + bytes(IP4)),
])
def test_other_link_types(linktype, frame):
    r = parse(linktype, frame)
    assert not isinstance(r, str), r
    assert r[3:5] == (5555, 53) and r[6] == b"hello"


def test_ipv6_with_extension_header():
    pkt = IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() / TCP(sport=1234, dport=443) / Raw(b"ab")
    r = parse(101, bytes(pkt))
    assert not isinstance(r, str) and r[0] == 6 and r[6] == b"ab" and len(r[1]) == 16


@pytest.mark.parametrize("frame,reason", [
    (bytes(Ether() / IP4)[:20], "truncated"),
    (bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2", flags="MF") / UDP() / Raw(b"x" * 40)), "fragment"),
    (bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2", frag=10) / Raw(b"x" * 40)), "fragment"),
    (bytes(Ether() / IPv6(src="::1", dst="::2") / IPv6ExtHdrFragment() / UDP() / Raw(b"x")), "fragment"),
    (bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2", len=900) / UDP() / Raw(b"x")), "bad_length"),
    (bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / UDP(len=500) / Raw(b"x")), "bad_length"),
    (bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(dataofs=15) / Raw(b"x")), "bad_length"),
    (bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2", ihl=3) / UDP()), "bad_header"),
    (bytes(Ether(type=0x0806) / Raw(b"\0" * 28)), "not_ip"),
    (bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2", proto=1) / Raw(b"\x08\0\0\0")), "other_proto"),
])
def test_bad_frames_give_a_reason(frame, reason):
    assert parse(1, frame) == reason


def test_unknown_link_type():
    assert parse(147, bytes(IP4)) == "linktype"


def test_snapped_capture_keeps_headers():
    """caplen < wirelen is the capture's choice, not a lie: the headers are still used."""
    frame = bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(sport=1, dport=2) / Raw(b"y" * 500))[:80]
    assert parse(1, frame) == "bad_length"
    r = parse(1, frame, snapped=True)
    assert not isinstance(r, str) and r[6] == b"y" * 26


def test_fuzzed_frames_never_raise_and_are_counted():
    rng = random.Random(6)
    base = [bytes(Ether() / IP4), bytes(Ether() / IPv6(src="::1", dst="::2") / TCP() / Raw(b"z" * 30))]
    frames = []
    for _ in range(3000):
        f = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 6)):
            f[rng.randrange(len(f))] = rng.randrange(256)
        frames.append(bytes(f[: rng.randint(0, len(f))]))
    frames += [rng.randbytes(rng.randint(0, 80)) for _ in range(1000)]
    sensor, _ = run(frames)
    assert sensor.packets == 4000
    assert sum(sensor.dropped.values()) > 0
    assert set(sensor.dropped) == set(DROP_REASONS)


def test_non_ethernet_capture_is_classified():
    """A raw-IP capture (no link header) still yields detections."""
    wg = b"\x01\0\0\0" + b"\x11" * 144
    sensor, dets = run([bytes(IP(src="10.1.1.1", dst="198.51.100.1") / UDP(sport=41000, dport=51820) / Raw(wg))],
                       linktype=101)
    assert protocols(dets) == ["wireguard"]
