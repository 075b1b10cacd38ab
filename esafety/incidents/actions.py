"""Everything a person does to an incident, each one checked and recorded in the chained history.

Every function locks the chain first and then reads the incident, so two DSLs acting at once are
serialised and neither overwrites the other. The caller commits (one transaction per action).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from esafety import metrics
from esafety.incidents import states
from esafety.incidents.access import readable_queues, writable_queues
from esafety.incidents.audit import Chain
from esafety.incidents.sla import aware
from esafety.incidents.tables import IncidentLink
from esafety.policy.schema import QUEUES, Policy
from esafety.store.models import Incident, User

NOTE_MAX = 10_000
REASON_MAX = 2_000


@dataclass(frozen=True)
class Actor:
    username: str
    roles: frozenset[str] = field(default_factory=frozenset)


class NotFound(LookupError):
    pass


class Forbidden(PermissionError):
    pass


class Invalid(ValueError):
    pass


def _load(session: Session, chain: Chain, incident_id: int, actor: Actor, write: bool) -> Incident:
    chain.lock()
    inc = session.scalars(select(Incident).where(Incident.id == incident_id)
                          .execution_options(populate_existing=True)).one_or_none()
    # Not found and not permitted look the same from outside: IT cannot probe for DSL incidents.
    if inc is None or inc.queue not in readable_queues(actor.roles):
        raise NotFound(f"no incident {incident_id}")
    if write and inc.queue not in writable_queues(actor.roles):
        raise Forbidden("your role can read this incident but not change it")
    return inc


def _text(value: str, limit: int, what: str) -> str:
    value = (value or "").strip()
    if not value:
        raise Invalid(f"{what} is empty")
    if len(value) > limit:
        raise Invalid(f"{what} is longer than {limit} characters")
    return value


def view(session: Session, incident_id: int, actor: Actor) -> Incident:
    """Open an incident; the view itself is recorded (who looked, when)."""
    chain = Chain(session)
    inc = _load(session, chain, incident_id, actor, write=False)
    chain.add(inc, actor.username, "view")
    return inc


def transition(session: Session, incident_id: int, actor: Actor, action: str, outcome: str | None = None,
               reason: str | None = None) -> Incident:
    chain = Chain(session)
    inc = _load(session, chain, incident_id, actor, write=True)
    t = states.check(inc.state, action, outcome, reason)
    now = datetime.now(UTC)
    detail: dict[str, object] = {"from": inc.state, "to": t.target.value}
    if t.action is states.Action.ACKNOWLEDGE:
        inc.acknowledged_at, inc.acknowledged_by = now, actor.username
        waited = (now - aware(inc.created_at)).total_seconds()
        metrics.INCIDENT_ACK_SECONDS.labels(level=str(inc.level)).observe(max(waited, 0.0))
        detail["waited_seconds"] = int(waited)
    if t.needs_outcome:
        inc.outcome, inc.closed_at = outcome, now
        detail["outcome"] = outcome
    if t.needs_reason:
        detail["reason"] = _text(reason or "", REASON_MAX, "the reason")
        inc.outcome, inc.closed_at = None, None
    inc.state = t.target.value
    chain.add(inc, actor.username, t.action.value, **detail)
    return inc


def add_note(session: Session, incident_id: int, actor: Actor, text: str) -> Incident:
    chain = Chain(session)
    inc = _load(session, chain, incident_id, actor, write=True)
    chain.add(inc, actor.username, "note", text=_text(text, NOTE_MAX, "the note"))
    return inc


def assign(session: Session, incident_id: int, actor: Actor, assignee: str | None) -> Incident:
    chain = Chain(session)
    inc = _load(session, chain, incident_id, actor, write=True)
    if assignee:
        user = session.scalar(select(User).where(User.username == assignee, User.active.is_(True)))
        roles = frozenset(r for r in (user.roles if user else "").split(",") if r)
        if user is None or inc.queue not in writable_queues(roles):
            raise Invalid(f"{assignee} cannot work the {inc.queue} queue")
    chain.add(inc, actor.username, "assign", **{"from": inc.assigned_to, "to": assignee or None})
    inc.assigned_to = assignee or None
    return inc


def set_level(session: Session, incident_id: int, actor: Actor, level: int, reason: str = "") -> Incident:
    chain = Chain(session)
    inc = _load(session, chain, incident_id, actor, write=True)
    if level not in (1, 2, 3, 4, 5):
        raise Invalid("the level is 1 to 5")
    if level != inc.level:
        chain.add(inc, actor.username, "level",
                  **{"from": inc.level, "to": level, "reason": reason.strip()[:REASON_MAX]})
        inc.level = level
    return inc


def set_category(session: Session, incident_id: int, actor: Actor, category: str, policy: Policy | None,
                 queue: str | None = None) -> Incident:
    """Recategorise; the queue follows the policy's routing unless one is given explicitly."""
    chain = Chain(session)
    inc = _load(session, chain, incident_id, actor, write=True)
    if policy is not None and category not in policy.categories:
        raise Invalid(f"unknown category {category!r}")
    if queue is not None and queue not in QUEUES:
        raise Invalid(f"unknown queue {queue!r}")
    if queue is None:
        queue = inc.queue
        if policy is not None:
            for r in policy.routing:
                if (not r.categories or category in r.categories) and inc.level >= r.min_level:
                    queue = r.queue
                    break
            else:
                queue = policy.default_queue
    if category != inc.category:
        chain.add(inc, actor.username, "category", **{"from": inc.category, "to": category})
        inc.category = category
        if policy is not None and category in policy.categories:
            inc.kcsie = policy.categories[category].kcsie
    if queue != inc.queue:
        chain.add(inc, actor.username, "queue", **{"from": inc.queue, "to": queue})
        inc.queue = queue
    return inc


def link(session: Session, incident_id: int, other_ref: str, actor: Actor) -> Incident:
    chain = Chain(session)
    inc = _load(session, chain, incident_id, actor, write=True)
    other_id = session.scalar(select(Incident.id).where(Incident.ref == other_ref.strip().upper()))
    if other_id is None or other_id == inc.id:
        raise Invalid(f"no other incident with reference {other_ref!r}")
    other = _load(session, chain, other_id, actor, write=False)
    a, b = sorted((inc.id, other.id))
    if session.scalar(select(IncidentLink.id).where(IncidentLink.a_id == a, IncidentLink.b_id == b)) is None:
        session.add(IncidentLink(a_id=a, b_id=b, created_by=actor.username))
        chain.add(inc, actor.username, "link", other=other.ref)
        chain.add(other, actor.username, "link", other=inc.ref)
    return inc


def reveal(session: Session, incident_id: int, actor: Actor) -> Incident:
    """Show graphic evidence. Only those who work the queue may, and it is recorded."""
    chain = Chain(session)
    inc = _load(session, chain, incident_id, actor, write=True)
    chain.add(inc, actor.username, "reveal")
    return inc


def record_export(session: Session, incident_id: int, actor: Actor) -> Incident:
    chain = Chain(session)
    inc = _load(session, chain, incident_id, actor, write=False)
    chain.add(inc, actor.username, "export", format="csv")
    return inc


def record_chronology(session: Session, subject: str, actor: Actor, action: str) -> None:
    """A chronology view or export spans incidents, so its event names the pupil, not one incident."""
    Chain(session).add(None, actor.username, action, subject=subject)
