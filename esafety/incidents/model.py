"""What any source raises: a typed report that the ingest step routes, de-duplicates and stores."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

SOURCES = ("proxy", "agent", "sensor", "staff")
EVIDENCE_MAX_BYTES = 16_384


_REFS: list[str] = []


def new_ref() -> str:
    """Short reference quoted on block pages and in emails; unguessable, not a row id.

    Every request gets one: taken from a batch of 256 drawn at once (one os.urandom call, not
    one a request). The batch is local until drawn, so threads never share a reference."""
    try:
        return _REFS.pop()
    except IndexError:
        raw = secrets.token_hex(5 * 256).upper()
        batch = [raw[i:i + 10] for i in range(0, len(raw), 10)]
        ref = batch.pop()
        _REFS.extend(batch)
        return ref


@dataclass(frozen=True)
class IncidentReport:
    source: str
    category: str  # policy category, e.g. self_harm, vpn
    level: int  # 1-5 as raised; routing may raise it
    summary: str
    subject: str | None = None  # username, when known
    device: str | None = None
    client_ip: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    key: str = ""  # idempotency key; derived when empty
    ref: str = field(default_factory=new_ref)

    def idempotency_key(self) -> str:
        if self.key:
            return self.key
        basis = "|".join(str(x) for x in (self.source, self.category, self.subject, self.client_ip,
                                           self.occurred_at.isoformat(), self.ref))
        return hashlib.sha256(basis.encode()).hexdigest()[:40]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["occurred_at"] = self.occurred_at.isoformat()
        d["key"] = self.idempotency_key()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IncidentReport:
        d = dict(d)
        d["occurred_at"] = datetime.fromisoformat(d["occurred_at"])
        return cls(**d)
