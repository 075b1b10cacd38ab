"""Store incident reports: idempotent, routed, and de-duplicated in bursts.

A burst (same subject, category and source within the window) becomes one incident with a count,
so a pupil hammering a blocked VPN site makes one record for IT, not three hundred.

A batch is stored with one key lookup, one lookup of its subjects' year and tutor group (the
snapshot "at the time", esafety/incidents/pupils.py) and one multi-row insert (bursts within the
batch are tracked in memory), so the proxy's writer keeps up with thousands of reports a second.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import Table, insert, select, union_all
from sqlalchemy.orm import Session, make_transient_to_detached

from esafety import metrics
from esafety.incidents import pupils
from esafety.incidents.model import IncidentReport
from esafety.incidents.routing import route
from esafety.incidents.tables import IncidentKey
from esafety.policy.schema import Policy
from esafety.store.bulk import insert_with_ids, one_of
from esafety.store.models import Incident, utcnow

BURST_WINDOW = timedelta(minutes=10)
_KEY_CHUNK = 500


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _existing_keys(session: Session, keys: list[str]) -> set[str]:
    """Keys already stored: of incidents created, and of reports merged into a burst."""
    found: set[str] = set()
    for i in range(0, len(keys), _KEY_CHUNK):
        chunk = keys[i:i + _KEY_CHUNK]
        found.update(session.scalars(union_all(  # one round trip for both tables
            select(Incident.key).where(one_of(session, Incident.key, chunk)),
            select(IncidentKey.key).where(one_of(session, IncidentKey.key, chunk)))))
    return found


def _in_burst(inc: Incident, rep: IncidentReport) -> bool:
    return inc.state in ("new", "triage") and _aware(inc.last_seen_at) >= _aware(rep.occurred_at) - BURST_WINDOW


BurstKey = tuple[str, str, str, str]


def _burst_key(rep: IncidentReport) -> BurstKey | None:
    if rep.subject:
        return ("s", rep.subject, rep.category, rep.source)
    if rep.client_ip:
        return ("ip", rep.client_ip, rep.category, rep.source)
    return None


def _open_bursts(session: Session, reports: list[IncidentReport]) -> dict[BurstKey, list[Incident]]:
    """Every stored incident a report in this batch might join, newest first, in a few queries."""
    out: dict[BurstKey, list[Incident]] = {}
    if not reports:
        return out
    since = min(_aware(r.occurred_at) for r in reports) - BURST_WINDOW
    subjects = sorted({r.subject for r in reports if r.subject})
    ips = sorted({r.client_ip for r in reports if not r.subject and r.client_ip})
    for kind, column, values in (("s", Incident.subject, subjects), ("ip", Incident.client_ip, ips)):
        for i in range(0, len(values), _KEY_CHUNK):
            for inc in session.scalars(select(Incident).where(
                    one_of(session, column, values[i:i + _KEY_CHUNK]), Incident.state.in_(("new", "triage")),
                    Incident.last_seen_at >= since)):
                who = inc.subject if kind == "s" else inc.client_ip
                out.setdefault((kind, who, inc.category, inc.source), []).append(inc)  # type: ignore[arg-type]
    for incs in out.values():
        incs.sort(key=lambda x: x.id, reverse=True)
    return out


# Every column of a new incident, so the objects handed back are complete without a reload.
_UNSET = {"acknowledged_at": None, "assigned_to": None, "outcome": None, "acknowledged_by": None,
          "closed_at": None, "escalations": 0, "pipeline_done": False,
          "subject_year_group": None, "subject_tutor_group": None}


def ingest(session: Session, reports: Iterable[IncidentReport], policy: Policy | None) -> list[Incident]:
    """Add reports in order; returns the incidents created (not the bursts merged). Caller commits."""
    reports = list(reports)
    keys = [rep.idempotency_key() for rep in reports]
    seen = _existing_keys(session, keys)  # replayed from a spool: already stored
    todo = [(rep, key) for rep, key in zip(reports, keys, strict=True) if key not in seen]
    bursts = _open_bursts(session, [rep for rep, _ in todo])
    created: list[Incident] = []
    merged: list[tuple[str, Incident]] = []  # keys of merged reports, so a replay does not count them twice
    now = utcnow()
    with session.no_autoflush:  # new incidents join `bursts` in memory; one multi-row insert at the end
        for rep, key in todo:
            if key in seen:
                continue  # the same key twice in one batch
            seen.add(key)
            routed = route(rep, policy) if policy else None
            queue = routed.queue if routed else "dsl"
            level = routed.level if routed else rep.level
            bkey = _burst_key(rep)
            if bkey is not None:
                # The newest incident still in its burst window, as the store would return it.
                burst = next((b for b in bursts.get(bkey, ()) if _in_burst(b, rep)), None)
                if burst is not None and burst.level >= level:
                    burst.count += 1
                    burst.last_seen_at = max(_aware(burst.last_seen_at), _aware(rep.occurred_at))
                    merged.append((key, burst))
                    continue
            inc = Incident(
                key=key, ref=rep.ref, source=rep.source, subject=rep.subject, device=rep.device,
                client_ip=rep.client_ip, category=rep.category, kcsie=routed.kcsie if routed else "content",
                level=level, queue=queue, state="new", summary=rep.summary[:500], evidence=rep.evidence,
                count=1, occurred_at=rep.occurred_at, last_seen_at=rep.occurred_at, created_at=now, **_UNSET,
            )
            created.append(inc)  # not added to the session: inserted below in one statement
            if bkey is not None:
                bursts.setdefault(bkey, []).insert(0, inc)  # newest first
    with session.no_autoflush:  # year and tutor group "at the time": one users lookup for the batch
        pupils.snapshot(session, created)
    table = cast(Table, Incident.__table__)
    cols = [c.key for c in table.columns if c.key != "id"]
    # Built after the loop: an incident created in this batch may have absorbed later reports.
    ids = insert_with_ids(session, table, [{c: getattr(inc, c) for c in cols} for inc in created])
    for inc, id_ in zip(created, ids, strict=True):
        inc.id = id_
        make_transient_to_detached(inc)  # the row is stored: attach it as loaded, nothing pending
        session.add(inc)
    if merged:
        session.execute(insert(IncidentKey), [{"key": key, "incident_id": inc.id} for key, inc in merged])
    session.flush()  # the merged bursts' new counts
    # Counted here, where every source's incidents are made (proxy, sensor, agents, API, scans); a
    # transaction that then fails to commit is counted anyway: rare, and the spool retries it.
    for inc in created:
        metrics.INCIDENTS_RAISED.labels(source=inc.source, queue=inc.queue, level=str(inc.level)).inc()
    return created
