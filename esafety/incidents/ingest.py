"""Store incident reports: idempotent, routed, and de-duplicated in bursts.

A burst (same subject, category and source within the window) becomes one incident with a count,
so a pupil hammering a blocked VPN site makes one record for IT, not three hundred.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from esafety.incidents.model import IncidentReport
from esafety.incidents.routing import route
from esafety.policy.schema import Policy
from esafety.store.models import Incident

BURST_WINDOW = timedelta(minutes=10)


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def ingest(session: Session, reports: Iterable[IncidentReport], policy: Policy | None) -> list[Incident]:
    """Add reports in order; returns the incidents created (not the bursts merged). Caller commits."""
    created: list[Incident] = []
    for rep in reports:
        key = rep.idempotency_key()
        if session.scalar(select(Incident.id).where(Incident.key == key)) is not None:
            continue  # replayed from a spool: already stored
        routed = route(rep, policy) if policy else None
        queue = routed.queue if routed else "dsl"
        level = routed.level if routed else rep.level
        if rep.subject or rep.client_ip:
            who = Incident.subject == rep.subject if rep.subject else Incident.client_ip == rep.client_ip
            burst = session.scalar(
                select(Incident).where(who, Incident.category == rep.category, Incident.source == rep.source,
                                       Incident.state.in_(("new", "triage")),
                                       Incident.last_seen_at >= rep.occurred_at - BURST_WINDOW)
                .order_by(Incident.id.desc()).limit(1)
            )
            if burst is not None and burst.level >= level:
                burst.count += 1
                burst.last_seen_at = max(_aware(burst.last_seen_at), _aware(rep.occurred_at))
                continue
        inc = Incident(
            key=key, ref=rep.ref, source=rep.source, subject=rep.subject, device=rep.device,
            client_ip=rep.client_ip, category=rep.category, kcsie=routed.kcsie if routed else "content",
            level=level, queue=queue, state="new", summary=rep.summary[:500], evidence=rep.evidence,
            count=1, occurred_at=rep.occurred_at, last_seen_at=rep.occurred_at,
        )
        session.add(inc)
        session.flush()
        created.append(inc)
    return created
