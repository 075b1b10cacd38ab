"""Each detector on crafted traffic: it fires on the protocol's real shape and stays quiet on near misses."""

from __future__ import annotations

import ipaddress
import ssl
import struct
from dataclasses import replace

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import GRE, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from agent.sensor.config import load_sensor_config
from tests.support.sensor_pkts import CLIENT, SERVER, c2s, protocols, run, s2c, tcp_open

CFG = load_sensor_config()


def packed(*ips: str) -> frozenset[bytes]:
    return frozenset(ipaddress.ip_address(i).packed for i in ips)


def client_hello(sni: str, alpn: list[str] | None = None) -> bytes:
    """A real ClientHello, written by OpenSSL through a memory BIO."""
    ctx = ssl.create_default_context()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def tls_flow(sni: str, dport: int = 443, dst: str = SERVER, alpn: list[str] | None = None, split: bool = False):
    hello = client_hello(sni, alpn)
    parts = [hello[:100], hello[100:]] if split else [hello]
    return [*tcp_open(dport=dport, dst=dst)] + [c2s(p, "tcp", dport=dport, dst=dst) for p in parts]


# -- VPNs ------------------------------------------------------------------------------------------

def test_openvpn_udp_reset_exchange():
    sid_c, sid_s = b"\x11" * 8, b"\x22" * 8
    client = bytes([7 << 3]) + sid_c + b"\x00" + b"\0\0\0\0"
    server = bytes([8 << 3]) + sid_s + b"\x01" + b"\0\0\0\0" + sid_c + b"\0\0\0\0"
    _, dets = run([c2s(client, dport=1194), s2c(server, dport=1194)])
    assert [(d.protocol, d.confidence, d.evidence["session_id_acknowledged"]) for d in dets] == [
        ("openvpn", 0.99, True)]


def test_openvpn_tcp_needs_a_consistent_length_prefix():
    pkt = bytes([7 << 3]) + b"\x33" * 8 + b"\x00" + b"\0\0\0\0"
    ok = [c2s(struct.pack(">H", len(pkt)) + pkt, "tcp", dport=443),
          s2c(struct.pack(">H", len(pkt)) + bytes([8 << 3]) + pkt[1:], "tcp", dport=443)]
    assert protocols(run(ok)[1]) == ["openvpn"]
    lying = [c2s(struct.pack(">H", 900) + pkt, "tcp", dport=443)]
    assert run(lying)[1] == []


def test_wireguard_handshake_matching_index():
    init = b"\x01\0\0\0" + b"\xaa\xbb\xcc\xdd" + b"\x01" * 140
    resp = b"\x02\0\0\0" + b"\x10\x20\x30\x40" + b"\xaa\xbb\xcc\xdd" + b"\x02" * 80
    _, dets = run([c2s(init, dport=51820), s2c(resp, dport=51820)])
    assert [(d.protocol, d.confidence) for d in dets] == [("wireguard", 0.99)]


def test_wireguard_wrong_size_is_not_wireguard():
    assert run([c2s(b"\x01\0\0\0" + b"\x01" * 150, dport=51820)])[1] == []


def test_ike_on_port_500_only():
    hdr = b"\x12" * 8 + b"\0" * 8 + bytes([33, 0x20, 34, 0x08]) + b"\0\0\0\0"
    body = b"\0" * 40
    ike = hdr + struct.pack(">I", len(hdr) + 4 + len(body)) + body
    _, dets = run([c2s(ike, sport=500, dport=500)])
    assert [(d.protocol, d.evidence["pattern"]) for d in dets] == [("ipsec", "IKEv2 header")]
    assert run([c2s(ike, dport=5000)])[1] == []
    nat_t = b"\0\0\0\0" + ike
    assert protocols(run([c2s(nat_t, sport=4500, dport=4500)])[1]) == ["ipsec"]


def test_esp_ip_protocol():
    frame = Ether() / IP(src=CLIENT, dst=SERVER, proto=50) / Raw(b"\x00\x00\x10\x01" + b"\0\0\0\x01" + b"e" * 40)
    _, dets = run([frame])
    assert [(d.protocol, d.transport, d.evidence["spi"]) for d in dets] == [("ipsec", "esp", "00001001")]


def test_l2tp_control_message():
    msg = b"\xc8\x02" + struct.pack(">H", 20) + b"\0\0\0\0\0\0\0\0" + b"\x80\x08\0\0\0\0\0\x01"
    assert protocols(run([c2s(msg, sport=1701, dport=1701)])[1]) == ["l2tp"]
    assert run([c2s(msg, dport=1800)])[1] == []


def test_pptp_control_and_gre():
    sccrq = struct.pack(">HHIHH", 156, 1, 0x1A2B3C4D, 1, 0) + b"\0" * 144
    assert [d.evidence["message"] for d in run([*tcp_open(dport=1723), c2s(sccrq, "tcp", dport=1723)])[1]] == [
        "Start-Control-Connection-Request"]
    gre = (Ether() / IP(src=CLIENT, dst=SERVER) / GRE(version=1, proto=0x880B, key_present=1)
           / Raw(b"\0" * 8 + b"p" * 30))
    assert [(d.protocol, d.transport) for d in run([gre])[1]] == [("pptp", "gre")]


# -- proxies and tunnels ---------------------------------------------------------------------------

def test_socks5_full_exchange_names_target():
    req = b"\x05\x01\x00\x03" + bytes([11]) + b"example.org" + b"\x01\xbb"
    _, dets = run([*tcp_open(dport=1080), c2s(b"\x05\x01\x00", "tcp", dport=1080),
                   s2c(b"\x05\x00", "tcp", dport=1080), c2s(req, "tcp", dport=1080)])
    assert [(d.protocol, d.category, d.evidence["target"]) for d in dets] == [
        ("socks", "web_proxies", "example.org:443")]


def test_socks4a_request_and_reply():
    req = b"\x04\x01\x00\x50\x00\x00\x00\x01" + b"me\x00" + b"example.org\x00"
    _, dets = run([c2s(req, "tcp", dport=9050), s2c(b"\x00\x5a" + b"\0" * 6, "tcp", dport=9050)])
    assert [(d.protocol, d.evidence["granted"]) for d in dets] == [("socks", True)]


def test_http_connect_to_outside_proxy_but_not_the_school_proxy():
    req = b"CONNECT www.youtube.com:443 HTTP/1.1\r\nHost: www.youtube.com:443\r\n\r\n"
    _, dets = run([*tcp_open(dport=3128), c2s(req, "tcp", dport=3128)])
    assert [(d.protocol, d.evidence["target"]) for d in dets] == [("http_connect", "www.youtube.com:443")]
    cfg = replace(CFG, allowed_proxies=packed(SERVER))
    assert run([*tcp_open(dport=3128), c2s(req, "tcp", dport=3128)], cfg)[1] == []


def test_http_absolute_uri_proxy():
    req = b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"
    assert [d.evidence["url_host"] for d in run([c2s(req, "tcp", dport=8080)])[1]] == ["example.com"]


def test_ssh_reported_and_tunnel_by_volume_and_duration():
    cfg = replace(CFG, ssh_tunnel_seconds=30, ssh_tunnel_bytes=100_000)
    pkts = [*tcp_open(dport=22), s2c(b"SSH-2.0-OpenSSH_9.2\r\n", "tcp", dport=22),
            c2s(b"SSH-2.0-PuTTY_0.78\r\n", "tcp", dport=22)]
    pkts += [s2c(b"\x00" * 1400, "tcp", dport=22) for _ in range(200)]  # 280 kB over 0.01 s x 200 ...
    sensor, dets = run(pkts, cfg, step=0.2)  # ... = 40 s
    assert protocols(dets) == ["ssh", "ssh_tunnel"]
    assert dets[0].evidence["client_banner"] == "SSH-2.0-PuTTY_0.78" and not dets[0].incident
    assert dets[1].incident and dets[1].evidence["bytes"] >= 100_000
    _, short = run(pkts[:60], cfg, step=0.2)
    assert protocols(short) == ["ssh"]


def test_ssh_to_allowed_server_is_quiet():
    cfg = replace(CFG, ssh_allowed=packed(SERVER))
    assert run([s2c(b"SSH-2.0-OpenSSH_9.2\r\n", "tcp", dport=22)], cfg)[1] == []


# -- TLS: DoH, DoT, Tor ----------------------------------------------------------------------------

def test_doh_by_sni_even_when_the_hello_spans_two_segments():
    _, dets = run(tls_flow("cloudflare-dns.com", alpn=["h2"], split=True))
    assert [(d.protocol, d.category, d.evidence["sni"]) for d in dets] == [("doh", "doh", "cloudflare-dns.com")]


def test_doh_subdomain_and_resolver_address():
    assert protocols(run(tls_flow("abc123.dns.nextdns.io", alpn=["h2"]))[1]) == ["doh"]
    dets = run(tls_flow("example.net", dst="9.9.9.9", alpn=["h2"]))[1]
    assert [(d.protocol, d.confidence) for d in dets] == [("doh", 0.7)]


def test_dot_by_port():
    assert protocols(run(tls_flow("dns.example", dport=853))[1]) == ["dot"]


def test_tor_by_relay_list_and_by_sni_shape():
    cfg = replace(CFG, tor_relays=packed(SERVER))
    assert [(d.protocol, d.confidence) for d in run(tls_flow("www.example.com", dport=9001), cfg)[1]] == [
        ("tor", 0.95)]
    assert [(d.protocol, d.confidence) for d in run(tls_flow("www.k3vzq7mfn2x.com"))[1]] == [("tor", 0.75)]


@pytest.mark.parametrize("sni,alpn", [("www.google.com", None), ("www.k3vzq7mfn2x.com", ["h2", "http/1.1"]),
                                      ("www.bbc.co.uk", None), ("mail.k3vzq7mfn2x.com", None)])
def test_ordinary_tls_is_quiet(sni, alpn):
    assert run(tls_flow(sni, alpn=alpn))[1] == []


# -- P2P and QUIC ----------------------------------------------------------------------------------

def test_bittorrent_handshake_with_info_hash():
    hs = b"\x13BitTorrent protocol" + b"\0" * 8 + bytes(range(20)) + b"-TR3000-" + b"1" * 12
    _, dets = run([*tcp_open(dport=51413), c2s(hs, "tcp", dport=51413)])
    assert [(d.protocol, d.category, d.evidence["info_hash"]) for d in dets] == [
        ("bittorrent", "p2p", bytes(range(20)).hex())]


def test_bittorrent_dht_tracker_and_utp():
    dht = b"d1:ad2:id20:" + b"a" * 20 + b"e1:q4:ping1:t2:aa1:y1:qe"
    assert protocols(run([c2s(dht, dport=6881)])[1]) == ["bittorrent"]
    tracker = b"\x00\x00\x04\x17\x27\x10\x19\x80" + b"\0\0\0\0" + b"\x12\x34\x56\x78"
    assert protocols(run([c2s(tracker, dport=6969)])[1]) == ["bittorrent"]
    syn = bytes([0x41, 0]) + b"\x12\x34" + b"\0" * 16
    state = bytes([0x21, 0]) + b"\x12\x34" + b"\0" * 16
    assert [(d.protocol, d.confidence) for d in run([c2s(syn, dport=6881), s2c(state, dport=6881)])[1]] == [
        ("bittorrent", 0.9)]


def test_quic_v1_initial_and_doh3():
    initial = b"\xc3" + b"\x00\x00\x00\x01" + b"\x08" + b"\x11" * 8 + b"\x00" + b"\x44\xd0" + b"\x99" * 1250
    dets = run([c2s(initial, dport=443)])[1]
    assert [(d.protocol, d.evidence["version"], d.incident) for d in dets] == [("quic", "v1", False)]
    assert protocols(run([c2s(initial, dport=443, dst="1.1.1.1")])[1]) == ["doh"]
    assert run([c2s(b"\xc3\x01\x02\x03\x04" + b"\0" * 40, dport=443)])[1] == []


# -- network devices -------------------------------------------------------------------------------

def _dhcp_offer(server: str) -> Ether:
    return (Ether(src="02:00:00:00:00:66", dst="ff:ff:ff:ff:ff:ff") / IP(src=server, dst="255.255.255.255")
            / UDP(sport=67, dport=68) / BOOTP(op=2, yiaddr="192.168.10.77", chaddr=b"\x02" * 6)
            / DHCP(options=[("message-type", "offer"), ("server_id", server), ("router", server), "end"]))


def test_rogue_dhcp_offer():
    cfg = replace(CFG, dhcp_allowed=packed("192.168.10.1"))
    dets = run([_dhcp_offer("192.168.10.99")], cfg)[1]
    assert [(d.protocol, d.client_ip, d.client_mac, d.evidence["offered"]) for d in dets] == [
        ("rogue_dhcp", "192.168.10.99", "02:00:00:00:00:66", "192.168.10.77")]
    assert run([_dhcp_offer("192.168.10.1")], cfg)[1] == []
    assert run([_dhcp_offer("192.168.10.99")])[1] == []  # no allowed list: detection is off


def test_personal_server_accepting_from_outside():
    pkts = tcp_open(sport=51000, dport=25565, src="198.51.100.50", dst=CLIENT)
    dets = run(pkts)[1]
    assert [(d.protocol, d.client_ip, d.client_port, d.server_ip) for d in dets] == [
        ("personal_server", CLIENT, 25565, "198.51.100.50")]
    assert run(tcp_open(src="192.168.10.5", dst=CLIENT, dport=8080))[1] == []  # LAN peers: off by default
    cfg = replace(CFG, personal_allowed=(ipaddress.ip_network("192.168.10.16/28"),))
    assert run(pkts, cfg)[1] == []
    refused = [pkts[0], Ether() / IP(src=CLIENT, dst="198.51.100.50") / TCP(sport=25565, dport=51000, flags="RA")]
    assert run(refused)[1] == []


def test_nat_device_by_ttl():
    cfg = replace(CFG, nat_min_packets=5)
    own = [c2s(b"x", dport=1000 + i, ttl=64) for i in range(5)]
    forwarded = [c2s(b"x", dport=2000 + i, ttl=127) for i in range(5)]
    dets = run(own + forwarded, cfg)[1]
    assert [(d.protocol, d.client_ip, d.confidence) for d in dets] == [("nat_device", CLIENT, 0.85)]
    assert run(own * 3, cfg)[1] == []


def test_ipv6_flows():
    hs = b"\x13BitTorrent protocol" + b"\0" * 48
    dets = run([c2s(hs, "tcp", dport=6881, src="2001:db8::10", dst="2001:db8:1::20")])[1]
    assert [(d.protocol, d.client_ip, d.server_ip) for d in dets] == [("bittorrent", "2001:db8::10", "2001:db8:1::20")]
