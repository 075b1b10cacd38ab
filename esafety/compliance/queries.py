"""What the devices pages and `esafety devices list` show: filtered lists and one device in full."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session

from esafety.compliance import state
from esafety.compliance.catalogue import BY_ID, CATALOGUE
from esafety.compliance.rollup import CheckStatus, Rollup, Timing
from esafety.compliance.tables import (
    AgentSession,
    Device,
    DeviceCheck,
    DeviceCheckEvent,
    DeviceException,
    DeviceMac,
    EnrolmentToken,
)

LIST_LIMIT = 500
RETIRED = "retired"


@dataclass(frozen=True)
class DeviceFilter:
    state: str | None = None  # a DeviceState value, or "retired"
    check: str | None = None  # failing this check
    platform: str | None = None
    q: str | None = None  # hostname, user, owner, IP, MAC or device id (substring)


@dataclass(frozen=True)
class DeviceRow:
    device: Device
    failing: list[str]


def list_devices(session: Session, f: DeviceFilter, limit: int = LIST_LIMIT) -> tuple[list[DeviceRow], int]:
    """Matching devices (worst state first, then hostname) and how many matched in all."""
    q = select(Device)
    if f.state == RETIRED:
        q = q.where(Device.retired_at.is_not(None))
    else:
        q = q.where(Device.retired_at.is_(None))
        if f.state:
            q = q.where(Device.state == f.state)
    if f.platform:
        q = q.where(Device.platform == f.platform)
    if f.check:
        q = q.where(exists().where(DeviceCheck.device_id == Device.id, DeviceCheck.check_id == f.check,
                                   DeviceCheck.status == CheckStatus.FAIL.value))
    if f.q:
        like = f"%{f.q.strip().lower()}%"
        q = q.where(or_(func.lower(Device.hostname).like(like), func.lower(Device.last_user).like(like),
                        func.lower(Device.owner).like(like), Device.last_ip.like(like), Device.id.like(like),
                        exists().where(DeviceMac.device_id == Device.id, DeviceMac.mac.like(like)),
                        exists().where(AgentSession.device_id == Device.id, AgentSession.ip.like(like))))
    total = session.scalar(select(func.count()).select_from(q.subquery())) or 0
    order = {"noncompliant": 0, "stale": 1, "in_grace": 2, "warning": 3, "pending": 4, "compliant": 5}
    devices = sorted(session.scalars(q.order_by(Device.hostname).limit(limit)),
                     key=lambda d: (order.get(d.state, 9), d.hostname.lower()))
    failing: dict[str, list[str]] = {}
    ids = [d.id for d in devices]
    for i in range(0, len(ids), 500):
        for dev, check in session.execute(select(DeviceCheck.device_id, DeviceCheck.check_id).where(
                DeviceCheck.device_id.in_(ids[i:i + 500]), DeviceCheck.status == CheckStatus.FAIL.value)
                .order_by(DeviceCheck.check_id)):
            failing.setdefault(dev, []).append(check)
    return [DeviceRow(d, failing.get(d.id, [])) for d in devices], int(total)


@dataclass(frozen=True)
class CheckView:
    id: str
    title: str
    critical: bool
    rationale: str
    remediation: str
    clause: str
    row: DeviceCheck | None  # None: never reported by this device
    state: str  # what the check contributes to the device (compliant, warning, in_grace, noncompliant)
    excepted: bool
    grace_ends: datetime | None


@dataclass
class DeviceView:
    device: Device
    rollup: Rollup
    checks: list[CheckView]
    history: list[DeviceCheckEvent]
    exceptions: list[DeviceException]
    sessions: list[AgentSession]
    active_exception_ids: set[int] = field(default_factory=set)


def device_view(session: Session, device_id: str, timing: Timing, now: datetime | None = None,
                history_limit: int = 200) -> DeviceView | None:
    now = now or datetime.now(UTC)
    device = session.get(Device, device_id)
    if device is None:
        return None
    rows = {r.check_id: r for r in session.scalars(select(DeviceCheck).where(DeviceCheck.device_id == device_id))}
    excepted = state.active_exceptions(session, [device_id], now).get(device_id, frozenset())
    result = state.judge(device, list(rows.values()), excepted, now, timing)
    verdicts = {v.check_id: v for v in result.checks}
    checks = []
    for spec in CATALOGUE:
        if spec.id not in rows and device.platform not in spec.platforms:
            continue  # not run on this platform
        v = verdicts.get(spec.id)
        checks.append(CheckView(spec.id, spec.title, spec.critical, spec.rationale, spec.remediation, spec.aup_clause,
                                rows.get(spec.id), v.state.value if v else "", bool(v and v.excepted),
                                v.grace_ends if v else None))
    for cid, row in rows.items():
        if cid not in BY_ID:  # reported by a newer agent than this server's catalogue
            v = verdicts.get(cid)
            checks.append(CheckView(cid, cid, row.critical, "", "", "", row, v.state.value if v else "",
                                    bool(v and v.excepted), v.grace_ends if v else None))
    history = list(session.scalars(select(DeviceCheckEvent).where(DeviceCheckEvent.device_id == device_id)
                                   .order_by(DeviceCheckEvent.id.desc()).limit(history_limit)))
    excs = list(session.scalars(select(DeviceException).where(DeviceException.device_id == device_id)
                                .order_by(DeviceException.id.desc())))
    active = {e.id for e in excs if e.revoked_at is None and state.aware(e.expires_at) > now}
    sess = list(session.scalars(select(AgentSession).where(AgentSession.device_id == device_id)
                                .order_by(AgentSession.last_seen.desc()).limit(20)))
    return DeviceView(device, result, checks, history, excs, sess, active)


def tokens(session: Session, limit: int = 20) -> list[EnrolmentToken]:
    return list(session.scalars(select(EnrolmentToken).order_by(EnrolmentToken.id.desc()).limit(limit)))


def as_json(row: DeviceRow) -> dict[str, Any]:
    d = row.device
    return {"device_id": d.id, "hostname": d.hostname, "platform": d.platform, "state": d.state,
            "failing": row.failing, "user": d.last_user, "owner": d.owner, "ip": d.last_ip,
            "last_seen": d.last_seen.isoformat() if d.last_seen else None, "agent_version": d.agent_version,
            "retired": d.retired_at is not None}
