"""Incidents raised by device compliance, through esafety.incidents (routed by the policy).

* device_noncompliance (IT services): a critical check turned to fail (one incident per report,
  listing every critical check that turned, each with its evidence and AUP clause).
* agent_tamper (IT services) with monitoring_tamper (the DSL), linked: the agent went silent while
  the device was still on the network, the safeguarding monitor stopped or its hash changed.
Keys are derived from the device and the report (or the silence), so a retry never doubles one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from esafety import metrics
from esafety.compliance.tables import Device
from esafety.incidents.audit import SYSTEM
from esafety.incidents.ingest import ingest
from esafety.incidents.model import IncidentReport
from esafety.incidents.tables import IncidentLink
from esafety.policy.schema import Policy
from esafety.store.models import Incident

NONCOMPLIANCE = "device_noncompliance"
TAMPER = "agent_tamper"
MONITORING = "monitoring_tamper"
DEFAULT_LEVELS = {NONCOMPLIANCE: 2, TAMPER: 3, MONITORING: 3}


@dataclass(frozen=True)
class FailedCheck:
    id: str
    title: str
    clause: str
    evidence: dict[str, Any] = field(default_factory=dict)


def _key(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:40]


def _level(policy: Policy | None, category: str) -> int:
    cat = policy.categories.get(category) if policy else None
    return cat.level if cat else DEFAULT_LEVELS[category]


def _device_evidence(device: Device) -> dict[str, Any]:
    return {"device_id": device.id, "hostname": device.hostname, "platform": device.platform,
            "os_version": device.os_version, "agent_version": device.agent_version,
            "last_seen": device.last_seen.isoformat() if device.last_seen else None}


def noncompliance(device: Device, user: str | None, checks: list[FailedCheck], seq: int, at: datetime,
                  policy: Policy | None) -> IncidentReport:
    names = ", ".join(c.title for c in checks)
    return IncidentReport(
        source="agent", category=NONCOMPLIANCE, level=_level(policy, NONCOMPLIANCE),
        summary=f"{device.hostname}: critical check failing: {names}"[:500], subject=user, device=device.hostname[:120],
        client_ip=device.last_ip, occurred_at=at, key=_key("noncompliance", device.id, seq),
        evidence={**_device_evidence(device), "seq": seq,
                  "checks": [{"id": c.id, "title": c.title, "clause": c.clause, "evidence": c.evidence}
                             for c in checks]})


def tamper(device: Device, user: str | None, why: str, episode: str, at: datetime, policy: Policy | None,
           evidence: dict[str, Any]) -> list[IncidentReport]:
    """The pair: IT fixes the device, the DSL hears that safeguarding monitoring was stopped."""
    ev = {**_device_evidence(device), "why": why, **evidence}
    common = {"source": "agent", "subject": user, "device": device.hostname[:120], "client_ip": device.last_ip,
              "occurred_at": at, "evidence": ev}
    return [
        IncidentReport(category=TAMPER, level=_level(policy, TAMPER), summary=f"{device.hostname}: {why}"[:500],
                       key=_key("tamper", device.id, episode), **common),  # type: ignore[arg-type]
        IncidentReport(category=MONITORING, level=_level(policy, MONITORING),
                       summary=f"Safeguarding monitoring stopped on {device.hostname}: {why}"[:500],
                       key=_key("monitoring", device.id, episode), **common),  # type: ignore[arg-type]
    ]


def store(session: Session, reports: list[IncidentReport], policy: Policy | None) -> list[Incident]:
    """Ingest (routed, de-duplicated); a tamper pair is linked so the DSL and IT see each other's."""
    if not reports:
        return []
    created = ingest(session, reports, policy)
    by_cat = {i.category: i for i in created}
    if TAMPER in by_cat and MONITORING in by_cat:
        a, b = sorted((by_cat[TAMPER].id, by_cat[MONITORING].id))
        session.add(IncidentLink(a_id=a, b_id=b, created_by=SYSTEM))
    if any(r.category == TAMPER for r in reports):
        metrics.DEVICE_TAMPER.inc()
    session.flush()
    return created
