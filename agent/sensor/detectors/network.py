"""Devices that behave like network equipment: rogue DHCP servers, NAT routers/hotspots behind a
client (TTL), and personal servers (a client device accepting inbound connections)."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

from agent.sensor.config import SensorConfig
from agent.sensor.detectors import Hit
from agent.sensor.flows import Flow

_DHCP_MAGIC = b"\x63\x82\x53\x63"
_DHCP_TYPES = {2: "OFFER", 5: "ACK"}


def _ip(b: bytes) -> str:
    return str(ipaddress.ip_address(b))


def dhcp(flow: Flow, payload: bytes, c2s: bool, cfg: SensorConfig) -> Hit | None:
    """A DHCP OFFER/ACK from a server the school has not listed (only when it has listed some)."""
    if not cfg.dhcp_allowed or len(payload) < 244 or payload[0] != 2 or payload[236:240] != _DHCP_MAGIC:
        return None
    if 67 not in (flow.cport, flow.sport):
        return None
    msg, server, router = 0, None, None
    p, n = 240, len(payload)
    while p < n:
        code = payload[p]
        if code == 0:
            p += 1
            continue
        if code == 255 or p + 1 >= n:
            break
        ln = payload[p + 1]
        val = payload[p + 2:p + 2 + ln]
        if len(val) < ln:
            break  # option runs past the datagram
        if code == 53 and ln == 1:
            msg = val[0]
        elif code == 54 and ln == 4:
            server = val
        elif code == 3 and ln >= 4:
            router = val[:4]
        p += 2 + ln
    if msg not in _DHCP_TYPES:
        return None
    sender = flow.cip if flow.cport == 67 else flow.sip
    server = server or sender
    if server in cfg.dhcp_allowed or sender in cfg.dhcp_allowed:
        return None
    ev = {"message": _DHCP_TYPES[msg], "server_id": _ip(server), "offered": _ip(payload[16:20])}
    if router:
        ev["router"] = _ip(router)
    return Hit("rogue_dhcp", 0.9, ev, subject=sender)


def personal_server(flow: Flow, cfg: SensorConfig, client_internal: bool, server_internal: bool) -> Hit | None:
    """Called on the SYN-ACK of a flow whose SYN we saw: the responder accepted a connection."""
    if not cfg.personal_enabled or not server_internal:
        return None
    if client_internal and not cfg.personal_from_inside:
        return None
    if flow.sport in cfg.personal_ignore_ports:
        return None
    if cfg.personal_allowed:
        addr = ipaddress.ip_address(flow.sip)
        if any(addr in n for n in cfg.personal_allowed if n.version == addr.version):
            return None
    return Hit("personal_server", 0.8 if not client_internal else 0.6,
               {"pattern": "client device accepted an inbound TCP connection", "listening_port": flow.sport,
                "from": _ip(flow.cip)}, subject=flow.sip)


def _initial_ttl(ttl: int) -> int:
    return 32 if ttl <= 32 else 64 if ttl <= 64 else 128 if ttl <= 128 else 255


class NatWatch:
    """Per client address: how far away its packets start (TTL), and from how many OS families.

    A device on the sensor's segment sends TTL 64/128/255 minus `expected_hops`. One hop more means
    a router between the device and us: a hotspot, travel router or phone tethering. Two TTL
    families from one address (64 and 128) mean several operating systems share it. Bounded: the
    least recently seen address is forgotten first.
    """

    def __init__(self, cfg: SensorConfig, max_clients: int = 65_536):
        self.cfg = cfg
        self.max_clients = max_clients
        self.stats: OrderedDict[bytes, list[int]] = OrderedDict()  # ip -> [direct, extra, f64, f128, f255, done]

    def observe(self, ip: bytes, ttl: int) -> Hit | None:
        s = self.stats.get(ip)
        if s is None:
            if len(self.stats) >= self.max_clients:
                self.stats.popitem(last=False)
            s = self.stats[ip] = [0, 0, 0, 0, 0, 0]
        else:
            self.stats.move_to_end(ip)
        if s[5]:
            return None
        init = _initial_ttl(ttl)
        hops = init - ttl
        if hops == self.cfg.nat_expected_hops:
            s[0] += 1
        elif hops == self.cfg.nat_expected_hops + 1:
            s[1] += 1
        s[2 + (0 if init <= 64 else 1 if init == 128 else 2)] += 1
        need = self.cfg.nat_min_packets
        families = sum(1 for c in s[2:5] if c >= need)
        if s[1] >= need:
            s[5] = 1
            both = s[0] >= need
            return Hit("nat_device", 0.85 if both else 0.7,
                       {"pattern": "own and forwarded traffic (TTL one lower)" if both else
                        "traffic arrives one hop further than expected (TTL)",
                        "direct_flows": s[0], "forwarded_flows": s[1], "ttl": ttl}, subject=ip)
        if families >= 2:
            s[5] = 1
            return Hit("nat_device", 0.75, {"pattern": "several OS families (TTL 64/128/255) behind one address",
                                            "ttl64_flows": s[2], "ttl128_flows": s[3], "ttl255_flows": s[4]},
                       subject=ip)
        return None
