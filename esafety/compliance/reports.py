"""Apply one authenticated, validated agent report to the store, in the caller's transaction.

Order matters: the sequence number is claimed first with a conditional UPDATE (so two copies of a
report racing each other cannot both pass, on SQLite or PostgreSQL); then the device, its checks
and their transitions, its sessions and identity bindings, its rolled-up state; then incidents for
critical checks that turned to fail and for tamper signs. Nothing is half-applied: the caller
commits once, or rolls everything back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from esafety.compliance import alerts, sessions, state
from esafety.compliance.agentsettings import compliance_of, timing_of
from esafety.compliance.catalogue import BY_ID
from esafety.compliance.tables import Device, DeviceCheck, DeviceCheckEvent, DeviceMac
from esafety.compliance.wire import ReportIn
from esafety.incidents.model import IncidentReport
from esafety.policy.schema import Policy

MONITOR_CHECK = "safeguarding_monitor"


class Replayed(Exception):
    """The report's seq is not above the last accepted one: a replay, or out of order."""

    def __init__(self, last_seq: int):
        super().__init__(f"seq must be above {last_seq}")
        self.last_seq = last_seq


@dataclass
class Outcome:
    accepted_seq: int
    want_snapshot: bool
    state: str
    user: str | None
    incidents: list[int] = field(default_factory=list)


def critical(check_id: str) -> bool:
    spec = BY_ID.get(check_id)
    return bool(spec and spec.critical)


def title(check_id: str) -> str:
    spec = BY_ID.get(check_id)
    return spec.title if spec else check_id


def clause(check_id: str) -> str:
    spec = BY_ID.get(check_id)
    return spec.aup_clause if spec else ""


def _claim_seq(session: Session, device: Device, seq: int) -> int:
    """Returns the previous last_seq, or raises Replayed."""
    prev = device.last_seq
    r = session.execute(update(Device).where(Device.id == device.id, Device.last_seq < seq).values(last_seq=seq)
                        .execution_options(synchronize_session=False))
    if r.rowcount != 1:  # type: ignore[attr-defined]
        last = session.scalar(select(Device.last_seq).where(Device.id == device.id)
                              .execution_options(populate_existing=True))
        raise Replayed(int(last or prev))
    device.last_seq = seq
    return prev


def _since(checked_at: datetime, prev_heard: datetime, now: datetime) -> datetime:
    """When a new status began: the agent's clock, but never before we last heard from the device
    (a report queued offline is older than now; a wrong clock must not stretch or skip the grace)."""
    return max(prev_heard, min(state.aware(checked_at), now))


def accept(session: Session, device: Device, report: ReportIn, client_ip: str | None, policy: Policy | None,
           now: datetime) -> Outcome:
    prev_seq = _claim_seq(session, device, report.seq)
    timing = timing_of(policy)
    prev_heard = state.last_heard(device)
    prev_agent_version = device.agent_version
    device.last_seen, device.hostname, device.last_ip = now, report.hostname, client_ip or device.last_ip
    device.agent_version = report.agent_version or device.agent_version
    device.last_user = report.users[0].name[:120] if report.users else None
    device.tamper_raised_at = None  # heard from: a new silence is a new episode
    if report.kind == "snapshot":
        device.snapshot_at, device.needs_snapshot = now, False
    elif report.seq > prev_seq + 1:
        device.needs_snapshot = True  # reports were lost on the way (the agent's queue overflowed)
    _remember_macs(session, device, report)

    excepted = state.active_exceptions(session, [device.id], now).get(device.id, frozenset())
    turned_fail: list[alerts.FailedCheck] = []
    tamper_why: list[str] = []
    stored = {c.check_id: c for c in session.scalars(select(DeviceCheck).where(DeviceCheck.device_id == device.id))}
    for c in report.checks:
        row = stored.get(c.id)
        old = row.status if row else None
        if row is None:
            row = DeviceCheck(device_id=device.id, check_id=c.id, status=c.status, critical=critical(c.id),
                              evidence=c.evidence, duration_ms=c.duration_ms, checked_at=c.checked_at,
                              since=_since(c.checked_at, prev_heard, now))
            session.add(row)
        else:
            row.evidence, row.duration_ms, row.checked_at, row.critical = (c.evidence, c.duration_ms, c.checked_at,
                                                                           critical(c.id))
            if old != c.status:
                row.status, row.since = c.status, _since(c.checked_at, prev_heard, now)
        if old != c.status:
            session.add(DeviceCheckEvent(device_id=device.id, check_id=c.id, from_status=old, to_status=c.status,
                                         at=row.since, seq=report.seq, evidence=c.evidence))
            if c.status == "fail" and row.critical and c.id not in excepted:
                if c.id == MONITOR_CHECK:
                    tamper_why.append("the safeguarding monitor check fails (stopped, removed or modified)")
                else:
                    turned_fail.append(alerts.FailedCheck(c.id, title(c.id), clause(c.id), c.evidence))
    if report.kind == "snapshot":
        dropped = sorted(set(stored) - {c.id for c in report.checks})
        if dropped:  # checks this agent no longer runs (platform changed, catalogue trimmed)
            session.execute(delete(DeviceCheck).where(DeviceCheck.device_id == device.id,
                                                      DeviceCheck.check_id.in_(dropped)))
            for cid in dropped:
                session.add(DeviceCheckEvent(device_id=device.id, check_id=cid, from_status=stored[cid].status,
                                             to_status="removed", at=now, seq=report.seq,
                                             note="not in the agent's latest snapshot"))
    tamper_why += _monitor_tamper(device, report, prev_agent_version, policy)
    session.flush()

    user = sessions.record(session, device, report, client_ip, timing.stale_after, now)
    result = state.refresh(session, device, timing, now, report.seq)

    raised: list[IncidentReport] = []
    if turned_fail:
        raised.append(alerts.noncompliance(device, user, turned_fail, report.seq, now, policy))
    if tamper_why:
        raised += alerts.tamper(device, user, "; ".join(tamper_why), f"report:{report.seq}", now, policy,
                                {"seq": report.seq, "monitor": report.monitor.model_dump() if report.monitor else None})
    created = alerts.store(session, raised, policy)
    want = report.kind != "snapshot" and (device.snapshot_at is None or device.needs_snapshot)
    return Outcome(report.seq, want, result.state.value, user, [i.id for i in created])


def _remember_macs(session: Session, device: Device, report: ReportIn) -> None:
    macs = {a.mac for a in report.addresses if a.mac}
    new = sorted(macs - set(device.macs or []))
    if not new:
        return
    device.macs = sorted(set(device.macs or []) | macs)
    have = set(session.scalars(select(DeviceMac.mac).where(DeviceMac.device_id == device.id)))
    for mac in new:
        if mac not in have:
            session.add(DeviceMac(mac=mac, device_id=device.id))


def _monitor_tamper(device: Device, report: ReportIn, prev_agent_version: str, policy: Policy | None) -> list[str]:
    """The monitor's hash against the school's pinned one, and against its own last value."""
    if report.monitor is None:
        return []
    new, old = report.monitor.sha256.lower(), device.monitor_sha256
    device.monitor_sha256 = new
    if new == old:
        return []
    pinned = compliance_of(policy).monitor_sha256
    if pinned and new != pinned:
        return [f"the safeguarding monitor's hash {new[:12]}... is not the school's ({pinned[:12]}...)"]
    if old and not pinned and report.agent_version == prev_agent_version:
        return [f"the safeguarding monitor's hash changed ({old[:12]}... -> {new[:12]}...) without an upgrade"]
    return []
