"""What IT (and the owner) do to a registration: approve, reject, revoke, quarantine, release;
and lifting a permanent ban, which needs an IT admin and a DSL, two different people.

Each function runs inside the caller's transaction and raises before anything is written when
the action is refused, so a refused action leaves nothing half-done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from esafety.registrations import leases, mail
from esafety.registrations.errors import Conflict, Forbidden, Invalid, NotFound
from esafety.registrations.lifecycle import Actor, load, transition
from esafety.registrations.prereqs import TITLES, ComplianceSource, failed_checks
from esafety.registrations.states import ALLOWED_STATES, LIVE_STATES, PERMANENT_REASONS, Action, Reason, State
from esafety.registrations.tables import Registration, WifiBan
from esafety.registrations.workdays import SchoolCalendar
from esafety.store.models import User

DSL_ROLES = frozenset({"dsl", "deputy_dsl"})
IT_ROLES = frozenset({"it_admin"})


@dataclass(frozen=True)
class Outcome:
    registration: Registration
    emailed: str | None  # the school address the email went to, if any


def _it(actor: Actor) -> None:
    if not actor.roles & IT_ROLES:
        raise Forbidden("Only IT admins decide WiFi registrations.")


def _check_names(failed: list[str]) -> str:
    return ", ".join(TITLES.get(c, c) for c in failed)


def approve(session: Session, reg_id: int, actor: Actor, note: str, compliance: ComplianceSource,
            calendar: SchoolCalendar, ssid: str, dashboard_url: str, now: datetime | None = None) -> Outcome:
    _it(actor)
    now = now or datetime.now(UTC)
    reg = load(session, reg_id)
    if reg.state != State.PENDING_APPROVAL.value:
        transition(session, reg, Action.APPROVE, actor, note, now=now)  # raises the state's reason
    owner = session.scalar(select(User).where(User.username == reg.username))
    if owner is None or not owner.active:
        raise Conflict("The person who asked is no longer an active user; reject the request instead.")
    failed = failed_checks(compliance, session, reg.mac)
    if failed:
        raise Conflict(f"The device's agent reports failed critical checks: {_check_names(failed)}. "
                       "It can be approved once they pass.")
    transition(session, reg, Action.APPROVE, actor, note, now=now, expires_at=calendar.expiry_after(now))
    return Outcome(reg, mail.approved(session, reg, ssid, dashboard_url))


def reject(session: Session, reg_id: int, actor: Actor, note: str, dashboard_url: str,
           now: datetime | None = None) -> Outcome:
    _it(actor)
    reg = load(session, reg_id)
    transition(session, reg, Action.REJECT, actor, note, now=now)
    return Outcome(reg, mail.rejected(session, reg, note.strip(), dashboard_url))


def revoke(session: Session, reg_id: int, actor: Actor, reason: str, note: str, dashboard_url: str,
           now: datetime | None = None) -> Outcome:
    """Revoke one device. Credential sharing also bans the person: their other devices are revoked
    and pending requests rejected, and no new request is accepted until the ban is lifted."""
    now = now or datetime.now(UTC)
    reg = load(session, reg_id)
    transition(session, reg, Action.REVOKE, actor, note, reason, now=now)
    if reason in {r.value for r in PERMANENT_REASONS}:
        ban_user(session, reg.username, Reason(reason), actor, note, reg.id, now)
        for other in _live_of(session, reg.username, exclude=reg.id):
            if other.state in {s.value for s in ALLOWED_STATES | {State.QUARANTINED}}:
                transition(session, other, Action.REVOKE, actor, "another device was revoked for credential sharing",
                           reason, now=now)
            else:
                transition(session, other, Action.REJECT, actor, "WiFi access removed for credential sharing", now=now)
        leases.unbind(session, reg.username)
    else:
        leases.unbind(session, reg.username, reg.device_name)
    why = f"{reason.replace('_', ' ')}" + (f": {note.strip()}" if note.strip() else "")
    return Outcome(reg, mail.ended(session, reg, "revoked", why, dashboard_url))


def _live_of(session: Session, username: str, exclude: int | None = None) -> list[Registration]:
    q = select(Registration).where(Registration.username == username,
                                   Registration.state.in_([s.value for s in LIVE_STATES]))
    if exclude is not None:
        q = q.where(Registration.id != exclude)
    return list(session.scalars(q.order_by(Registration.id).execution_options(populate_existing=True)))


def ban_user(session: Session, username: str, reason: Reason, actor: Actor, note: str, reg_id: int | None,
             now: datetime) -> WifiBan:
    existing = session.scalar(select(WifiBan).where(WifiBan.username == username, WifiBan.lifted_at.is_(None)))
    if existing is not None:
        return existing
    ban = WifiBan(username=username, reason=reason.value, registration_id=reg_id, note=note.strip()[:2000],
                  created_by=actor.username, created_at=now)
    session.add(ban)
    session.flush()
    return ban


def quarantine(session: Session, reg_id: int, actor: Actor, note: str, dashboard_url: str,
               now: datetime | None = None) -> Outcome:
    _it(actor)
    reg = load(session, reg_id)
    transition(session, reg, Action.QUARANTINE, actor, note, now=now)
    leases.unbind(session, reg.username, reg.device_name)
    return Outcome(reg, mail.ended(session, reg, "quarantined", note.strip(), dashboard_url))


def release(session: Session, reg_id: int, actor: Actor, note: str, compliance: ComplianceSource,
            now: datetime | None = None) -> Outcome:
    _it(actor)
    reg = load(session, reg_id)
    failed = failed_checks(compliance, session, reg.mac) if reg.state == State.QUARANTINED.value else None
    if failed:
        raise Conflict(f"The device still fails critical checks: {_check_names(failed)}.")
    transition(session, reg, Action.RELEASE, actor, note, now=now)
    return Outcome(reg, None)


def sign_off_ban(session: Session, ban_id: int, actor: Actor, note: str = "", now: datetime | None = None) -> WifiBan:
    """An IT admin or a DSL signs to lift a ban; lifted when both have, and they are different people."""
    now = now or datetime.now(UTC)
    ban = session.scalars(select(WifiBan).where(WifiBan.id == ban_id)
                          .execution_options(populate_existing=True)).one_or_none()
    if ban is None:
        raise NotFound("no such ban")
    if ban.lifted_at is not None:
        raise Conflict("This ban has already been lifted.")
    signed = False
    if actor.roles & DSL_ROLES and ban.dsl_signoff_by is None and ban.it_signoff_by != actor.username:
        ban.dsl_signoff_by, ban.dsl_signoff_at, signed = actor.username, now, True
    elif actor.roles & IT_ROLES and ban.it_signoff_by is None and ban.dsl_signoff_by != actor.username:
        ban.it_signoff_by, ban.it_signoff_at, signed = actor.username, now, True
    if not signed:
        if not actor.roles & (DSL_ROLES | IT_ROLES):
            raise Forbidden("Only an IT admin and the DSL can lift a ban.")
        raise Conflict("You have already signed; the other sign-off must come from a different person "
                       "(an IT admin and the DSL).")
    if note.strip():
        ban.note = (ban.note + "\n" if ban.note else "") + f"{actor.username}: {note.strip()}"[:2000]
    if ban.it_signoff_by and ban.dsl_signoff_by:
        ban.lifted_at = now
    session.flush()
    return ban


def check_reason(reason: str) -> Reason:
    try:
        return Reason(reason)
    except ValueError:
        raise Invalid("Choose a reason: " + ", ".join(r.value for r in Reason)) from None
