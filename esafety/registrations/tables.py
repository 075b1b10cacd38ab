"""Tables of WiFi registration: AUP versions and acceptances, registrations, their history, bans.

History rows (`wifi_registration_events`) are only ever inserted. A MAC address can be held by
one live registration at a time: `live_mac` carries the MAC while the registration is live and
is cleared when it ends, and a unique constraint on it refuses a second live claim (NULLs do not
collide on SQLite or PostgreSQL), so two racing requests cannot both succeed.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from esafety.store.models import Base, utcnow


class AupVersion(Base):
    """One published text of the Acceptable Use Policy. The newest is the current one."""

    __tablename__ = "aup_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    text_sha256: Mapped[str] = mapped_column(String(64))
    published_by: Mapped[str] = mapped_column(String(120))
    published_at: Mapped[datetime] = mapped_column(default=utcnow)


class AupAcceptance(Base):
    """A person's acceptance of one AUP version; for a pupil, with their parent or guardian's too."""

    __tablename__ = "aup_acceptances"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(120))
    aup_version_id: Mapped[int] = mapped_column(ForeignKey("aup_versions.id"))
    text_sha256: Mapped[str] = mapped_column(String(64))  # the exact text accepted
    accepted_at: Mapped[datetime] = mapped_column(default=utcnow)
    client_ip: Mapped[str] = mapped_column(String(45), default="")
    parent_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    parent_accepted_on: Mapped[date | None] = mapped_column(Date, nullable=True)

    __table_args__ = (UniqueConstraint("username", "aup_version_id", name="uq_aup_acceptances_user_version"),)


class Registration(Base):
    """A request to put one personal device on the school WiFi, and its life after approval."""

    __tablename__ = "wifi_registrations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(120))
    device_name: Mapped[str] = mapped_column(String(80))
    device_type: Mapped[str] = mapped_column(String(16))
    mac: Mapped[str] = mapped_column(String(17))  # aa:bb:cc:dd:ee:ff
    live_mac: Mapped[str | None] = mapped_column(String(17), nullable=True)
    mac_private: Mapped[bool] = mapped_column(Boolean, default=False)  # locally administered address
    state: Mapped[str] = mapped_column(String(20))
    aup_version_id: Mapped[int] = mapped_column(ForeignKey("aup_versions.id"))
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    due_at: Mapped[datetime]  # submitted + 1 working day on the school calendar
    sla_breached: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(120), nullable=True)
    decision_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    activated_at: Mapped[datetime | None] = mapped_column(nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    noncompliant_since: Mapped[datetime | None] = mapped_column(nullable=True)
    failed_checks: Mapped[str] = mapped_column(String(200), default="")  # comma-separated check names
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("live_mac", name="uq_wifi_registrations_live_mac"),
        Index("ix_wifi_registrations_state_submitted", "state", "submitted_at"),
        Index("ix_wifi_registrations_user", "username"),
    )


class RegistrationEvent(Base):
    """One transition: who moved the registration from what to what, and why. Insert-only."""

    __tablename__ = "wifi_registration_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    registration_id: Mapped[int] = mapped_column(ForeignKey("wifi_registrations.id"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(20))
    from_state: Mapped[str | None] = mapped_column(String(20), nullable=True)
    to_state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)  # revocation reason code
    note: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_wifi_registration_events_reg", "registration_id", "id"),)


class WifiBan(Base):
    """A user who may not register devices: sharing credentials removes WiFi access permanently.
    Lifted only when an IT admin and a DSL have both signed off (two different people)."""

    __tablename__ = "wifi_bans"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(120))
    reason: Mapped[str] = mapped_column(String(32))
    registration_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    it_signoff_by: Mapped[str | None] = mapped_column(String(120), nullable=True)
    it_signoff_at: Mapped[datetime | None] = mapped_column(nullable=True)
    dsl_signoff_by: Mapped[str | None] = mapped_column(String(120), nullable=True)
    dsl_signoff_at: Mapped[datetime | None] = mapped_column(nullable=True)
    lifted_at: Mapped[datetime | None] = mapped_column(nullable=True)

    __table_args__ = (Index("ix_wifi_bans_user", "username", "lifted_at"),)
