"""Peer-to-peer: the BitTorrent peer handshake, HTTP and UDP trackers, DHT (bencoded KRPC), uTP, LSD;
and QUIC, which is not P2P but is the other UDP protocol that walks around the filtering proxy."""

from __future__ import annotations

from agent.sensor.config import SensorConfig
from agent.sensor.detectors import Hit
from agent.sensor.flows import Flow

_BT_HANDSHAKE = b"\x13BitTorrent protocol"
_UDP_TRACKER_MAGIC = b"\x00\x00\x04\x17\x27\x10\x19\x80"
_UTP_TYPES = frozenset({0x01, 0x11, 0x21, 0x31, 0x41})  # (type << 4) | version 1
_UTP_SYN = 0x41
_UTP_STATE = 0x21


def bittorrent_tcp(flow: Flow, payload: bytes, c2s: bool, cfg: SensorConfig) -> Hit | None:
    if payload.startswith(_BT_HANDSHAKE):
        ev = {"pattern": "peer handshake"}
        if len(payload) >= 48:
            ev["info_hash"] = payload[28:48].hex()
        return Hit("bittorrent", 0.99, ev)
    if payload.startswith((b"GET /announce", b"GET /scrape")) and b"info_hash=" in payload[:600]:
        return Hit("bittorrent", 0.85, {"pattern": "HTTP tracker announce"})
    return None


def bittorrent_udp(flow: Flow, payload: bytes, c2s: bool, cfg: SensorConfig) -> Hit | None:
    n = len(payload)
    if n < 16:
        return None
    b0 = payload[0]
    if b0 == 0x64:  # 'd': a bencoded dictionary, as every KRPC (DHT) message is
        if payload.startswith((b"d1:ad2:id20:", b"d1:rd2:id20:")):
            return Hit("bittorrent", 0.95, {"pattern": "DHT (KRPC) message"})
        if payload[-1:] == b"e" and (b"1:y1:q" in payload or b"1:y1:r" in payload):
            return Hit("bittorrent", 0.85, {"pattern": "bencoded KRPC message"})
        return None
    if payload.startswith(_UDP_TRACKER_MAGIC) and n == 16 and payload[8:12] == b"\0\0\0\0":
        return Hit("bittorrent", 0.95, {"pattern": "UDP tracker connect"})
    if payload.startswith(b"BT-SEARCH * HTTP/1.1"):
        return Hit("bittorrent", 0.9, {"pattern": "local peer discovery"})
    if b0 in _UTP_TYPES and n >= 20 and payload[1] in (0, 1, 2):
        st = flow.scratch()
        conn = payload[2:4]
        if b0 == _UTP_SYN and n == 20:
            st["utp_syn_" + ("c" if c2s else "s")] = conn
            return Hit("bittorrent", 0.4, {"pattern": "uTP SYN"}, final=False)
        if b0 == _UTP_STATE and st.get("utp_syn_" + ("s" if c2s else "c")) == conn:
            return Hit("bittorrent", 0.9, {"pattern": "uTP SYN answered by STATE, same connection id"})
    return None


# -- QUIC ------------------------------------------------------------------------------------------
_QUIC_VERSIONS = {b"\x00\x00\x00\x01": "v1", b"\x6b\x33\x43\xcf": "v2"}


def quic(flow: Flow, payload: bytes, c2s: bool, cfg: SensorConfig) -> Hit | None:
    n = len(payload)
    if n < 20:
        return None
    b0 = payload[0]
    version = None
    if b0 & 0xC0 == 0xC0:  # IETF long header: form and fixed bits set
        v = payload[1:5]
        if v in _QUIC_VERSIONS:
            version = _QUIC_VERSIONS[v]
        elif v[:3] == b"\xff\x00\x00":
            version = f"draft-{v[3]}"
        elif v[:1] in (b"Q", b"T") and v[1:4].isdigit():  # Google QUIC with IETF invariant header
            version = v.decode()
        if version is not None and payload[5] > 20:
            return None  # connection ids are at most 20 bytes
    elif b0 & 0x09 == 0x09 and n > 13:  # gQUIC public header: version flag, 8-byte connection id
        v = payload[9:13]
        if v[:1] == b"Q" and v[1:4].isdigit():
            version = v.decode()
    if version is None:
        return None
    ev = {"version": version}
    if flow.sip in cfg.doh_ips:
        return Hit("doh", 0.7, {**ev, "pattern": "QUIC to a public DNS resolver's address (DoH3/DoQ)"})
    return Hit("quic", 0.9 if c2s and n >= 1200 else 0.8, ev)
