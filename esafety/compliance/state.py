"""Stored rows -> typed facts -> rollup, and the device's state transition when it changes.

Shared by the report handler (a report changes checks) and the sweep (time alone moves devices
into stale, out of grace, or out of an expired exception).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from esafety.compliance.catalogue import BY_ID
from esafety.compliance.rollup import CheckFact, CheckStatus, DeviceState, Rollup, Timing, rollup
from esafety.compliance.tables import Device, DeviceCheck, DeviceCheckEvent, DeviceException


def aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def facts(rows: list[DeviceCheck]) -> list[CheckFact]:
    """Catalogue checks only: an id from a newer agent is stored and shown, but not rolled up
    until this server's catalogue knows what it means (esafety/compliance/catalogue.py)."""
    return [CheckFact(r.check_id, CheckStatus(r.status), r.critical, aware(r.since)) for r in rows
            if r.check_id in BY_ID]


def active_exceptions(session: Session, device_ids: list[str], now: datetime) -> dict[str, frozenset[str]]:
    """device id -> the checks excused right now."""
    out: dict[str, set[str]] = {}
    for i in range(0, len(device_ids), 500):
        for dev, check in session.execute(select(DeviceException.device_id, DeviceException.check_id).where(
                DeviceException.device_id.in_(device_ids[i:i + 500]), DeviceException.revoked_at.is_(None),
                DeviceException.expires_at > now)):
            out.setdefault(dev, set()).add(check)
    return {k: frozenset(v) for k, v in out.items()}


def last_heard(device: Device) -> datetime:
    return aware(device.last_seen or device.enrolled_at)


def judge(device: Device, rows: list[DeviceCheck], excepted: frozenset[str], now: datetime,
          timing: Timing) -> Rollup:
    return rollup(facts(rows), excepted, last_heard(device), now, timing)


def apply(session: Session, device: Device, result: Rollup, now: datetime, seq: int | None = None) -> bool:
    """Store the device's new state (and its transition) if it changed; True when it did."""
    new = result.state.value
    if device.state == new:
        return False
    session.add(DeviceCheckEvent(device_id=device.id, check_id=None, from_status=device.state, to_status=new, at=now,
                                 seq=seq, note="; ".join(result.reasons)[:1000]))
    device.state, device.state_since = new, now
    return True


def refresh(session: Session, device: Device, timing: Timing, now: datetime, seq: int | None = None) -> Rollup:
    rows = list(session.scalars(select(DeviceCheck).where(DeviceCheck.device_id == device.id)))
    excepted = active_exceptions(session, [device.id], now).get(device.id, frozenset())
    result = judge(device, rows, excepted, now, timing)
    apply(session, device, result, now, seq)
    return result


def refresh_all(session: Session, timing: Timing, now: datetime) -> list[tuple[Device, Rollup]]:
    """Every enrolled (not retired) device, in a few queries, with its rollup; stores changed states."""
    devices = list(session.scalars(select(Device).where(Device.retired_at.is_(None)).order_by(Device.id)))
    rows: dict[str, list[DeviceCheck]] = {}
    for r in session.scalars(select(DeviceCheck).join(Device, Device.id == DeviceCheck.device_id)
                             .where(Device.retired_at.is_(None))):
        rows.setdefault(r.device_id, []).append(r)
    excepted = active_exceptions(session, [d.id for d in devices], now)
    out = []
    for d in devices:
        result = judge(d, rows.get(d.id, []), excepted.get(d.id, frozenset()), now, timing)
        apply(session, d, result, now)
        out.append((d, result))
    return out


__all__ = ["DeviceState", "refresh", "refresh_all", "judge", "apply", "aware"]
