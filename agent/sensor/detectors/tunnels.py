"""Tunnels over ordinary-looking TCP: SSH, SOCKS, HTTP CONNECT/absolute-URI proxies, and TLS to Tor
relays or encrypted-DNS resolvers (by SNI, address and port)."""

from __future__ import annotations

import re

from agent.sensor.config import SensorConfig
from agent.sensor.detectors import Hit
from agent.sensor.flows import Flow
from agent.sensor.tls import is_handshake, needed, parse_client_hello

# -- SSH -------------------------------------------------------------------------------------------

def ssh(flow: Flow, payload: bytes, c2s: bool, cfg: SensorConfig) -> Hit | None:
    if not payload.startswith(b"SSH-") or flow.sip in cfg.ssh_allowed:
        return None
    banner = payload.split(b"\n", 1)[0].strip()[:120].decode("ascii", "replace")
    st = flow.scratch()
    st["ssh_" + ("c" if c2s else "s")] = banner
    ev = {"server_banner": st.get("ssh_s"), "client_banner": st.get("ssh_c")}
    both = "ssh_c" in st and "ssh_s" in st
    return Hit("ssh", 0.95 if both else 0.9, {k: v for k, v in ev.items() if v}, final=both)


# -- SOCKS -----------------------------------------------------------------------------------------

def _socks5_target(p: bytes) -> str | None:
    """Destination of a SOCKS5 request: VER CMD RSV ATYP ADDR PORT."""
    if len(p) < 7 or p[0] != 5 or p[1] not in (1, 2, 3) or p[2] != 0:
        return None
    atyp = p[3]
    if atyp == 1 and len(p) == 10:
        return ".".join(str(b) for b in p[4:8]) + f":{(p[8] << 8) | p[9]}"
    if atyp == 3 and len(p) == 7 + p[4]:
        name = p[5:5 + p[4]].decode("ascii", "replace")
        return f"{name}:{(p[-2] << 8) | p[-1]}"
    if atyp == 4 and len(p) == 22:
        return f"[{p[4:20].hex()}]:{(p[20] << 8) | p[21]}"
    return None


def socks(flow: Flow, payload: bytes, c2s: bool, cfg: SensorConfig) -> Hit | None:
    if flow.sip in cfg.allowed_proxies or len(payload) < 2:
        return None
    st = flow.scratch()
    b0, n = payload[0], len(payload)
    if c2s:
        if b0 == 5 and 1 <= payload[1] <= 9 and n == 2 + payload[1] and "socks" not in st:
            st["socks"] = 5
            return Hit("socks", 0.6, {"version": 5, "pattern": "client greeting"}, final=False)
        if b0 == 4 and n >= 9 and payload[1] in (1, 2) and payload[-1] == 0 and "socks" not in st:
            st["socks"] = 4
            ev = {"version": 4, "pattern": "client request"}
            if payload[4:7] == b"\0\0\0" and payload[7] != 0:  # SOCKS4a: the name follows the user id
                parts = payload[8:].split(b"\0")
                if len(parts) >= 2 and parts[1]:
                    ev["target"] = parts[1].decode("ascii", "replace") + f":{(payload[2] << 8) | payload[3]}"
            else:
                ev["target"] = ".".join(str(b) for b in payload[4:8]) + f":{(payload[2] << 8) | payload[3]}"
            return Hit("socks", 0.7, ev, final=False)
        if st.get("socks_reply") == 5:
            target = _socks5_target(payload)
            if target:
                return Hit("socks", 0.97, {"version": 5, "pattern": "greeting, method reply, request",
                                           "target": target})
        return None
    ver = st.get("socks")
    if ver == 5 and n == 2 and b0 == 5 and payload[1] in (0, 1, 2, 0xFF):
        st["socks_reply"] = 5
        return Hit("socks", 0.9, {"version": 5, "pattern": "greeting and method reply"}, final=False)
    if ver == 4 and n == 8 and b0 == 0 and 0x5A <= payload[1] <= 0x5D:
        return Hit("socks", 0.95, {"version": 4, "pattern": "request and reply",
                                   "granted": payload[1] == 0x5A})
    return None


# -- HTTP proxies ----------------------------------------------------------------------------------
_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"OPTIONS ", b"DELETE ")


def http_proxy(flow: Flow, payload: bytes, c2s: bool, cfg: SensorConfig) -> Hit | None:
    if not c2s or flow.sip in cfg.allowed_proxies:
        return None
    line = payload[:300].split(b"\r\n", 1)[0]
    if line.startswith(b"CONNECT ") and b" HTTP/1." in line:
        target = line[8:].split(b" ", 1)[0].decode("ascii", "replace")
        return Hit("http_connect", 0.9, {"target": target})
    if line.startswith(_METHODS) and b" http://" in line and b" HTTP/1." in line:
        url = line.split(b" ", 2)[1][:200].decode("ascii", "replace")
        return Hit("http_proxy", 0.8, {"pattern": "absolute-URI request", "url_host": url.split("/")[2]})
    return None


# -- TLS: Tor, DoT, DoH ----------------------------------------------------------------------------
# Tor clients send a random SNI like www.ct7ctrgb6cr7.com (base32 letters and digits 2-7) and no
# ALPN. A digit or a long consonant run keeps ordinary names like www.google.com out.
_TOR_SNI = re.compile(r"^www\.([a-z2-7]{4,25})\.(com|net)$")
_CONSONANTS = re.compile(r"[bcdfghjklmnpqrstvwxz]{4}")
_MAX_HELLO_SEGMENTS = 4


def _tor_shaped(sni: str | None, alpn: tuple[str, ...]) -> bool:
    if not sni or alpn:
        return False
    m = _TOR_SNI.match(sni)
    if not m:
        return False
    label = m.group(1)
    return any(c in "234567" for c in label) or _CONSONANTS.search(label) is not None


def _in_names(sni: str, names: frozenset[str]) -> bool:
    """sni or any parent domain of it is listed."""
    while True:
        if sni in names:
            return True
        dot = sni.find(".")
        if dot < 0:
            return False
        sni = sni[dot + 1:]


def tls(flow: Flow, payload: bytes, c2s: bool, cfg: SensorConfig) -> Hit | None:
    if not c2s:
        return None
    st = flow.scratch()
    buf = st.get("tls")
    if buf is None:
        if not is_handshake(payload):
            return None
        buf = payload
    else:
        buf += payload  # the hello continued in the next segment (assumed in order)
    if len(buf) < needed(buf) and st.get("tls_n", 0) < _MAX_HELLO_SEGMENTS:
        st["tls"] = buf
        st["tls_n"] = st.get("tls_n", 0) + 1
        return None
    st.pop("tls", None)
    st["tls_done"] = True
    hello = parse_client_hello(buf)
    if hello is None:
        return None
    ev = {"sni": hello.sni, "alpn": ",".join(hello.alpn) or None}
    if flow.sip in cfg.tor_relays:
        return Hit("tor", 0.95, {**ev, "pattern": "TLS to a known Tor relay"})
    if flow.sport in cfg.dot_ports:
        return Hit("dot", 0.9, {**ev, "pattern": f"TLS to port {flow.sport}"})
    if hello.sni and _in_names(hello.sni, cfg.doh_names):
        return Hit("doh", 0.9, {**ev, "pattern": "TLS to a known DNS-over-HTTPS resolver name"})
    if flow.sip in cfg.doh_ips and flow.sport == 443:
        return Hit("doh", 0.7, {**ev, "pattern": "HTTPS to a public DNS resolver's address"})
    if cfg.tor_sni_shape and _tor_shaped(hello.sni, hello.alpn):
        return Hit("tor", 0.75, {**ev, "pattern": "random www.*.com SNI without ALPN (Tor link)"})
    return Hit("tls", 0.0, ev)  # ordinary TLS: confidence 0 tells the engine to stop looking

