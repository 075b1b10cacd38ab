"""The append-only, hash-chained history of every incident action, and its verification.

Each event's hash covers the previous event's hash and all of its own fields, so altering,
inserting or deleting any row is found by `verify` at the first link it breaks. Appenders lock
the single `audit_head` row first; that serialises them on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from esafety.incidents.tables import GENESIS_HASH, AuditHead, IncidentEvent
from esafety.store.models import Incident

SYSTEM = "system"  # the actor for events nobody typed: raised, escalated, notified


def _ts(dt: datetime) -> str:
    # SQLite hands datetimes back naive; both stores keep microseconds, so UTC ISO text is stable.
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC).isoformat(timespec="microseconds")


def canonical(detail: dict[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def event_hash(prev: str, seq: int, incident_id: int | None, subject: str | None, at: datetime, actor: str,
               action: str, detail: dict[str, Any]) -> str:
    basis = "\x1f".join((prev, str(seq), str(incident_id or ""), subject or "", _ts(at), actor, action,
                         canonical(detail)))
    return hashlib.sha256(basis.encode()).hexdigest()


def evidence_digest(inc: Incident) -> str:
    """What the "raised" event pins: evidence and summary as first stored."""
    return hashlib.sha256(canonical({"summary": inc.summary, "evidence": inc.evidence}).encode()).hexdigest()


@dataclass(frozen=True)
class NewEvent:
    actor: str
    action: str
    incident_id: int | None = None
    subject: str | None = None
    detail: dict[str, Any] | None = None


class Chain:
    """Appends within the caller's transaction. `lock()` first, then read what you will change."""

    def __init__(self, session: Session):
        self.session = session
        self._head: AuditHead | None = None

    def lock(self) -> None:
        if self._head is None:
            # A write to the head row takes the store's write lock (SQLite) / row lock (PostgreSQL);
            # RETURNING reads it back in the same round trip.
            self._head = self.session.scalars(
                update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq).returning(AuditHead)
                .execution_options(populate_existing=True)).one()

    def append(self, ev: NewEvent, at: datetime | None = None) -> IncidentEvent:
        self.lock()
        head = self._head
        assert head is not None
        at = at or datetime.now(UTC)
        detail = ev.detail or {}
        seq = head.seq + 1
        h = event_hash(head.hash, seq, ev.incident_id, ev.subject, at, ev.actor, ev.action, detail)
        row = IncidentEvent(seq=seq, incident_id=ev.incident_id, subject=ev.subject, at=at, actor=ev.actor,
                            action=ev.action, detail=detail, prev_hash=head.hash, hash=h)
        self.session.add(row)
        head.seq, head.hash = seq, h
        return row

    def extend(self, events: list[NewEvent], at: datetime | None = None) -> None:
        """Append many events in one multi-row insert: a batch of raised incidents chains in one
        round trip instead of an ORM flush that fetches back every row's id."""
        if not events:
            return
        self.lock()
        head = self._head
        assert head is not None
        self.session.flush()  # events appended one by one before these get the lower ids, as their seq
        at = at or datetime.now(UTC)
        seq, prev = head.seq, head.hash
        rows: list[dict[str, Any]] = []
        for ev in events:
            seq += 1
            detail = ev.detail or {}
            h = event_hash(prev, seq, ev.incident_id, ev.subject, at, ev.actor, ev.action, detail)
            rows.append({"seq": seq, "incident_id": ev.incident_id, "subject": ev.subject, "at": at,
                         "actor": ev.actor, "action": ev.action, "detail": detail, "prev_hash": prev, "hash": h})
            prev = h
        self.session.execute(insert(cast(Table, IncidentEvent.__table__)), rows)
        head.seq, head.hash = seq, prev

    def add(self, inc: Incident | None, actor: str, action: str, **detail: Any) -> IncidentEvent:
        return self.append(NewEvent(actor=actor, action=action, incident_id=inc.id if inc else None,
                                    subject=inc.subject if inc else detail.pop("subject", None), detail=detail))


# -- verification ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    seq: int
    event_id: int | None
    what: str

    def __str__(self) -> str:
        where = f"event seq {self.seq}" + (f" (id {self.event_id})" if self.event_id is not None else "")
        return f"{where}: {self.what}"


@dataclass(frozen=True)
class VerifyResult:
    events: int
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _rows(session: Session, batch: int = 5000) -> Iterator[IncidentEvent]:
    last = 0
    while True:
        rows = list(session.scalars(select(IncidentEvent).where(IncidentEvent.seq > last)
                                    .order_by(IncidentEvent.seq).limit(batch)))
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


def verify(session: Session) -> VerifyResult:
    """Walk the chain in order; stop at the first broken link and say which and why."""
    prev, expected_seq, n = GENESIS_HASH, 1, 0
    raised: dict[int, str] = {}
    for ev in _rows(session):
        if ev.seq != expected_seq:
            return VerifyResult(n, Problem(expected_seq, None,
                                           f"missing: the chain jumps to seq {ev.seq} (deleted rows)"))
        if ev.prev_hash != prev:
            return VerifyResult(n, Problem(ev.seq, ev.id, "previous-hash link broken (a row before it was "
                                                          "replaced or the chain was re-written)"))
        actual = event_hash(ev.prev_hash, ev.seq, ev.incident_id, ev.subject, ev.at, ev.actor, ev.action, ev.detail)
        if actual != ev.hash:
            return VerifyResult(n, Problem(ev.seq, ev.id, f"contents altered ({ev.action} by {ev.actor})"))
        if ev.action == "raised" and ev.incident_id is not None and "evidence_sha256" in ev.detail:
            raised[ev.incident_id] = (ev.detail["evidence_sha256"], ev.seq, ev.id)  # type: ignore[assignment]
        prev, expected_seq, n = ev.hash, ev.seq + 1, n + 1
    head = session.get(AuditHead, 1)
    if head is not None and (head.seq, head.hash) != (expected_seq - 1, prev):
        return VerifyResult(n, Problem(head.seq, None, f"events after seq {expected_seq - 1} are missing "
                                                       f"(the head records seq {head.seq})"))
    return VerifyResult(n, _check_evidence(session, raised))


def _check_evidence(session: Session, raised: dict[int, Any]) -> Problem | None:
    """Evidence is pinned by its "raised" event: an edited incident row is found too."""
    ids = sorted(raised)
    for i in range(0, len(ids), 1000):
        for inc in session.scalars(select(Incident).where(Incident.id.in_(ids[i:i + 1000])).order_by(Incident.id)):
            digest, seq, ev_id = raised[inc.id]
            if evidence_digest(inc) != digest:
                return Problem(seq, ev_id, f"evidence of incident {inc.ref} (id {inc.id}) no longer matches "
                                           "what was recorded when it was raised")
    return None
