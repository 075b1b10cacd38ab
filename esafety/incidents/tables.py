"""Tables of the incident workflow: the hash-chained history, links, idempotency keys, the outbox.

Nothing here is ever updated except the chain head and outbox bookkeeping: evidence and notes
live in `incident_events` rows that are only ever inserted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from esafety.store.models import Base, utcnow

GENESIS_HASH = "0" * 64


class IncidentEvent(Base):
    """One entry of the append-only history. `seq` is the chain position; `hash` covers the
    previous hash and every field, so editing or deleting any row breaks the chain after it."""

    __tablename__ = "incident_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    incident_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    subject: Mapped[str | None] = mapped_column(String(120), nullable=True)  # pupil, for chronologies
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_incident_events_incident", "incident_id", "seq"),
        Index("ix_incident_events_subject", "subject", "seq"),
    )


class AuditHead(Base):
    """A single row holding the chain's tip. Appenders update it first, which serialises them
    on SQLite (the write lock) and PostgreSQL (the row lock) alike, so the chain never forks."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class IncidentLink(Base):
    """Two incidents a DSL judged related (same pupil, same episode). Stored once, a < b."""

    __tablename__ = "incident_links"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    a_id: Mapped[int] = mapped_column(Integer)
    b_id: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("a_id", "b_id", name="uq_incident_links_pair"),
                      Index("ix_incident_links_b", "b_id"))


class IncidentKey(Base):
    """Idempotency keys of API reports merged into an existing burst (created ones use incidents.key)."""

    __tablename__ = "incident_keys"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    incident_id: Mapped[int] = mapped_column(Integer)


class NotificationOutbox(Base):
    """An email to send. Written in the same transaction as what caused it; a background thread
    sends it and retries with back-off, so a mail server outage loses nothing."""

    __tablename__ = "notification_outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # immediate | escalation | digest
    incident_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    recipient: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(8), default="pending")  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(300), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(nullable=True)

    __table_args__ = (Index("ix_notification_outbox_due", "status", "next_attempt_at"),)


class DigestMark(Base):
    """The last incident id covered by each queue's daily digest, and when it went."""

    __tablename__ = "digest_marks"
    queue: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_incident_id: Mapped[int] = mapped_column(Integer, default=0)
    sent_on: Mapped[str] = mapped_column(String(10), default="")  # YYYY-MM-DD, school timezone
