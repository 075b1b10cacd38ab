"""The sensor: frames in, Detections out. Parsing, the flow table and the detectors meet here.

`Sensor.feed` runs for every frame, so it is written flat: one parse, one dict lookup, counters,
and only for flows still under inspection a call into the detectors. Counters are plain ints,
pushed to Prometheus in batches (`publish`), because a metric increment per packet would cost
more than the rest of the hot path.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.sensor.config import SensorConfig
from agent.sensor.detectors import Hit
from agent.sensor.detectors.network import NatWatch, dhcp, personal_server
from agent.sensor.detectors.p2p import bittorrent_tcp, bittorrent_udp, quic
from agent.sensor.detectors.tunnels import http_proxy, socks, ssh, tls
from agent.sensor.detectors.vpn import esp, gre, ike, l2tp, l2tp_ip, openvpn_tcp, openvpn_udp, pptp, wireguard
from agent.sensor.flows import DONE, INSPECT, WATCH, Flow, FlowTable
from agent.sensor.packets import ACK, DROP_REASONS, SYN, parse

TCP_DETECTORS = (tls, ssh, bittorrent_tcp, pptp, socks, http_proxy, openvpn_tcp)
UDP_DETECTORS = (dhcp, ike, l2tp, wireguard, openvpn_udp, bittorrent_udp, quic)
IP_DETECTORS = {47: gre, 50: esp, 51: esp, 115: l2tp_ip}
TRANSPORTS = {6: "tcp", 17: "udp", 47: "gre", 50: "esp", 51: "ah", 115: "l2tp"}
_WATCHED = frozenset({"ssh"})  # protocols whose flows stay watched after detection (tunnel rule)
_SWEEP_EVERY = 64  # packets between idle-expiry checks (the table itself walks far less often)


def _ip(b: bytes) -> str:
    return str(ipaddress.ip_address(b))


def _mac(b: bytes) -> str | None:
    return ":".join(f"{x:02x}" for x in b) if b else None


@dataclass
class Detection:
    ts: float
    protocol: str
    category: str
    level: int
    confidence: float
    client_ip: str
    client_mac: str | None
    client_port: int
    server_ip: str
    server_port: int
    transport: str
    evidence: dict[str, Any] = field(default_factory=dict)
    packets: int = 0
    bytes: int = 0
    duration: float = 0.0
    first_seen: float = 0.0  # the flow's first packet (ts is when the evidence was seen)
    incident: bool = False  # the config says this protocol, at this confidence, raises an incident

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.ts, UTC)

    def flow_summary(self) -> dict[str, Any]:
        first = datetime.fromtimestamp(self.first_seen or self.ts, UTC).isoformat()
        return {"protocol": self.protocol, "confidence": round(self.confidence, 2), "transport": self.transport,
                "client": self.client_ip, "client_mac": self.client_mac, "client_port": self.client_port,
                "server": self.server_ip, "server_port": self.server_port, "first_seen": first,
                "packets": self.packets, "bytes": self.bytes, "duration_seconds": round(self.duration, 3),
                "evidence": self.evidence}


class Sensor:
    def __init__(self, cfg: SensorConfig, sink: Callable[[Detection], None] | None = None):
        self.cfg = cfg
        self.detections: list[Detection] = []
        self.sink = sink or self.detections.append
        self.table = FlowTable(cfg.max_flows, cfg.idle_timeout, self._expire)
        self.nat = NatWatch(cfg)
        self.packets = 0
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.detected: dict[str, int] = {}
        self._internal: dict[bytes, bool] = {}
        self._published: dict[str, Any] = {}
        self._clock = 0.0

    # -- hot path ------------------------------------------------------------------------------------

    def feed(self, ts: float, frame: bytes, linktype: int, snapped: bool = False) -> None:
        self.packets += 1
        r = parse(linktype, frame, snapped)
        if isinstance(r, str):
            self.dropped[r] += 1
            return
        proto, src, dst, sp, dp, ttl, payload, flags, mac = r
        key = (src, sp, dst, dp, proto) if src < dst or (src == dst and sp <= dp) else (dst, dp, src, sp, proto)
        f = self.table.flows.get(key)
        if f is None:
            f = self._new_flow(key, proto, src, sp, dst, dp, ttl, flags, ts)
        if ts > f.last:
            f.last = ts
        c2s = src == f.cip and sp == f.cport
        if c2s:
            f.c_pkts += 1
            f.c_bytes += len(payload)
        else:
            f.s_pkts += 1
            f.s_bytes += len(payload)
        if self.packets % _SWEEP_EVERY == 0:
            self._clock = max(self._clock, ts)
            self.table.sweep(self._clock)
        if f.mode != INSPECT:
            if f.mode == WATCH and (f.c_pkts + f.s_pkts) & 63 == 0:
                self._check_tunnel(f, ts)
            return
        if c2s and not f.cmac:
            f.cmac = mac
        if proto == 6:
            if flags & SYN:
                if not flags & ACK:
                    f.syn_from_client = c2s
                elif not c2s and f.syn_from_client and not f.server_accepted:
                    f.server_accepted = True
                    hit = personal_server(f, self.cfg, self._is_internal(f.cip), self._is_internal(f.sip))
                    if hit:
                        self._emit(f, hit, ts, keep_inspecting=True)
            if not payload:
                return
            dets: tuple[Any, ...] = TCP_DETECTORS
        elif proto == 17:
            if not payload:
                return
            dets = UDP_DETECTORS
        else:
            det = IP_DETECTORS.get(proto)
            dets = (det,) if det else ()
        self._inspect(f, payload, c2s, ts, dets)

    def _inspect(self, f: Flow, payload: bytes, c2s: bool, ts: float, dets: tuple[Any, ...]) -> None:
        cfg = self.cfg
        for det in dets:
            hit = det(f, payload, c2s, cfg)
            if hit is None:
                continue
            if hit.final:
                if hit.confidence <= 0:
                    self._settle(f, ts)  # conclusively nothing we look for (plain TLS)
                else:
                    self._emit(f, hit, ts)
                return
            if f.best is None or hit.confidence > f.best[0].confidence:
                f.best = (hit, ts)
        f.seen += 1
        if f.seen >= cfg.inspect_packets:
            self._settle(f, ts)

    # -- flows ---------------------------------------------------------------------------------------

    def _is_internal(self, ip: bytes) -> bool:
        v = self._internal.get(ip)
        if v is None:
            if len(self._internal) > 65_536:
                self._internal.clear()
            addr = ipaddress.ip_address(ip)
            v = self._internal[ip] = any(addr in n for n in self.cfg.client_networks if n.version == addr.version)
        return v

    def _new_flow(self, key: tuple[Any, ...], proto: int, src: bytes, sp: int, dst: bytes, dp: int, ttl: int,
                  flags: int, ts: float) -> Flow:
        if proto == 6 and flags & SYN:
            src_is_client = not flags & ACK  # SYN: the sender opened it; SYN-ACK: the receiver did
        else:
            si, di = self._is_internal(src), self._is_internal(dst)
            if si != di:
                src_is_client = si  # a school device talking to the outside world
            elif dp < 1024 <= sp:
                src_is_client = True
            elif sp < 1024 <= dp:
                src_is_client = False
            else:
                src_is_client = True  # the first packet we saw; for UDP usually the request
        f = Flow(key, proto, src, sp, dst, dp, ts) if src_is_client else Flow(key, proto, dst, dp, src, sp, ts)
        self.table.add(f)
        if (src_is_client and self.cfg.nat_enabled and (proto != 6 or flags & SYN) and self._is_internal(src)):
            hit = self.nat.observe(src, ttl)
            if hit:
                self._emit(f, hit, ts, keep_inspecting=True)
        return f

    def _settle(self, f: Flow, ts: float) -> None:
        """Stop inspecting: report the best partial evidence, if any."""
        best, f.best = f.best, None
        if best is not None:
            self._emit(f, best[0], best[1])
        elif f.mode == INSPECT:
            f.mode = DONE

    def _expire(self, f: Flow) -> None:
        if f.mode == INSPECT:
            self._settle(f, f.last)
        if f.mode == WATCH:
            self._check_tunnel(f, f.last)

    def _check_tunnel(self, f: Flow, ts: float) -> None:
        total = f.c_bytes + f.s_bytes
        if total >= self.cfg.ssh_tunnel_bytes and f.duration >= self.cfg.ssh_tunnel_seconds:
            f.mode = DONE
            self._emit(f, Hit("ssh_tunnel", 0.8, {"pattern": "long-lived, high-volume SSH", "bytes": total,
                                                  "seconds": round(f.duration, 1)}), ts, keep_inspecting=True)

    # -- output --------------------------------------------------------------------------------------

    def _emit(self, f: Flow, hit: Hit, ts: float, keep_inspecting: bool = False) -> None:
        if f.reported is None:
            f.reported = set()
        if not keep_inspecting:
            f.best = None
            f.mode = WATCH if hit.protocol in _WATCHED else DONE
        if hit.protocol in f.reported:
            return
        f.reported.add(hit.protocol)
        if hit.subject is not None and hit.subject != f.cip:  # blame the other end (a server, a DHCP server)
            cip, cport, cmac, sip, sport = f.sip, f.sport, None, f.cip, f.cport
        else:
            cip, cport, cmac, sip, sport = f.cip, f.cport, _mac(f.cmac), f.sip, f.sport
        action = self.cfg.action(hit.protocol)
        det = Detection(
            ts=ts, protocol=hit.protocol, category=action.category, level=action.level,
            confidence=hit.confidence, client_ip=_ip(cip), client_mac=cmac, client_port=cport,
            server_ip=_ip(sip), server_port=sport, transport=TRANSPORTS.get(f.proto, str(f.proto)),
            evidence={k: v for k, v in hit.evidence.items() if v is not None},
            packets=f.c_pkts + f.s_pkts, bytes=f.c_bytes + f.s_bytes, duration=f.duration, first_seen=min(f.first, ts),
            incident=action.incident and hit.confidence >= self.cfg.min_confidence,
        )
        self.detected[hit.protocol] = self.detected.get(hit.protocol, 0) + 1
        self.sink(det)

    def finish(self) -> None:
        """End of input: settle every flow still in the table, publish the last counters."""
        self.table.flush()
        self.publish()

    # -- metrics -------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {"packets": self.packets, "flows": self.table.created, "active_flows": len(self.table),
                "evictions": self.table.evicted, "expired": self.table.expired,
                "dropped": {k: v for k, v in self.dropped.items() if v}, "detections": dict(self.detected)}

    def publish(self) -> None:
        """Push counter deltas since the last call to Prometheus."""
        from esafety import metrics

        last = self._published
        metrics.SENSOR_PACKETS.inc(self.packets - last.get("packets", 0))
        metrics.SENSOR_FLOWS.inc(self.table.created - last.get("flows", 0))
        metrics.SENSOR_EVICTIONS.inc(self.table.evicted - last.get("evicted", 0))
        metrics.SENSOR_ACTIVE_FLOWS.set(len(self.table))
        for reason, n in self.dropped.items():
            if n - last.get("drop_" + reason, 0):
                metrics.SENSOR_DROPPED.labels(reason=reason).inc(n - last.get("drop_" + reason, 0))
            last["drop_" + reason] = n
        for proto, n in self.detected.items():
            if n - last.get("det_" + proto, 0):
                metrics.SENSOR_DETECTIONS.labels(protocol=proto).inc(n - last.get("det_" + proto, 0))
            last["det_" + proto] = n
        last.update(packets=self.packets, flows=self.table.created, evicted=self.table.evicted)
