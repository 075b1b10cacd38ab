"""Apply one state-machine transition: checked, compare-and-set, and recorded with who and why.

The UPDATE only matches while the row is still in the state that was read, so two IT admins
deciding at once cannot both win: the second is told the request was already decided. The
caller owns the transaction (one per action) and commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from esafety import metrics
from esafety.registrations import states
from esafety.registrations.errors import Conflict, Forbidden, Invalid, NotFound
from esafety.registrations.states import Action, State, Who
from esafety.registrations.tables import Registration, RegistrationEvent

SYSTEM = "system"
NOTE_MAX = 2000
IT_ROLES = frozenset({"it_admin"})


@dataclass(frozen=True)
class Actor:
    username: str
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_system(self) -> bool:
        return self.username == SYSTEM


SYSTEM_ACTOR = Actor(SYSTEM)


def who(actor: Actor, reg: Registration) -> Who:
    if actor.is_system:
        return Who.SYSTEM
    if actor.roles & IT_ROLES:
        return Who.IT
    if actor.username == reg.username:
        return Who.OWNER
    raise NotFound("no such registration")  # other people's devices are not theirs to see


def load(session: Session, reg_id: int) -> Registration:
    reg = session.scalars(select(Registration).where(Registration.id == reg_id)
                          .execution_options(populate_existing=True)).one_or_none()
    if reg is None:
        raise NotFound("no such registration")
    return reg


def record(session: Session, reg: Registration, actor: Actor, action: str, from_state: str | None, to_state: str,
           note: str = "", reason: str | None = None, at: datetime | None = None) -> RegistrationEvent:
    ev = RegistrationEvent(registration_id=reg.id, at=at or datetime.now(UTC), actor=actor.username, action=action,
                           from_state=from_state, to_state=to_state, reason=reason, note=note[:NOTE_MAX])
    session.add(ev)
    return ev


def _extras(t: states.Transition, reg: Registration, actor: Actor, note: str, reason: str | None,
            now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {"state": t.target.value, "updated_at": now}
    if t.action in (Action.APPROVE, Action.REJECT):
        values.update(decided_at=now, decided_by=actor.username, decision_note=note or None)
    if t.action is Action.ACTIVATE:
        values.update(activated_at=now, failed_checks="")
    if t.action is Action.RELEASE:
        values.update(noncompliant_since=None, failed_checks="")
    if t.target in (State.REJECTED, State.REVOKED, State.EXPIRED):
        values.update(live_mac=None, ended_at=now)
    if t.action is Action.REVOKE:
        values["revoke_reason"] = reason
    return values


def transition(session: Session, reg: Registration, action: Action, actor: Actor, note: str = "",
               reason: str | None = None, now: datetime | None = None, **more: Any) -> Registration:
    """Move `reg` by `action`; `more` sets extra columns (e.g. expires_at on approval)."""
    now = now or datetime.now(UTC)
    note = (note or "").strip()
    if len(note) > NOTE_MAX:
        raise Invalid(f"The note is too long (at most {NOTE_MAX} characters).")
    try:
        t = states.check(reg.state, action, who(actor, reg), note, reason)
    except states.NotPermitted as exc:
        raise Forbidden(str(exc)) from exc
    except states.WrongState as exc:
        raise Conflict(str(exc)) from exc
    except states.TransitionError as exc:
        raise Invalid(str(exc)) from exc
    old = reg.state
    values = {**_extras(t, reg, actor, note, reason, now), **more}
    result = session.execute(update(Registration).where(Registration.id == reg.id, Registration.state == old)
                             .values(**values).execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("Someone else has just changed this registration; reload the page to see its state.")
    for key, value in values.items():
        setattr(reg, key, value)
    session.flush()
    record(session, reg, actor, t.action.value, old, t.target.value, note, reason, now)
    _count(t, actor, reason)
    return reg


def _count(t: states.Transition, actor: Actor, reason: str | None) -> None:
    if t.action in (Action.APPROVE, Action.REJECT):
        metrics.REGISTRATION_DECISIONS.labels(decision=t.target.value).inc()
    elif t.action is Action.REVOKE:
        metrics.REGISTRATION_REVOCATIONS.labels(reason=reason or "unknown").inc()
    elif t.action is Action.QUARANTINE:
        metrics.REGISTRATION_QUARANTINES.labels(by="system" if actor.is_system else "it").inc()


def history(session: Session, reg_id: int) -> list[RegistrationEvent]:
    return list(session.scalars(select(RegistrationEvent).where(RegistrationEvent.registration_id == reg_id)
                                .order_by(RegistrationEvent.id)))
