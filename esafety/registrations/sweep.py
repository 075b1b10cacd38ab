"""The periodic steps that keep registrations true to the world: device checks (quarantine after a
grace period, release when fixed), expiry, SLA breaches, and the Prometheus gauges.

Each function works in the caller's transaction; the dashboard's registrations worker runs them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from esafety import metrics
from esafety.registrations import leases, mail
from esafety.registrations.lifecycle import SYSTEM, SYSTEM_ACTOR, transition
from esafety.registrations.prereqs import TITLES, ComplianceSource, failed_checks
from esafety.registrations.states import ALLOWED_STATES, WAITING_STATES, Action, State
from esafety.registrations.tables import Registration, RegistrationEvent
from esafety.registrations.workdays import SchoolCalendar
from esafety.store.models import User


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _quarantined_by_system(session: Session, reg_id: int) -> bool:
    actor = session.scalar(select(RegistrationEvent.actor).where(
        RegistrationEvent.registration_id == reg_id, RegistrationEvent.to_state == State.QUARANTINED.value)
        .order_by(RegistrationEvent.id.desc()).limit(1))
    return actor == SYSTEM


def enforce_compliance(session: Session, source: ComplianceSource, grace: timedelta, dashboard_url: str,
                       now: datetime | None = None) -> dict[str, int]:
    """Failing devices are quarantined once they have failed for `grace`; fixed ones come back."""
    now = now or datetime.now(UTC)
    done = {"quarantined": 0, "released": 0}
    watched = (State.APPROVED.value, State.ACTIVE.value, State.QUARANTINED.value)
    for reg in list(session.scalars(select(Registration).where(Registration.state.in_(watched))
                                    .order_by(Registration.id).execution_options(populate_existing=True))):
        failed = failed_checks(source, session, reg.mac)
        if failed is None:
            continue  # no agent on this device: nothing to enforce automatically
        if not failed:
            if reg.noncompliant_since is not None or reg.failed_checks:
                reg.noncompliant_since, reg.failed_checks = None, ""
            if reg.state == State.QUARANTINED.value and _quarantined_by_system(session, reg.id):
                transition(session, reg, Action.RELEASE, SYSTEM_ACTOR, "critical checks pass again", now=now)
                done["released"] += 1
            continue
        reg.failed_checks = ",".join(failed)
        if reg.noncompliant_since is None:
            reg.noncompliant_since = now
        if reg.state == State.ACTIVE.value and now - _aware(reg.noncompliant_since) >= grace:
            hours = grace.total_seconds() / 3600
            why = (f"critical checks failing for more than {hours:g} hours: "
                   + ", ".join(TITLES.get(c, c) for c in failed))
            transition(session, reg, Action.QUARANTINE, SYSTEM_ACTOR, why, now=now)
            leases.unbind(session, reg.username, reg.device_name)
            mail.ended(session, reg, "quarantined", why, dashboard_url)
            done["quarantined"] += 1
    session.flush()
    return done


def expire(session: Session, dashboard_url: str, now: datetime | None = None) -> int:
    """Registrations past their expiry date, or whose owner's account was deactivated, expire."""
    now = now or datetime.now(UTC)
    states = [s.value for s in ALLOWED_STATES | {State.QUARANTINED}]
    inactive = select(User.username).where(User.active.is_(False))
    due = list(session.scalars(select(Registration).where(
        Registration.state.in_(states),
        (Registration.expires_at <= now) | Registration.username.in_(inactive))
        .execution_options(populate_existing=True)))
    for reg in due:
        gone = reg.expires_at is None or _aware(reg.expires_at) > now
        why = "the account was deactivated" if gone else "the registration reached the end of the school year"
        transition(session, reg, Action.EXPIRE, SYSTEM_ACTOR, why, now=now)
        leases.unbind(session, reg.username, reg.device_name)
        if not gone:
            mail.ended(session, reg, "expired", why + "; register it again to keep using it", dashboard_url)
    return len(due)


def mark_sla_breaches(session: Session, now: datetime | None = None) -> int:
    """Flag waiting registrations past their due time, once each, counting them for Prometheus."""
    now = now or datetime.now(UTC)
    r = session.execute(update(Registration).where(
        Registration.state.in_([s.value for s in WAITING_STATES]), Registration.due_at < now,
        Registration.sla_breached.is_(False)).values(sla_breached=True).execution_options(synchronize_session=False))
    n = int(r.rowcount or 0)  # type: ignore[attr-defined]
    if n:
        metrics.REGISTRATION_SLA_BREACHES.inc(n)
    return n


def collect(session: Session, calendar: SchoolCalendar, now: datetime | None = None) -> None:
    """Set the registration gauges; every state is set, so emptied states drop to zero."""
    now = now or datetime.now(UTC)
    counts = dict(session.execute(select(Registration.state, func.count()).group_by(Registration.state)).all())
    for s in State:
        metrics.REGISTRATIONS.labels(state=s.value).set(counts.get(s.value, 0))
    waiting = [s.value for s in WAITING_STATES]
    overdue = session.scalar(select(func.count()).select_from(Registration).where(
        Registration.state.in_(waiting), Registration.due_at < now)) or 0
    metrics.REGISTRATIONS_OVERDUE.set(overdue)
    oldest = session.scalar(select(func.min(Registration.submitted_at)).where(Registration.state.in_(waiting)))
    metrics.REGISTRATIONS_OLDEST_PENDING.set(calendar.working_seconds(_aware(oldest), now) if oldest else 0.0)
