"""The periodic pass over all devices: states that time alone changes (stale, grace over, exception
expired), tamper incidents for agents silenced while their device is still on the network,
expiry of agent identity bindings, and the Prometheus gauges.

"Still on the network" needs evidence, so that a laptop switched off for the weekend is only
stale. Two signals:
* requests through the proxy from the device's last addresses after it missed its heartbeat
  (traffic the proxy attributed to another device, or from an address another agent has reported
  since, is not counted: DHCP hands addresses on);
* its DHCP lease renewed after it went silent (ESAFETY_DHCP_LEASES, the file WiFi registrations
  read): the sweep remembers each live device's lease expiry, and a later expiry while the agent
  is silent means the device asked the DHCP server for more time, so it is switched on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from esafety import metrics
from esafety.compliance import alerts, sessions, state
from esafety.compliance.agentsettings import timing_of
from esafety.compliance.rollup import DeviceState, Rollup, Timing
from esafety.compliance.tables import AgentSession, Device, DeviceCheck
from esafety.policy.schema import Policy
from esafety.registrations.leases import Lease, current
from esafety.store.models import AccessLog

AGE_BUCKETS = (("5m", timedelta(minutes=5)), ("1h", timedelta(hours=1)), ("1d", timedelta(days=1)))


@dataclass
class LeaseWatch:
    """Lease expiries per device as last seen while its agent was reporting (kept by the worker)."""

    leases: dict[str, Lease] = field(default_factory=dict)  # MAC -> current lease, this pass
    seen: dict[str, tuple[datetime, datetime | None]] = field(default_factory=dict)  # device -> (heard, expiry)

    def load(self, leases: list[Lease], now: datetime) -> None:
        self.leases = current(leases, now)

    def expiry(self, device: Device) -> tuple[Lease | None, datetime | None]:
        found = [self.leases[m] for m in device.macs or [] if m in self.leases]
        if not found:
            return None, None
        lease = max(found, key=lambda x: x.expires or datetime.max.replace(tzinfo=UTC))
        return lease, lease.expires

    def renewed(self, device: Device, heard: datetime, stale: bool) -> dict[str, Any] | None:
        lease, expiry = self.expiry(device)
        before = self.seen.get(device.id)
        if not stale or before is None or before[0] != heard:
            self.seen[device.id] = (heard, expiry)  # alive (or first seen silent): remember, judge later
            return None
        if lease is None or expiry is None or before[1] is None or expiry <= before[1]:
            return None
        return {"signal": "dhcp_lease_renewed", "client_ip": lease.ip, "mac": lease.mac,
                "lease_expires": expiry.isoformat(), "expiry_when_last_heard": before[1].isoformat(),
                "last_report": heard.isoformat()}


@dataclass
class SweepResult:
    changed: int = 0
    tamper: list[str] = field(default_factory=list)  # device ids
    bindings_expired: int = 0


def presence(session: Session, device: Device, timing: Timing, now: datetime) -> dict[str, Any] | None:
    """Evidence that the device was on the network after it missed its heartbeat, or None."""
    heard = state.last_heard(device)
    missed = heard + timing.heartbeat
    ips = sorted(set(session.scalars(select(AgentSession.ip).where(
        AgentSession.device_id == device.id, AgentSession.last_seen >= heard - timing.stale_after))))
    if not ips:
        return None
    taken = set(session.scalars(select(AgentSession.ip).where(
        AgentSession.ip.in_(ips), AgentSession.device_id != device.id, AgentSession.last_seen > heard)))
    ips = [ip for ip in ips if ip not in taken]
    if not ips:
        return None
    row = session.execute(
        select(AccessLog.client_ip, func.count(), func.min(AccessLog.ts), func.max(AccessLog.ts))
        .where(AccessLog.ts > missed, AccessLog.ts <= now, AccessLog.client_ip.in_(ips),
               or_(AccessLog.device.is_(None), AccessLog.device == device.hostname[:120]))
        .group_by(AccessLog.client_ip).order_by(func.count().desc()).limit(1)).first()
    if row is None:
        return None
    ip, n, first, last = row
    return {"signal": "proxy_traffic", "client_ip": ip, "requests": int(n),
            "first_request": state.aware(first).isoformat(), "last_request": state.aware(last).isoformat(),
            "last_report": heard.isoformat()}


def _silence_why(silent: timedelta, ev: dict[str, Any]) -> str:
    mins = int(silent.total_seconds() // 60)
    seen = (f"{ev['requests']} requests through the proxy from {ev['client_ip']}" if ev["signal"] == "proxy_traffic"
            else f"its DHCP lease for {ev['client_ip']} was renewed")
    return (f"the agent stopped reporting ({mins} min without a heartbeat) while the device stayed on the "
            f"network ({seen})")


def sweep(session: Session, policy: Policy | None, now: datetime, leases: LeaseWatch | None = None) -> SweepResult:
    """One pass, in the caller's transaction. `leases`: the worker's LeaseWatch, loaded for this pass."""
    timing = timing_of(policy)
    result = SweepResult()
    before = {d.id: d.state for d in session.scalars(select(Device).where(Device.retired_at.is_(None)))}
    judged = state.refresh_all(session, timing, now)
    result.changed = sum(1 for d, _r in judged if before.get(d.id) != d.state)
    for device, rollup in judged:
        renewed = leases.renewed(device, state.last_heard(device), rollup.stale) if leases is not None else None
        if not rollup.stale or device.tamper_raised_at is not None:
            continue
        ev = presence(session, device, timing, now) or renewed
        if ev is None:
            continue
        user = session.scalar(select(AgentSession.username).where(
            AgentSession.device_id == device.id, AgentSession.username != "")
            .order_by(AgentSession.last_seen.desc()).limit(1))
        why = _silence_why(rollup.silent_for, ev)
        episode = f"silence:{state.last_heard(device).isoformat()}"
        alerts.store(session, alerts.tamper(device, user, why, episode, now, policy, ev), policy)
        device.tamper_raised_at = now
        result.tamper.append(device.id)
    result.bindings_expired, _ = sessions.expire(session, now)
    collect(session, judged, now)
    session.flush()
    return result


def collect(session: Session, judged: list[tuple[Device, Rollup]], now: datetime) -> None:
    """Set the device gauges; every label value is set each time, so emptied series drop to zero."""
    from esafety.compliance.catalogue import CATALOGUE  # noqa: PLC0415

    states = {s.value: 0 for s in DeviceState}
    failing: dict[str, int] = {spec.id: 0 for spec in CATALOGUE}
    ages = {name: 0 for name, _ in AGE_BUCKETS} | {"older": 0}
    stale = 0
    for device, rollup in judged:
        states[rollup.state.value] += 1
        stale += rollup.stale
        for check in rollup.failing():
            if check in failing:  # catalogue checks only: label values stay a small fixed set
                failing[check] += 1
        age = now - state.last_heard(device) if device.last_seen else None
        bucket = next((name for name, limit in AGE_BUCKETS if age is not None and age <= limit), "older")
        ages[bucket] += 1
    for name, n in states.items():
        metrics.DEVICES.labels(state=name).set(n)
    for check, n in failing.items():
        metrics.DEVICES_FAILING.labels(check=check).set(n)
    for name, n in ages.items():
        metrics.DEVICES_BY_REPORT_AGE.labels(age=name).set(n)
    metrics.DEVICE_STALE.set(stale)


def failing_counts(session: Session) -> dict[str, int]:
    """Checks failing per check id over active devices (no exceptions applied): for the list page."""
    rows = session.execute(select(DeviceCheck.check_id, func.count()).join(Device, Device.id == DeviceCheck.device_id)
                           .where(Device.retired_at.is_(None), DeviceCheck.status == "fail")
                           .group_by(DeviceCheck.check_id))
    return {c: int(n) for c, n in rows}
