"""After an incident is stored: chain its "raised" event, look for patterns, queue its email.

Runs on every new incident whoever stored it (the proxy's BatchWriter, the API, a sensor). The
flag `pipeline_done` makes it safe to run from several places: BatchWriter's `on_incidents`
callback for speed, and the dashboard's worker thread as the catch-all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from esafety.incidents import notify, pattern
from esafety.incidents.audit import SYSTEM, Chain, NewEvent, evidence_digest
from esafety.incidents.ingest import ingest
from esafety.incidents.tables import IncidentLink
from esafety.policy.schema import Policy
from esafety.store.bulk import one_of
from esafety.store.db import sessions
from esafety.store.models import Incident

log = logging.getLogger("esafety.incidents")


def process_new(session: Session, policy: Policy | None, link_base: str, batch: int = 2000) -> int:
    """Process up to `batch` unprocessed incidents in the caller's transaction; returns how many."""
    chain = Chain(session)
    chain.lock()  # also serialises concurrent pipelines: each incident is processed once
    todo = list(session.scalars(select(Incident).where(Incident.pipeline_done.is_(False))
                                .order_by(Incident.id).limit(batch).execution_options(populate_existing=True)))
    if not todo:
        return 0
    to: dict[str, list[str]] = {}
    events = []
    for inc in todo:
        events.append(_raised_event(inc))
        notify.immediate(session, inc, policy, link_base, to)
    chain.extend(events)  # one insert for the batch's "raised" events
    for rep, ids in pattern.find(session, todo):
        for new in ingest(session, [rep], policy):
            for other in ids:
                session.add(IncidentLink(a_id=min(other, new.id), b_id=max(other, new.id), created_by=SYSTEM))
            _raised(session, chain, new, policy, link_base, to, pattern_of=len(ids))
            new.pipeline_done = True
    ids = [inc.id for inc in todo]
    for i in range(0, len(ids), 500):  # one statement per 500 rather than an UPDATE per row
        session.execute(update(Incident).where(one_of(session, Incident.id, ids[i:i + 500])).values(pipeline_done=True)
                        .execution_options(synchronize_session=False))
    return len(todo)


def _raised_event(inc: Incident, pattern_of: int | None = None) -> NewEvent:
    detail = {"ref": inc.ref, "source": inc.source, "category": inc.category, "level": inc.level,
              "queue": inc.queue, "evidence_sha256": evidence_digest(inc)}
    if inc.subject_year_group is not None or inc.subject_tutor_group:
        # The pupil's place when it happened, in the hash-chained history with the evidence.
        detail["year_group"], detail["tutor_group"] = inc.subject_year_group, inc.subject_tutor_group or ""
    if pattern_of:
        detail["pattern_of"] = pattern_of
    return NewEvent(actor=SYSTEM, action="raised", incident_id=inc.id, subject=inc.subject, detail=detail)


def _raised(session: Session, chain: Chain, inc: Incident, policy: Policy | None, link_base: str,
            to: dict[str, list[str]], pattern_of: int | None = None) -> None:
    chain.append(_raised_event(inc, pattern_of))
    notify.immediate(session, inc, policy, link_base, to)


def run_until_done(database_url: str, policy: Policy | None, link_base: str) -> int:
    total = 0
    while True:
        with sessions(database_url)() as s:
            n = process_new(s, policy, link_base)
            s.commit()
        total += n
        if n == 0:
            return total


def make_on_incidents(database_url: str, policy: Callable[[], Policy | None],
                      link_base: str) -> Callable[[list[Incident]], None]:
    """A BatchWriter `on_incidents` callback: new incidents are chained and alerted at once."""

    def on_incidents(_created: list[Incident]) -> None:
        run_until_done(database_url, policy(), link_base)

    return on_incidents
