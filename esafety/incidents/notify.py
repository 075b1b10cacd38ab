"""What to email whom: immediate alerts, on-call escalation and the daily digest, into the outbox.

Safeguarding email crosses systems the school does not control, so it carries only who raised
the incident, its category and level, and a link; never the pupil's name, URLs or page text.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from esafety import metrics
from esafety.incidents.access import NOTIFY
from esafety.incidents.audit import SYSTEM, Chain
from esafety.incidents.sla import ack_minutes, aware, deadline
from esafety.incidents.tables import DigestMark, NotificationOutbox
from esafety.policy.schema import Policy
from esafety.store.models import Incident, User

RAISED_BY = {"proxy": "the web filter", "agent": "a device agent", "sensor": "the network sensor",
             "staff": "a staff report", "pattern": "pattern escalation (repeated incidents)"}


def recipients(session: Session, queue: str) -> list[str]:
    roles = NOTIFY.get(queue, ())
    users = session.scalars(select(User).where(User.active.is_(True), User.email != ""))
    return sorted({u.email for u in users if set(u.roles.split(",")) & set(roles)})


def on_call_address(session: Session, entry: str) -> str | None:
    """An on-call entry is an email address or a username with an address on file."""
    if "@" in entry:
        return entry
    return session.scalar(select(User.email).where(User.username == entry, User.email != "")) or None


def _title(policy: Policy | None, category: str) -> str:
    cat = policy.categories.get(category) if policy else None
    return cat.title if cat else category


def alert_body(inc: Incident, policy: Policy | None, link_base: str, lead: str) -> str:
    return "\n".join((
        lead,
        "",
        f"Raised by: {RAISED_BY.get(inc.source, inc.source)}",
        f"Category:  {_title(policy, inc.category)}",
        f"Level:     {inc.level}",
        f"Reference: {inc.ref}",
        f"Acknowledge by: {deadline(inc, policy).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"Open it: {link_base.rstrip('/')}/incidents/{inc.id}",
        "",
        "This email deliberately contains no evidence or names. Sign in to the dashboard to see them.",
    ))


def _enqueue(session: Session, kind: str, inc: Incident | None, to: Iterable[str], subject: str, body: str) -> int:
    n = 0
    for addr in to:
        session.add(NotificationOutbox(kind=kind, incident_id=inc.id if inc else None, recipient=addr,
                                       subject=subject, body=body))
        n += 1
    return n


def immediate(session: Session, inc: Incident, policy: Policy | None, link_base: str,
              to: dict[str, list[str]] | None = None) -> int:
    """Queue the at-once email for a level the policy says cannot wait for the digest.
    `to` caches recipients per queue across a batch."""
    levels = policy.notifications.immediate_levels if policy else frozenset({4, 5})
    if inc.level not in levels:
        return 0
    to = {} if to is None else to
    if inc.queue not in to:
        with session.no_autoflush:
            to[inc.queue] = recipients(session, inc.queue)
    subject = f"[esafety] Level {inc.level} incident {inc.ref}: {_title(policy, inc.category)}"
    lead = f"A level {inc.level} incident in the {inc.queue} queue needs attention."
    return _enqueue(session, "immediate", inc, to[inc.queue], subject, alert_body(inc, policy, link_base, lead))


def escalate(session: Session, policy: Policy | None, link_base: str, now: datetime | None = None) -> int:
    """Each ack period a level-5 incident stays unacknowledged, alert the next person on call."""
    on_call = policy.notifications.on_call if policy else ()
    if not on_call:
        return 0
    now = now or datetime.now(UTC)
    period = timedelta(minutes=ack_minutes(policy)[5])
    chain = Chain(session)
    chain.lock()
    n = 0
    due = session.scalars(select(Incident).where(
        Incident.level == 5, Incident.state == "new", Incident.acknowledged_at.is_(None),
        Incident.escalations < len(on_call), Incident.created_at < now - period,
    ).execution_options(populate_existing=True))
    for inc in due:
        steps = min(int((now - aware(inc.created_at)) / period), len(on_call))
        while inc.escalations < steps:
            entry = on_call[inc.escalations]
            addr = on_call_address(session, entry)
            inc.escalations += 1
            chain.add(inc, SYSTEM, "escalate", to=entry, step=inc.escalations)
            metrics.INCIDENT_ESCALATIONS.labels(level="5").inc()
            if addr:
                lead = (f"ESCALATION {inc.escalations}: a level 5 incident has not been acknowledged "
                        f"within {int(period.total_seconds() // 60)} minutes. You are next on call.")
                n += _enqueue(session, "escalation", inc, [addr], f"[esafety] ESCALATED level 5 incident {inc.ref}",
                              alert_body(inc, policy, link_base, lead))
    return n


def digest(session: Session, policy: Policy | None, link_base: str, now: datetime | None = None) -> int:
    """Once a day at the policy's digest hour: one email per queue member listing lower-level incidents."""
    now = now or datetime.now(UTC)
    tz = ZoneInfo(policy.timezone) if policy else UTC
    local = now.astimezone(tz)
    if local.hour < (policy.notifications.digest_hour if policy else 16):
        return 0
    today = local.date().isoformat()
    immediate_levels = policy.notifications.immediate_levels if policy else frozenset({4, 5})
    n = 0
    for queue in NOTIFY:
        mark = session.get(DigestMark, queue)
        if mark is None:
            mark = DigestMark(queue=queue, last_incident_id=0, sent_on="")
            session.add(mark)
        if mark.sent_on == today:
            continue
        rows = list(session.scalars(select(Incident).where(
            Incident.queue == queue, Incident.id > mark.last_incident_id,
            Incident.level.not_in(immediate_levels)).order_by(Incident.id).limit(500)))
        mark.sent_on = today
        if not rows:
            continue
        mark.last_incident_id = rows[-1].id
        lines = [f"- {i.ref}  level {i.level}  {_title(policy, i.category)}  "
                 f"(raised by {RAISED_BY.get(i.source, i.source)})  {link_base.rstrip('/')}/incidents/{i.id}"
                 for i in rows]
        body = "\n".join([f"Incidents raised in the {queue} queue since the last digest: {len(rows)}", "", *lines,
                          "", "No evidence or names are included. Sign in to the dashboard to see them."])
        n += _enqueue(session, "digest", None, recipients(session, queue),
                      f"[esafety] Daily digest: {len(rows)} incident(s) in {queue}", body)
    return n
