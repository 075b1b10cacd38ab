"""Credential sharing: one account in use from more devices than allowed at once, or from many
client IPs in a short window. Raised as an incident with the evidence for IT to review; nothing
is blocked automatically (a teacher demonstrating on several machines looks the same at first).

Signals, over the last `window`:
* devices: distinct device names on the account's requests in the access log (agent- and
  WiFi-attributed traffic carries one), plus devices whose agents report the account signed in
  now (ip_bindings with source "agent");
* client IPs: distinct client IPs on the account's requests, including proxy-authenticated ones.
Allowed devices: the larger of `max_devices` and the person's registered devices plus one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from esafety import metrics
from esafety.incidents.ingest import ingest
from esafety.incidents.model import IncidentReport
from esafety.policy.schema import Policy
from esafety.registrations.states import ALLOWED_STATES
from esafety.registrations.tables import Registration
from esafety.store.models import AccessLog, IpBinding

CATEGORY = "credential_sharing"
LEVEL = 3
EVIDENCE_LIST_MAX = 50


@dataclass(frozen=True)
class SharingRules:
    window: timedelta = timedelta(minutes=15)
    max_devices: int = 3
    max_ips: int = 6


@dataclass
class Usage:
    devices: set[str] = field(default_factory=set)
    ips: set[str] = field(default_factory=set)
    first: datetime | None = None
    last: datetime | None = None
    requests: int = 0


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def usage(session: Session, since: datetime, now: datetime) -> dict[str, Usage]:
    out: dict[str, Usage] = defaultdict(Usage)
    rows = session.execute(
        select(AccessLog.username, AccessLog.device, AccessLog.client_ip, func.count(), func.min(AccessLog.ts),
               func.max(AccessLog.ts))
        .where(AccessLog.ts >= since, AccessLog.ts <= now, AccessLog.username.is_not(None))
        .group_by(AccessLog.username, AccessLog.device, AccessLog.client_ip))
    for username, device, ip, n, first, last in rows:
        if not username:
            continue
        u = out[username]
        if device:
            u.devices.add(device)
        u.ips.add(ip)
        u.requests += int(n)
        u.first = min(filter(None, (u.first, _aware(first)))) if first else u.first
        u.last = max(filter(None, (u.last, _aware(last)))) if last else u.last
    for username, device, expires in session.execute(
            select(IpBinding.username, IpBinding.device, IpBinding.expires_at).where(IpBinding.source == "agent")):
        if device and (expires is None or _aware(expires) > now):
            out[username].devices.add(device)
    return out


def registered_devices(session: Session, usernames: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    if usernames:
        for username, name in session.execute(select(Registration.username, Registration.device_name).where(
                Registration.username.in_(usernames), Registration.state.in_([s.value for s in ALLOWED_STATES]))):
            out[username].append(name)
    return out


def detect(session: Session, rules: SharingRules, now: datetime | None = None) -> list[IncidentReport]:
    now = now or datetime.now(UTC)
    since = now - rules.window
    seen = usage(session, since, now)
    suspects = [u for u, x in seen.items() if len(x.devices) > rules.max_devices or len(x.ips) > rules.max_ips]
    regs = registered_devices(session, suspects)
    bucket = int(now.timestamp() // max(rules.window.total_seconds(), 1))
    reports = []
    for username in sorted(suspects):
        u = seen[username]
        allowed = max(rules.max_devices, len(regs.get(username, [])) + 1)
        signals = [s for s, hit in (("devices", len(u.devices) > allowed), ("ips", len(u.ips) > rules.max_ips)) if hit]
        if not signals:
            continue
        minutes = int(rules.window.total_seconds() // 60)
        reports.append(IncidentReport(
            source="proxy", category=CATEGORY, level=LEVEL, subject=username,
            summary=(f"Account {username} in use from {len(u.devices)} devices and {len(u.ips)} client IPs within "
                     f"{minutes} minutes (allowed: {allowed} devices, {rules.max_ips} IPs): possible credential "
                     "sharing, for review."),
            evidence={
                "signals": signals, "window_minutes": minutes, "window_start": since.isoformat(),
                "window_end": now.isoformat(), "devices": sorted(u.devices)[:EVIDENCE_LIST_MAX],
                "client_ips": sorted(u.ips)[:EVIDENCE_LIST_MAX], "device_count": len(u.devices),
                "client_ip_count": len(u.ips), "allowed_devices": allowed, "max_client_ips": rules.max_ips,
                "registered_devices": sorted(regs.get(username, [])), "requests": u.requests,
                "first_seen": u.first.isoformat() if u.first else None,
                "last_seen": u.last.isoformat() if u.last else None,
                "action": "none taken automatically; revoke with reason credential_sharing if confirmed",
            },
            occurred_at=now, key=f"credshare:{username}:{bucket}"[:64],
        ))
    return reports


def raise_incidents(session: Session, rules: SharingRules, policy: Policy | None,
                    now: datetime | None = None) -> int:
    """Detect and store; the incident worker's pipeline then chains, routes and emails them."""
    reports = detect(session, rules, now)
    created = ingest(session, reports, policy) if reports else []
    for inc in created:
        for signal in inc.evidence.get("signals", []):
            metrics.REGISTRATION_SHARING_DETECTIONS.labels(signal=signal).inc()
    return len(created)
