"""Send what the outbox holds over SMTP; failed sends are retried with back-off and counted."""

from __future__ import annotations

import contextlib
import logging
import smtplib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from esafety import metrics
from esafety.incidents.tables import NotificationOutbox

log = logging.getLogger("esafety.mailer")
MAX_ATTEMPTS = 10
CLAIM_FOR = timedelta(minutes=5)  # another dashboard will not pick a claimed row up meanwhile


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(30 * 2 ** (attempts - 1), 3600))


def send_due(factory: sessionmaker[Session], host: str, port: int, sender: str, limit: int = 50,
             timeout: float = 10.0) -> tuple[int, int]:
    """Send due messages; returns (sent, failed attempts)."""
    now = datetime.now(UTC)
    with factory() as s:
        due = list(s.scalars(select(NotificationOutbox).where(
            NotificationOutbox.status == "pending", NotificationOutbox.next_attempt_at <= now)
            .order_by(NotificationOutbox.id).limit(limit)))
        claimed = []
        for m in due:
            # Optimistic claim: only one worker moves next_attempt_at from the value it read.
            r = s.execute(update(NotificationOutbox).where(
                NotificationOutbox.id == m.id, NotificationOutbox.next_attempt_at == m.next_attempt_at,
                NotificationOutbox.status == "pending").values(next_attempt_at=now + CLAIM_FOR))
            if r.rowcount == 1:  # type: ignore[attr-defined]
                claimed.append(m)
        s.commit()
    if not claimed:
        return 0, 0
    sent = failed = 0
    smtp: smtplib.SMTP | None = None
    try:
        for m in claimed:
            error = None
            try:
                if smtp is None:
                    smtp = smtplib.SMTP(host, port, timeout=timeout)
                msg = EmailMessage()
                msg["From"], msg["To"], msg["Subject"] = sender, m.recipient, m.subject
                msg.set_content(m.body)
                smtp.send_message(msg)
            except (OSError, smtplib.SMTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
                smtp = None  # reconnect for the next message
            with factory() as s:
                row = s.get(NotificationOutbox, m.id)
                assert row is not None
                row.attempts += 1
                if error is None:
                    row.status, row.sent_at, row.last_error = "sent", datetime.now(UTC), None
                    metrics.NOTIFICATIONS_SENT.labels(kind=row.kind).inc()
                    sent += 1
                else:
                    metrics.NOTIFICATION_FAILURES.labels(kind=row.kind).inc()
                    failed += 1
                    row.last_error = error
                    row.next_attempt_at = datetime.now(UTC) + backoff(row.attempts)
                    if row.attempts >= MAX_ATTEMPTS:
                        row.status = "failed"
                    log.warning("notification send failed", extra={"fields": {"id": row.id, "error": error}})
                s.commit()
    finally:
        if smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                smtp.quit()
    return sent, failed
