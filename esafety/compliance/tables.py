"""Tables of device compliance: enrolled devices, enrolment tokens, per-check state and its history,
time-boxed exceptions, and agent sessions (who is signed in at which IP).

`device_check_events` rows are only ever inserted: each is one transition of one check (or, with
`check_id` NULL, of the device's rolled-up state). Secrets are never stored: enrolment tokens and
device credentials are kept as their SHA-256 (they are long random strings, not passwords).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from esafety.store.models import Base, utcnow


class Device(Base):
    """One enrolled endpoint and its rolled-up compliance state."""

    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random hex, sent by the agent
    hostname: Mapped[str] = mapped_column(String(255))
    platform: Mapped[str] = mapped_column(String(16))  # linux | windows | macos
    os_version: Mapped[str] = mapped_column(String(200), default="")
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    macs: Mapped[list[str]] = mapped_column(JSON, default=list)
    owner: Mapped[str | None] = mapped_column(String(120), nullable=True)  # assigned user (from the token)
    note: Mapped[str] = mapped_column(String(200), default="")
    credential_sha256: Mapped[str] = mapped_column(String(64))
    enrolled_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime | None] = mapped_column(nullable=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    last_user: Mapped[str | None] = mapped_column(String(120), nullable=True)  # as reported, first console user
    snapshot_at: Mapped[datetime | None] = mapped_column(nullable=True)  # the last full snapshot accepted
    # Reports were lost (a gap in seq): the server's view may be wrong until the next snapshot.
    needs_snapshot: Mapped[bool] = mapped_column(default=False)
    monitor_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # esafety.compliance.rollup.DeviceState
    state_since: Mapped[datetime] = mapped_column(default=utcnow)
    # When a tamper incident was raised for the current silence (cleared by the next report).
    tamper_raised_at: Mapped[datetime | None] = mapped_column(nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(nullable=True)
    retired_by: Mapped[str | None] = mapped_column(String(120), nullable=True)

    __table_args__ = (Index("ix_devices_state", "state"), Index("ix_devices_hostname", "hostname"))


class DeviceMac(Base):
    """MAC addresses a device reported, for lookups by MAC (WiFi registrations, DHCP leases)."""

    __tablename__ = "device_macs"
    mac: Mapped[str] = mapped_column(String(17), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)

    __table_args__ = (Index("ix_device_macs_device", "device_id"),)


class EnrolmentToken(Base):
    """A one-time token an agent trades for its credential. Only its hash is kept."""

    __tablename__ = "enrolment_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    note: Mapped[str] = mapped_column(String(200), default="")
    owner: Mapped[str | None] = mapped_column(String(120), nullable=True)  # the device's assigned user, if any
    used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    device_id: Mapped[str | None] = mapped_column(String(32), nullable=True)


class DeviceCheck(Base):
    """The latest result of one check on one device."""

    __tablename__ = "device_checks"
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    check_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # pass | fail | error | not_applicable
    critical: Mapped[bool] = mapped_column(default=False)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    checked_at: Mapped[datetime]
    since: Mapped[datetime]  # when it entered this status (the grace clock for critical failures)

    __table_args__ = (Index("ix_device_checks_status", "check_id", "status"),)


class DeviceCheckEvent(Base):
    """One transition, insert-only: a check's status, or (check_id NULL) the device's state."""

    __tablename__ = "device_check_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    check_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # the report that carried it
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    note: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_device_check_events_device", "device_id", "id"),)


class DeviceException(Base):
    """A time-boxed permission for one check to fail on one device, approved by a named person
    (e.g. a coding class's dev server listening on port 3000 until Friday)."""

    __tablename__ = "device_exceptions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    check_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    approved_by: Mapped[str] = mapped_column(String(200))  # the named person who approved it
    created_by: Mapped[str] = mapped_column(String(120))  # the dashboard user who recorded it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(120), nullable=True)

    __table_args__ = (Index("ix_device_exceptions_device", "device_id", "expires_at"),)


class AgentSession(Base):
    """Who was signed in on a device at which address, as its agent last reported."""

    __tablename__ = "agent_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    username: Mapped[str] = mapped_column(String(120), default="")  # "" when nobody known is signed in
    ip: Mapped[str] = mapped_column(String(45))
    mac: Mapped[str | None] = mapped_column(String(17), nullable=True)
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("device_id", "username", "ip", name="uq_agent_sessions_device_user_ip"),
                      Index("ix_agent_sessions_ip", "ip", "last_seen"),
                      Index("ix_agent_sessions_seen", "last_seen"))
