"""VPN protocols: OpenVPN, WireGuard, IPsec/IKE, L2TP, PPTP (and their GRE/ESP data planes)."""

from __future__ import annotations

from struct import unpack_from

from agent.sensor.config import SensorConfig
from agent.sensor.detectors import Hit
from agent.sensor.flows import Flow

# -- OpenVPN ---------------------------------------------------------------------------------------
# Every packet starts with opcode<<3 | key_id; control packets then carry the sender's 8-byte
# session id. Over TCP each packet is prefixed with its 16-bit length.
_OV_CLIENT_RESET = frozenset({1, 7, 10})  # P_CONTROL_HARD_RESET_CLIENT_V1/V2/V3
_OV_SERVER_RESET = frozenset({2, 8})  # P_CONTROL_HARD_RESET_SERVER_V1/V2
_OV_CONTROL = frozenset({1, 2, 3, 4, 5, 7, 8, 10, 11})
_OV_NAMES = {1: "hard_reset_client_v1", 2: "hard_reset_server_v1", 7: "hard_reset_client_v2",
             8: "hard_reset_server_v2", 10: "hard_reset_client_v3"}


def _openvpn(flow: Flow, pkt: bytes, c2s: bool, transport: str) -> Hit | None:
    if len(pkt) < 9:
        return None
    op, key_id = pkt[0] >> 3, pkt[0] & 7
    st = flow.scratch()
    side = "c" if c2s else "s"
    other = "s" if c2s else "c"
    sid = pkt[1:9]
    if op in _OV_CLIENT_RESET or op in _OV_SERVER_RESET:
        if key_id != 0 or sid == b"\0" * 8:
            return None
        st["ov_" + side] = sid
        st["ov_n_" + side] = 1
        peer = st.get("ov_" + other)
        if peer is not None and ((op in _OV_SERVER_RESET) != (st.get("ov_op_" + other, 0) in _OV_SERVER_RESET)):
            acked = peer in pkt[9:]  # the reply acknowledges the peer's session id
            return Hit("openvpn", 0.99 if acked else 0.95,
                       {"transport": transport, "pattern": "hard reset exchange",
                        "session_id_acknowledged": acked})
        st["ov_op_" + side] = op
        return Hit("openvpn", 0.5, {"transport": transport, "pattern": _OV_NAMES.get(op, str(op))}, final=False)
    mine = st.get("ov_" + side)
    if mine is None:
        return None
    if op in _OV_CONTROL and sid == mine:
        n = st["ov_n_" + side] = st.get("ov_n_" + side, 1) + 1
        if n >= 3:
            return Hit("openvpn", 0.85, {"transport": transport, "pattern": "control packets with one session id",
                                         "packets": n})
        return Hit("openvpn", 0.75, {"transport": transport, "pattern": "reset then control, same session id"},
                   final=False)
    return None


def openvpn_udp(flow: Flow, payload: bytes, c2s: bool, cfg: SensorConfig) -> Hit | None:
    return _openvpn(flow, payload, c2s, "udp")


def openvpn_tcp(flow: Flow, payload: bytes, c2s: bool, cfg: SensorConfig) -> Hit | None:
    if len(payload) < 11:
        return None
    plen = (payload[0] << 8) | payload[1]
    if plen < 9 or plen + 2 > len(payload):
        return None  # the length prefix must fit the segment: random data rarely does
    return _openvpn(flow, payload[2:2 + plen], c2s, "tcp")


# -- WireGuard -------------------------------------------------------------------------------------
# type (1 byte) + 3 reserved zero bytes; initiation 148, response 92, cookie 64, data 32 + 16n.

def wireguard(flow: Flow, payload: bytes, c2s: bool, cfg: SensorConfig) -> Hit | None:
    n = len(payload)
    if n < 32 or payload[1:4] != b"\0\0\0":
        return None
    t = payload[0]
    st = flow.scratch()
    if t == 1 and n == 148:
        st["wg_init_" + ("c" if c2s else "s")] = payload[4:8]
        return Hit("wireguard", 0.8, {"pattern": "handshake initiation (148 bytes)"}, final=False)
    if t == 2 and n == 92:
        init = st.get("wg_init_" + ("s" if c2s else "c"))
        if init is not None and payload[8:12] == init:
            return Hit("wireguard", 0.99, {"pattern": "handshake initiation and response, matching index"})
        return Hit("wireguard", 0.8, {"pattern": "handshake response (92 bytes)"}, final=False)
    if t == 3 and n == 64:
        return Hit("wireguard", 0.7, {"pattern": "cookie reply (64 bytes)"}, final=False)
    if t == 4 and (n - 32) % 16 == 0:
        key = "wg_data_" + ("c" if c2s else "s")
        idx = payload[4:8]
        prev = st.get(key)
        if prev and prev[0] == idx:
            count = prev[1] + 1
            st[key] = (idx, count)
            if count >= 4:
                return Hit("wireguard", 0.7, {"pattern": "transport data, one receiver index", "packets": count})
        else:
            st[key] = (idx, 1)
    return None


# -- IPsec / IKE -----------------------------------------------------------------------------------
_IKE_V1_EXCHANGES = frozenset({1, 2, 4, 5, 6, 32, 33, 34})
_IKE_V2_EXCHANGES = frozenset({34, 35, 36, 37, 38, 43})


def _ike_header(pkt: bytes) -> Hit | None:
    if len(pkt) < 28 or pkt[0:8] == b"\0" * 8:
        return None
    version, exch = pkt[17], pkt[18]
    if version == 0x10 and exch in _IKE_V1_EXCHANGES:
        name = "IKEv1"
    elif version == 0x20 and exch in _IKE_V2_EXCHANGES:
        name = "IKEv2"
    else:
        return None
    length = unpack_from(">I", pkt, 24)[0]
    if length == len(pkt):
        return Hit("ipsec", 0.95, {"pattern": f"{name} header", "exchange": exch})
    return Hit("ipsec", 0.6, {"pattern": f"{name} header, length mismatch"}, final=False)


def ike(flow: Flow, payload: bytes, c2s: bool, cfg: SensorConfig) -> Hit | None:
    if flow.sport not in cfg.ike_ports and flow.cport not in cfg.ike_ports:
        return None
    if payload[:4] == b"\0\0\0\0" and len(payload) >= 32:  # NAT-T: non-ESP marker, then IKE
        return _ike_header(payload[4:])
    if payload == b"\xff":
        return Hit("ipsec", 0.6, {"pattern": "NAT-T keepalive"}, final=False)
    hit = _ike_header(payload)
    if hit or len(payload) < 16 or 4500 not in (flow.sport, flow.cport):
        return hit
    # ESP in UDP: 4-byte SPI, 4-byte sequence number rising per SPI and direction.
    st = flow.scratch()
    key = "esp_" + ("c" if c2s else "s")
    spi, seq = payload[0:4], unpack_from(">I", payload, 4)[0]
    prev = st.get(key)
    st[key] = (spi, seq)
    if prev and prev[0] == spi and 0 < seq - prev[1] <= 64:
        return Hit("ipsec", 0.85, {"pattern": "ESP in UDP 4500, rising sequence numbers"})
    return None


def esp(flow: Flow, payload: bytes, c2s: bool, cfg: SensorConfig) -> Hit | None:
    """IP protocol 50/51: IPsec by definition; the SPI is the evidence."""
    if len(payload) < 8:
        return None
    name = "ESP" if flow.proto == 50 else "AH"
    spi = payload[0:4] if flow.proto == 50 else payload[4:8]
    return Hit("ipsec", 0.9, {"pattern": f"IP protocol {flow.proto} ({name})", "spi": spi.hex()})


# -- L2TP ------------------------------------------------------------------------------------------

def l2tp(flow: Flow, payload: bytes, c2s: bool, cfg: SensorConfig) -> Hit | None:
    if flow.sport not in cfg.l2tp_ports and flow.cport not in cfg.l2tp_ports:
        return None
    if len(payload) < 12:
        return None
    flags, ver = payload[0], payload[1] & 0x0F
    if ver not in (2, 3):
        return None
    if flags & 0xCB == 0xC8:  # control message: T, L and S set, O and P clear
        length = (payload[2] << 8) | payload[3]
        if length == len(payload):
            return Hit("l2tp", 0.9, {"pattern": f"L2TPv{ver} control message"})
    return None


def l2tp_ip(flow: Flow, payload: bytes, c2s: bool, cfg: SensorConfig) -> Hit | None:
    return Hit("l2tp", 0.7, {"pattern": "IP protocol 115 (L2TPv3)"}) if len(payload) >= 4 else None


# -- PPTP ------------------------------------------------------------------------------------------
_PPTP_MAGIC = b"\x1a\x2b\x3c\x4d"
_PPTP_MESSAGES = {1: "Start-Control-Connection-Request", 2: "Start-Control-Connection-Reply",
                  7: "Outgoing-Call-Request", 8: "Outgoing-Call-Reply"}


def pptp(flow: Flow, payload: bytes, c2s: bool, cfg: SensorConfig) -> Hit | None:
    if len(payload) < 16 or payload[4:8] != _PPTP_MAGIC or payload[2:4] != b"\x00\x01":
        return None
    length = (payload[0] << 8) | payload[1]
    msg = (payload[8] << 8) | payload[9]
    if length > len(payload) or not 1 <= msg <= 15:
        return None
    return Hit("pptp", 0.95, {"pattern": "PPTP control connection (magic cookie)",
                              "message": _PPTP_MESSAGES.get(msg, str(msg))})


def gre(flow: Flow, payload: bytes, c2s: bool, cfg: SensorConfig) -> Hit | None:
    """Enhanced GRE (version 1, PPP payload) is PPTP's data channel; plain GRE is left alone."""
    if len(payload) >= 8 and payload[1] & 0x07 == 1 and payload[2:4] == b"\x88\x0b":
        return Hit("pptp", 0.9, {"pattern": "enhanced GRE carrying PPP (PPTP data)"})
    return None
