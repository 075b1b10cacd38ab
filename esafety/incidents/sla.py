"""Acknowledgement deadlines per level, from policy.notifications.ack_minutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, and_, false, or_

from esafety.policy.schema import Policy
from esafety.store.models import Incident

# Used when no policy is loaded; level 5 is 15 minutes as the school's procedures require.
DEFAULT_ACK_MINUTES: dict[int, int] = {5: 15, 4: 60, 3: 480, 2: 1440, 1: 2880}


def ack_minutes(policy: Policy | None) -> dict[int, int]:
    m = dict(DEFAULT_ACK_MINUTES)
    if policy is not None:
        m.update(policy.notifications.ack_minutes)
    return m


def aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def deadline(inc: Incident, policy: Policy | None) -> datetime:
    return aware(inc.created_at) + timedelta(minutes=ack_minutes(policy).get(inc.level, 2880))


def is_overdue(inc: Incident, policy: Policy | None, now: datetime | None = None) -> bool:
    return inc.acknowledged_at is None and (now or datetime.now(UTC)) > deadline(inc, policy)


def overdue_clause(policy: Policy | None, now: datetime | None = None) -> ColumnElement[bool]:
    """SQL for "unacknowledged past its deadline": one created_at bound per level, so indexes help."""
    now = now or datetime.now(UTC)
    per_level = [and_(Incident.level == lvl, Incident.created_at < now - timedelta(minutes=mins))
                 for lvl, mins in sorted(ack_minutes(policy).items())]
    return and_(Incident.acknowledged_at.is_(None), or_(false(), *per_level))
