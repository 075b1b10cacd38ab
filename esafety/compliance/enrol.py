"""Enrolment tokens and device credentials.

An IT admin makes a one-time token (dashboard or `esafety devices token`); the agent trades it for
a device id and a credential, and authenticates every report with `Bearer <device_id>.<credential>`.
Both secrets are long random strings, so a SHA-256 is enough to store (a password hash would only
slow every report down); comparisons are constant-time, and an unknown device id costs the same
comparison as a known one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from esafety.compliance.tables import Device, DeviceMac, EnrolmentToken
from esafety.compliance.wire import EnrolIn

TOKEN_PREFIX = "enr_"  # noqa: S105 - a prefix that makes tokens recognisable, not a secret
_DUMMY = hashlib.sha256(b"no such device").hexdigest()
MAX_TOKEN_HOURS = 24 * 31


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass(frozen=True)
class NewToken:
    token: str  # shown once
    expires_at: datetime
    id: int


def create_token(session: Session, created_by: str, hours: float = 24.0, note: str = "", owner: str | None = None,
                 now: datetime | None = None) -> NewToken:
    """A one-time enrolment token; only its hash is stored. The caller commits."""
    if not 0 < hours <= MAX_TOKEN_HOURS:
        raise ValueError(f"a token lasts between a minute and {MAX_TOKEN_HOURS} hours")
    now = now or datetime.now(UTC)
    token = TOKEN_PREFIX + secrets.token_urlsafe(24)
    row = EnrolmentToken(token_sha256=sha256(token), created_by=created_by, created_at=now,
                         expires_at=now + timedelta(hours=hours), note=note[:200], owner=owner or None)
    session.add(row)
    session.flush()
    return NewToken(token, row.expires_at, row.id)


class TokenRefused(Exception):
    pass


@dataclass(frozen=True)
class Enrolled:
    device: Device
    credential: str  # shown once to the agent


def enrol(session: Session, body: EnrolIn, ip: str | None, now: datetime | None = None) -> Enrolled:
    """Spend the token (exactly once, even when two agents race with it) and create the device."""
    now = now or datetime.now(UTC)
    tok = session.scalar(select(EnrolmentToken).where(EnrolmentToken.token_sha256 == sha256(body.token)))
    if tok is None:
        raise TokenRefused("unknown enrolment token")
    if tok.used_at is not None:
        raise TokenRefused("this enrolment token has already been used")
    if _aware(tok.expires_at) <= now:
        raise TokenRefused("this enrolment token has expired; ask IT services for a new one")
    device_id = secrets.token_hex(8)
    spent = session.execute(update(EnrolmentToken).where(EnrolmentToken.id == tok.id, EnrolmentToken.used_at.is_(None))
                            .values(used_at=now, device_id=device_id).execution_options(synchronize_session=False))
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise TokenRefused("this enrolment token has already been used")
    credential = secrets.token_urlsafe(32)
    device = Device(id=device_id, hostname=body.hostname, platform=body.platform, os_version=body.os_version,
                    agent_version=body.agent_version, macs=body.device_macs(), owner=tok.owner,
                    note=tok.note, credential_sha256=sha256(credential), enrolled_at=now, last_seq=0,
                    last_ip=ip, state="pending", state_since=now)
    session.add(device)
    session.flush()
    for mac in device.macs:
        session.add(DeviceMac(mac=mac, device_id=device_id))
    session.flush()
    return Enrolled(device, credential)


def parse_bearer(header: str | None) -> tuple[str, str] | None:
    """`Bearer <device_id>.<credential>` -> (device_id, credential)."""
    if not header or len(header) > 400:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    device_id, dot, credential = value.strip().partition(".")
    if not dot or not device_id or not credential:
        return None
    return device_id, credential


def authenticate(session: Session, header: str | None) -> Device | None:
    """The device whose credential this is, or None (unknown, wrong, or retired)."""
    parsed = parse_bearer(header)
    if parsed is None:
        return None
    device_id, credential = parsed
    device = session.get(Device, device_id[:32])
    stored = device.credential_sha256 if device is not None else _DUMMY
    ok = hmac.compare_digest(sha256(credential), stored)
    if device is None or not ok or device.retired_at is not None:
        return None
    return device
