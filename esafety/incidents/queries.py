"""Read side of the queue: filters, ordering, counts and pagination, and a pupil's chronology.

Filters are validated against closed sets (state, level, queue) or bound as parameters
(category, pupil), never formatted into SQL. Ordering uses ix_incidents_level_age, so the first
page of 100,000 incidents reads about one page of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from esafety.incidents.sla import overdue_clause
from esafety.incidents.states import OPEN_STATES, State
from esafety.incidents.tables import IncidentEvent, IncidentLink
from esafety.policy.schema import Policy
from esafety.store.models import Incident

PAGE_SIZE = 50
STATE_FILTERS = ("open", "all", *(s.value for s in State))


@dataclass(frozen=True)
class QueueFilter:
    state: str = "open"  # open | all | one state
    level: int | None = None
    category: str | None = None
    queue: str | None = None
    pupil: str | None = None
    page: int = 1

    @classmethod
    def parse(cls, params: dict[str, str], visible: frozenset[str]) -> QueueFilter:
        """Anything outside the allowed values is ignored, not passed on."""
        state = params.get("state") or "open"
        level = params.get("level") or ""
        queue = params.get("queue") or None
        page = params.get("page") or "1"
        return cls(
            state=state if state in STATE_FILTERS else "open",
            level=int(level) if level in ("1", "2", "3", "4", "5") else None,
            category=(params.get("category") or "").strip()[:64] or None,
            queue=queue if queue in visible else None,
            pupil=(params.get("pupil") or "").strip()[:120] or None,
            page=max(1, min(int(page), 100_000)) if page.isdigit() else 1,
        )


@dataclass
class QueuePage:
    rows: list[Incident]
    total: int
    unacknowledged: int
    overdue: int
    page: int
    pages: int
    by_level: dict[int, int] = field(default_factory=dict)


def _where(f: QueueFilter, visible: frozenset[str]) -> list[ColumnElement[bool]]:
    queues = [f.queue] if f.queue else sorted(visible)
    w: list[ColumnElement[bool]] = [Incident.queue.in_(queues)]
    if f.state == "open":
        w.append(Incident.state.in_(OPEN_STATES))
    elif f.state != "all":
        w.append(Incident.state == f.state)
    if f.level is not None:
        w.append(Incident.level == f.level)
    if f.category:
        w.append(Incident.category == f.category)
    if f.pupil:
        w.append(Incident.subject == f.pupil)
    return w


def queue_page(session: Session, f: QueueFilter, visible: frozenset[str], policy: Policy | None,
               now: datetime | None = None, page_size: int = PAGE_SIZE) -> QueuePage:
    if not visible:
        return QueuePage([], 0, 0, 0, 1, 1)
    w = _where(f, visible)
    open_unack = and_(Incident.acknowledged_at.is_(None), Incident.state.in_(OPEN_STATES))
    counts = session.execute(select(
        Incident.level, func.count(),
        func.sum(case((open_unack, 1), else_=0)),
        func.sum(case((and_(open_unack, overdue_clause(policy, now or datetime.now(UTC))), 1), else_=0)),
    ).where(*w).group_by(Incident.level)).all()
    total = sum(c[1] for c in counts)
    pages = max(1, -(-total // page_size))
    page = min(f.page, pages)
    rows = list(session.scalars(select(Incident).where(*w)
                                .order_by(Incident.level.desc(), Incident.created_at, Incident.id)
                                .offset((page - 1) * page_size).limit(page_size)))
    return QueuePage(rows=rows, total=total, unacknowledged=sum(int(c[2] or 0) for c in counts),
                     overdue=sum(int(c[3] or 0) for c in counts), page=page, pages=pages,
                     by_level={int(c[0]): int(c[1]) for c in counts})


def history(session: Session, incident_id: int) -> list[IncidentEvent]:
    return list(session.scalars(select(IncidentEvent).where(IncidentEvent.incident_id == incident_id)
                                .order_by(IncidentEvent.seq)))


def linked(session: Session, incident_id: int) -> list[Incident]:
    ids = select(IncidentLink.b_id).where(IncidentLink.a_id == incident_id).union(
        select(IncidentLink.a_id).where(IncidentLink.b_id == incident_id))
    return list(session.scalars(select(Incident).where(Incident.id.in_(ids)).order_by(Incident.id)))


# What a chronology shows from the history: decisions and notes, not every page view.
CHRONOLOGY_ACTIONS = ("raised", "acknowledge", "start", "refer", "monitor", "resume", "close", "reopen", "note",
                      "level", "category", "queue", "assign", "link", "escalate")


@dataclass(frozen=True)
class ChronologyEntry:
    at: datetime
    incident: Incident
    action: str
    actor: str
    detail: dict  # type: ignore[type-arg]


def chronology(session: Session, subject: str, limit: int = 2000) -> list[ChronologyEntry]:
    """Everything that happened about one pupil, across all incidents, oldest first."""
    incs = {i.id: i for i in session.scalars(select(Incident).where(Incident.subject == subject).limit(limit))}
    if not incs:
        return []
    events = session.scalars(select(IncidentEvent).where(
        IncidentEvent.subject == subject, IncidentEvent.incident_id.in_(list(incs)),
        IncidentEvent.action.in_(CHRONOLOGY_ACTIONS)).order_by(IncidentEvent.seq).limit(limit * 10))
    return [ChronologyEntry(e.at, incs[e.incident_id], e.action, e.actor, e.detail)
            for e in events if e.incident_id in incs]
