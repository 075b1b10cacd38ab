"""Where detections go: a line (or JSON) on stdout, and an incident in the store.

Incidents carry an idempotency key derived from the flow (protocol, both ends, first packet time),
so reading the same capture twice, or replaying a spool, stores each detection once; bursts from
one pupil are merged by esafety.incidents.ingest as for every other source.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from agent.sensor.engine import Detection

if TYPE_CHECKING:
    from esafety.policy.schema import Policy

log = logging.getLogger("esafety.sensor")

NAMES = {
    "openvpn": "OpenVPN", "wireguard": "WireGuard", "ipsec": "IPsec", "l2tp": "L2TP", "pptp": "PPTP",
    "ssh": "SSH", "ssh_tunnel": "SSH tunnel", "tor": "Tor", "socks": "SOCKS proxy",
    "http_connect": "HTTP CONNECT proxy", "http_proxy": "HTTP proxy", "dot": "DNS over TLS",
    "doh": "DNS over HTTPS", "quic": "QUIC",
    "bittorrent": "BitTorrent", "personal_server": "Personal server", "rogue_dhcp": "Rogue DHCP server",
    "nat_device": "NAT device / hotspot",
}


def _evidence_text(ev: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in ev.items())


def format_line(d: Detection) -> str:
    who = d.client_ip + (f" ({d.client_mac})" if d.client_mac else "")
    server = f"[{d.server_ip}]" if ":" in d.server_ip else d.server_ip
    return (f"{d.time.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z  {who} -> {server}:{d.server_port}/{d.transport}  "
            f"{d.protocol}  confidence={d.confidence:.2f}  {_evidence_text(d.evidence)}")


def format_json(d: Detection) -> str:
    doc = {"time": d.time.isoformat(), **d.flow_summary(), "category": d.category, "level": d.level,
           "incident": d.incident}
    return json.dumps(doc, sort_keys=False, default=str)


class Printer:
    def __init__(self, out: IO[str], as_json: bool = False):
        self.out = out
        self.as_json = as_json

    def __call__(self, d: Detection) -> None:
        self.out.write((format_json(d) if self.as_json else format_line(d)) + "\n")
        self.out.flush()


def incident_key(d: Detection) -> str:
    basis = "|".join(str(x) for x in ("sensor", d.protocol, d.client_ip, d.client_port, d.server_ip, d.server_port,
                                       d.transport, f"{d.ts:.6f}"))
    return hashlib.sha256(basis.encode()).hexdigest()[:40]


def summary(d: Detection) -> str:
    what = d.evidence.get("pattern") or d.evidence.get("sni") or d.evidence.get("target") or ""
    text = (f"{NAMES.get(d.protocol, d.protocol)} from {d.client_ip} to {d.server_ip}:{d.server_port}/{d.transport} "
            f"(confidence {d.confidence:.0%})")
    return f"{text}: {what}" if what else text


class IncidentSink:
    """Detections -> IncidentReports -> the store, through the shared batch writer."""

    def __init__(self, database_url: str, policy_path: str | Path, spool_dir: Path, live: bool = False):
        from esafety.identity import IdentityResolver
        from esafety.policy.loader import PolicyInvalid, load_policy
        from esafety.store.writer import BatchWriter

        self.policy: Policy | None
        try:
            self.policy = load_policy(policy_path)
        except (PolicyInvalid, OSError) as exc:
            log.warning("policy not loaded, incidents will not be routed: %s", exc)
            self.policy = None
        default_group = self.policy.default_group if self.policy else "unknown"
        self.identity = IdentityResolver(database_url, default_group)
        try:
            self.identity.refresh()
        except Exception as exc:  # the store may be away; detections still spool
            log.warning("identity refresh failed: %s", exc)
        if live:
            self.identity.start()
        policy = self.policy
        self.writer = BatchWriter(database_url, spool_dir, lambda: policy)
        self.writer.start()
        self.raised = 0

    def __call__(self, d: Detection) -> None:
        from esafety.incidents.model import IncidentReport

        if not d.incident:
            return
        who = self.identity.resolve(d.client_ip)
        self.writer.raise_incident(IncidentReport(
            source="sensor", category=d.category, level=d.level, summary=summary(d), subject=who.user,
            device=who.device or d.client_mac, client_ip=d.client_ip, evidence=d.flow_summary(),
            occurred_at=d.time, key=incident_key(d),
        ))
        self.raised += 1

    def close(self) -> None:
        self.writer.flush()
        self.writer.stop()
        self.identity.stop()


class Tee:
    """Send each detection to several sinks."""

    def __init__(self, *sinks: Any):
        self.sinks = [s for s in sinks if s is not None]

    def __call__(self, d: Detection) -> None:
        for s in self.sinks:
            s(d)
