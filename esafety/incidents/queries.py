"""Read side of the queue: filters, ordering, counts and pagination, and a pupil's chronology.

Filters are validated against closed sets (state, level, queue, year) or bound as parameters
(category, pupil, tutor group), never formatted into SQL. The order matches ix_incidents_level_age:
PostgreSQL walks it and reads about one page of rows of 100,000 incidents; SQLite, which has no
statistics, reads the open incidents by ix_incidents_queue_state_level and sorts them (fast while
few are open). Year and tutor group filter on the pupil as they are now (`users`, by
ix_users_year_tutor), not the snapshot on the incident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Boolean, ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from esafety.incidents import pupils
from esafety.incidents.sla import overdue_clause
from esafety.incidents.states import OPEN_STATES, State
from esafety.incidents.tables import IncidentEvent, IncidentLink
from esafety.policy.schema import Policy
from esafety.store.models import Incident, User

PAGE_SIZE = 50
STATE_FILTERS = ("open", "all", *(s.value for s in State))
FILTER_PARAMS = ("state", "level", "category", "queue", "pupil", "year", "tutor", "page")


@dataclass(frozen=True)
class QueueFilter:
    state: str = "open"  # open | all | one state
    level: int | None = None
    category: str | None = None
    queue: str | None = None
    pupil: str | None = None
    year: int | None = None  # the pupil's NC year now
    tutor: str | None = None  # the pupil's tutor group now
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
            year=pupils.parse_year(params.get("year")),
            tutor=pupils.parse_tutor(params.get("tutor")),
            page=max(1, min(int(page), 100_000)) if page.isdigit() else 1,
        )

    def params(self) -> dict[str, str]:
        """The filters in force as query parameters (for pagination links), without the page."""
        pairs = (("state", self.state), ("level", self.level), ("category", self.category), ("queue", self.queue),
                 ("pupil", self.pupil), ("year", self.year), ("tutor", self.tutor))
        return {k: str(v) for k, v in pairs if v not in (None, "")}


@dataclass
class QueuePage:
    rows: list[Incident]
    total: int
    unacknowledged: int
    overdue: int
    page: int
    pages: int
    by_level: dict[int, int] = field(default_factory=dict)
    people: dict[str, pupils.Pupil] = field(default_factory=dict)  # the rows' subjects as they are now


def _where(f: QueueFilter, visible: frozenset[str], dialect: str = "") -> list[ColumnElement[bool]]:
    queues = [f.queue] if f.queue else sorted(visible)
    in_queues: ColumnElement[bool] = Incident.queue.in_(queues)
    people = f.year is not None or bool(f.tutor)
    if people and dialect == "sqlite":
        # SQLite has no statistics (nothing runs ANALYZE) and would walk the visible queues'
        # incidents (ix_incidents_queue_state_level) probing each against the year's names:
        # 130-220 ms at 100,000 incidents. Saying the queues term is true for most rows (it is: it
        # limits what a role sees) lets it start from the year's pupils instead (their incidents
        # by ix_incidents_subject_category_seen): 10-50 ms, whatever the mix of states.
        in_queues = func.likely(in_queues, type_=Boolean)
    w: list[ColumnElement[bool]] = [in_queues]
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
    if people:
        # A semi-join on the year's few hundred usernames (ix_users_year_tutor): each is a unique
        # name, so no incident is repeated. PostgreSQL, with its statistics, walks
        # ix_incidents_level_age and stops at a page (0.6 ms at 100,000 incidents).
        who = select(User.username)
        if f.year is not None:
            who = who.where(User.year_group == f.year)
        if f.tutor:
            who = who.where(User.tutor_group == f.tutor)
        w.append(Incident.subject.in_(who))
    return w


def queue_page(session: Session, f: QueueFilter, visible: frozenset[str], policy: Policy | None,
               now: datetime | None = None, page_size: int = PAGE_SIZE) -> QueuePage:
    if not visible:
        return QueuePage([], 0, 0, 0, 1, 1)
    w = _where(f, visible, session.get_bind().dialect.name)
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
                     by_level={int(c[0]): int(c[1]) for c in counts},
                     people=pupils.lookup(session, (i.subject for i in rows)))


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
