"""Tables shared by every part. Parts add their own tables in their own modules on the same Base."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Date, DateTime, Index, Integer, String, Text, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class User(Base):
    """A person: pupil, staff or visitor. Dashboard roles are empty for pupils."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(120), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str] = mapped_column(String(254), default="")  # the school address, never user-typed
    policy_group: Mapped[str] = mapped_column(String(64))
    roles: Mapped[str] = mapped_column(String(200), default="")  # comma-separated dashboard roles
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Added by migration identity_0001 (esafety/identity/): where the person comes from and their
    # place in the school. `source` owns the record: roster (the MIS export), directory (LDAP/AD
    # sync) or local (esafety users add); an import never touches another source's people.
    source: Mapped[str] = mapped_column(String(16), default="local", server_default="local")
    upn: Mapped[str | None] = mapped_column(String(32), nullable=True)  # DfE unique pupil number
    admission_no: Mapped[str | None] = mapped_column(String(32), nullable=True)
    year_group: Mapped[int | None] = mapped_column(Integer, nullable=True)  # NC year: 7 = Year 7
    tutor_group: Mapped[str] = mapped_column(String(32), default="", server_default="")
    directory_dn: Mapped[str | None] = mapped_column(String(500), nullable=True)  # the LDAP entry it binds as
    leaving_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(nullable=True)  # left the roster or directory
    updated_at: Mapped[datetime | None] = mapped_column(nullable=True)  # any change by an import

    __table_args__ = (Index("ix_users_year_tutor", "year_group", "tutor_group"),
                      Index("ix_users_source", "source"),
                      Index("uq_users_upn", "upn", unique=True),  # NULLs do not collide
                      Index("uq_users_admission_no", "admission_no", unique=True))


class IpBinding(Base):
    """Who is behind a client IP right now: fed by agents, WiFi registrations, RADIUS accounting
    (802.1X sign-ins) and the captive portal."""

    __tablename__ = "ip_bindings"
    ip: Mapped[str] = mapped_column(String(45), primary_key=True)
    username: Mapped[str] = mapped_column(String(120))
    device: Mapped[str | None] = mapped_column(String(120), nullable=True)
    source: Mapped[str] = mapped_column(String(16))  # agent | wifi | static | radius | portal
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # Added by identity_0001: the session that made the binding (RADIUS Acct-Session-Id, portal
    # session), so a Stop ends only its own binding, and the NAS that reported it.
    session_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    nas: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AccessLog(Base):
    __tablename__ = "access_log"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    ts: Mapped[datetime]
    ref: Mapped[str] = mapped_column(String(16))
    username: Mapped[str | None] = mapped_column(String(120), nullable=True)
    policy_group: Mapped[str] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(String(120), nullable=True)
    client_ip: Mapped[str] = mapped_column(String(45))
    method: Mapped[str] = mapped_column(String(16))
    scheme: Mapped[str] = mapped_column(String(8))
    host: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)
    status: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(120))

    __table_args__ = (Index("ix_access_log_ts", "ts"), Index("ix_access_log_user_ts", "username", "ts"))


class Incident(Base):
    """One safeguarding or AUP concern, from any source. Evidence is never edited after creation."""

    __tablename__ = "incidents"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)  # idempotency key from the source
    ref: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))  # proxy | agent | sensor | staff
    subject: Mapped[str | None] = mapped_column(String(120), nullable=True)
    device: Mapped[str | None] = mapped_column(String(120), nullable=True)
    client_ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    category: Mapped[str] = mapped_column(String(64))  # policy category
    kcsie: Mapped[str] = mapped_column(String(16))  # content | contact | conduct | commerce
    level: Mapped[int] = mapped_column(Integer)
    queue: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="new")
    summary: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    count: Mapped[int] = mapped_column(Integer, default=1)
    occurred_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column(nullable=True)
    assigned_to: Mapped[str | None] = mapped_column(String(120), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Added by migration incidents_0001 (the DSL workflow, esafety/incidents/):
    acknowledged_by: Mapped[str | None] = mapped_column(String(120), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    escalations: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # on-call steps taken
    # False until the incident pipeline has chained its "raised" event, checked patterns and queued email.
    pipeline_done: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Added by migration incidents_0002: the subject's year and tutor group when the incident was
    # stored (esafety/incidents/pupils.py), so a chronology read years later says "Year 8, 8RB at
    # the time". NULL: no subject, not a known user, or stored before the migration. Not evidence.
    subject_year_group: Mapped[int | None] = mapped_column(Integer, nullable=True)
    subject_tutor_group: Mapped[str | None] = mapped_column(String(32), nullable=True)

    __table_args__ = (
        Index("ix_incidents_queue_state_level", "queue", "state", "level"),
        Index("ix_incidents_pipeline", "pipeline_done"),
        Index("ix_incidents_subject_category_seen", "subject", "category", "last_seen_at"),
        Index("ix_incidents_created", "created_at"),
    )


# The DSL queue's order (highest level, then oldest): defined outside the class to use .desc().
Index("ix_incidents_level_age", Incident.level.desc(), Incident.created_at, Incident.id)
