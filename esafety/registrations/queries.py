"""Read-only views: IT's approval queue (oldest first, with due times), a person's own devices."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from esafety.registrations.states import LIVE_STATES, WAITING_STATES, State
from esafety.registrations.tables import Registration, WifiBan
from esafety.registrations.workdays import SchoolCalendar
from esafety.store.models import User


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass(frozen=True)
class QueueRow:
    reg: Registration
    display_name: str
    due_at: datetime
    overdue: bool
    waited_working_seconds: float


@dataclass(frozen=True)
class Queue:
    rows: list[QueueRow]
    overdue: int


def approval_queue(session: Session, calendar: SchoolCalendar, now: datetime | None = None,
                   limit: int = 500) -> Queue:
    now = now or datetime.now(UTC)
    rows = session.execute(
        select(Registration, User.display_name).join(User, User.username == Registration.username, isouter=True)
        .where(Registration.state.in_([s.value for s in WAITING_STATES]))
        .order_by(Registration.submitted_at, Registration.id).limit(limit)).all()
    out = [QueueRow(reg, name or reg.username, _aware(reg.due_at), now > _aware(reg.due_at),
                    calendar.working_seconds(_aware(reg.submitted_at), now)) for reg, name in rows]
    return Queue(out, sum(1 for r in out if r.overdue))


def recent(session: Session, limit: int = 50) -> list[Registration]:
    """Decided and live registrations, newest change first, for IT's overview."""
    return list(session.scalars(select(Registration).where(
        Registration.state.not_in([s.value for s in WAITING_STATES])).order_by(Registration.updated_at.desc(),
                                                                                Registration.id.desc()).limit(limit)))


def of_user(session: Session, username: str) -> list[Registration]:
    return list(session.scalars(select(Registration).where(Registration.username == username)
                                .order_by(Registration.id.desc())))


def live_count(session: Session, username: str) -> int:
    return sum(1 for r in of_user(session, username) if State(r.state) in LIVE_STATES)


def bans(session: Session, include_lifted: bool = False) -> list[WifiBan]:
    q = select(WifiBan).order_by(WifiBan.created_at.desc(), WifiBan.id.desc())
    if not include_lifted:
        q = q.where(WifiBan.lifted_at.is_(None))
    return list(session.scalars(q))
