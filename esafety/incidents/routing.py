"""Routing: the policy's rules send each incident to a queue and may raise its level."""

from __future__ import annotations

from dataclasses import dataclass

from esafety.incidents.model import IncidentReport
from esafety.policy.schema import Policy


@dataclass(frozen=True)
class Routed:
    queue: str
    level: int
    kcsie: str


def route(report: IncidentReport, policy: Policy) -> Routed:
    cat = policy.categories.get(report.category)
    level = report.level
    kcsie = cat.kcsie if cat else "content"
    for r in policy.routing:
        if (not r.categories or report.category in r.categories) and level >= r.min_level:
            return Routed(r.queue, max(level, r.level or level), kcsie)
    return Routed(policy.default_queue, level, kcsie)
