"""Time-boxed exceptions: one check on one device may fail until a date, approved by a named person
(e.g. a coding class's dev server on port 3000 until Friday).

Every grant and revocation is written to the tamper-evident audit chain (esafety/incidents/audit.py,
checked by `esafety audit verify`) and to the device's history, and the device's state is
recomputed at once. Exceptions end by themselves; the sweep recomputes states as they expire.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from esafety.compliance import state
from esafety.compliance.catalogue import BY_ID
from esafety.compliance.rollup import Timing
from esafety.compliance.tables import Device, DeviceCheckEvent, DeviceException
from esafety.incidents.audit import Chain

MAX_LENGTH = timedelta(days=180)  # "time-boxed": at most about a school term and a half


class ExceptionRefused(ValueError):
    """The request cannot be granted; the message says why, for the person filling in the form."""


def grant(session: Session, device_id: str, check_id: str, reason: str, approved_by: str, expires_at: datetime,
          actor: str, timing: Timing, now: datetime | None = None) -> DeviceException:
    now = now or datetime.now(UTC)
    # The device row first, as a report does, then the audit chain: one lock order, no deadlock.
    device = session.get(Device, device_id, with_for_update=True)
    if device is None or device.retired_at is not None:
        raise ExceptionRefused("no such enrolled device")
    if check_id not in BY_ID:
        raise ExceptionRefused(f"unknown check '{check_id}'")
    reason, approved_by = reason.strip(), approved_by.strip()
    if not reason:
        raise ExceptionRefused("say why the exception is needed (e.g. 'Year 10 web development: dev server')")
    if len(approved_by) < 3:
        raise ExceptionRefused("name the person who approved the exception")
    expires_at = state.aware(expires_at)
    if expires_at <= now:
        raise ExceptionRefused("the end of the exception must be in the future")
    if expires_at - now > MAX_LENGTH:
        raise ExceptionRefused(f"an exception lasts at most {MAX_LENGTH.days} days; grant a new one when it ends")
    exc = DeviceException(device_id=device.id, check_id=check_id, reason=reason[:2000], approved_by=approved_by[:200],
                          created_by=actor, created_at=now, expires_at=expires_at)
    session.add(exc)
    session.flush()
    until = expires_at.strftime("%Y-%m-%d %H:%M UTC")
    session.add(DeviceCheckEvent(device_id=device.id, check_id=check_id, from_status=None, to_status="excepted",
                                 at=now, note=f"exception until {until}, approved by {approved_by}, recorded by "
                                 f"{actor}: {reason}"[:2000]))
    Chain(session).add(None, actor, "device_exception", device_id=device.id, hostname=device.hostname,
                       check=check_id, reason=reason, approved_by=approved_by, expires_at=expires_at.isoformat(),
                       exception_id=exc.id)
    state.refresh(session, device, timing, now)
    return exc


def revoke(session: Session, exception_id: int, actor: str, timing: Timing,
           now: datetime | None = None) -> DeviceException:
    now = now or datetime.now(UTC)
    exc = session.get(DeviceException, exception_id)
    if exc is None:
        raise ExceptionRefused("no such exception")
    if exc.revoked_at is not None or state.aware(exc.expires_at) <= now:
        raise ExceptionRefused("this exception has already ended")
    device = session.get(Device, exc.device_id, with_for_update=True)  # lock order as in grant()
    exc.revoked_at, exc.revoked_by = now, actor
    session.add(DeviceCheckEvent(device_id=exc.device_id, check_id=exc.check_id, from_status="excepted",
                                 to_status="exception_ended", at=now, note=f"exception revoked by {actor}"))
    Chain(session).add(None, actor, "device_exception_revoked", device_id=exc.device_id, check=exc.check_id,
                       exception_id=exc.id)
    if device is not None:
        state.refresh(session, device, timing, now)
    return exc
