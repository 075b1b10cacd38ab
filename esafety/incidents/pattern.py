"""Pattern escalation: several lower-level incidents for one pupil in one category within a few
days say more together than apart, so they raise one level-4 incident for the DSL's attention."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from esafety.incidents.model import IncidentReport
from esafety.store.bulk import one_of
from esafety.store.models import Incident

SOURCE = "pattern"


@dataclass(frozen=True)
class PatternRule:
    count: int = 3  # this many incidents (a de-duplicated burst counts once) ...
    days: int = 7  # ... within this many days ...
    below_level: int = 4  # ... each below this level ...
    level: int = 4  # ... raise one incident at this level.


DEFAULT_RULE = PatternRule()


def _candidates(session: Session, pairs: set[tuple[str, str]], rule: PatternRule,
                since: datetime) -> set[tuple[str, str]]:
    """One grouped query per 500 pupils narrows the pairs to those over the threshold."""
    subjects = sorted({s for s, _ in pairs if s})
    hits: set[tuple[str, str]] = set()
    with session.no_autoflush:
        for i in range(0, len(subjects), 500):
            rows = session.execute(
                select(Incident.subject, Incident.category).where(
                    one_of(session, Incident.subject, subjects[i:i + 500]), Incident.level < rule.below_level,
                    Incident.source != SOURCE, Incident.occurred_at >= since)
                .group_by(Incident.subject, Incident.category).having(func.count() >= rule.count))
            hits.update((s, c) for s, c in rows if s is not None and (s, c) in pairs)
    return hits


def find(session: Session, new: Iterable[Incident], rule: PatternRule = DEFAULT_RULE,
         now: datetime | None = None) -> list[tuple[IncidentReport, list[int]]]:
    """Reports to raise for the pupils and categories among `new`, with the incidents behind each."""
    now = now or datetime.now(UTC)
    since = now - timedelta(days=rule.days)
    pairs = {(i.subject, i.category) for i in new if i.subject and i.level < rule.below_level and i.source != SOURCE}
    out: list[tuple[IncidentReport, list[int]]] = []
    for subject, category in sorted(_candidates(session, pairs, rule, since)):
        ids = list(session.scalars(
            select(Incident.id).where(Incident.subject == subject, Incident.category == category,
                                      Incident.level < rule.below_level, Incident.source != SOURCE,
                                      Incident.occurred_at >= since).order_by(Incident.id)))
        if len(ids) < rule.count:
            continue
        already = session.scalar(select(func.count()).select_from(Incident).where(
            Incident.subject == subject, Incident.category == category, Incident.source == SOURCE,
            Incident.created_at >= since))
        if already:
            continue  # one pattern incident per pupil and category per window; new ones join the burst count
        key = hashlib.sha256(f"pattern|{subject}|{category}|{ids[-1]}".encode()).hexdigest()[:40]
        rep = IncidentReport(
            source=SOURCE, category=category, level=rule.level, subject=subject, key=key, occurred_at=now,
            summary=f"{len(ids)} {category} incidents for this pupil within {rule.days} days",
            evidence={"pattern": {"count": len(ids), "days": rule.days, "incident_ids": ids[-50:]}},
        )
        out.append((rep, ids))
    return out
