"""Emails about a registration, to the person's school address (User.email, from the school's
records; never an address typed into a form). Queued in the incidents' notification outbox in the
same transaction as the decision, and sent by the dashboard's worker with retries."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from esafety.incidents.tables import NotificationOutbox
from esafety.registrations.tables import Registration
from esafety.store.models import User

KIND = "registration"
SHARING_WARNING = ("Never share your username or password, or let anyone else use your device on the school "
                   "WiFi: sharing credentials removes your WiFi access permanently (AUP, WiFi Registration).")


def school_address(session: Session, username: str) -> str | None:
    email = session.scalar(select(User.email).where(User.username == username))
    return email.strip() if email and "@" in email else None


def _enqueue(session: Session, to: str, subject: str, body: str) -> None:
    session.add(NotificationOutbox(kind=KIND, incident_id=None, recipient=to, subject=subject[:200], body=body))


def approved(session: Session, reg: Registration, ssid: str, dashboard_url: str) -> str | None:
    """Queue the confirmation with how to connect; returns the address, or None when none is on file."""
    to = school_address(session, reg.username)
    if to is None:
        return None
    base = dashboard_url.rstrip("/")
    body = "\n".join((
        f"Your device \"{reg.device_name}\" ({reg.mac}) is approved for the school WiFi.",
        "",
        "How to connect:",
        f"  1. On the device, join the WiFi network \"{ssid}\".",
        "  2. Sign in with your school username and password when asked.",
        f"  3. Set the proxy to automatic, using {base}/proxy.pac, and install the school's",
        "     certificate when the welcome page asks you to.",
        f"  4. Keep the WiFi (MAC) address the device uses for \"{ssid}\" as registered: {reg.mac}.",
        "",
        "Keep the device patched, running antivirus and free of peer-to-peer programs. A device",
        "that breaks the rules is disconnected until it is fixed.",
        SHARING_WARNING,
        "",
        f"Your devices: {base}/wifi",
    ))
    _enqueue(session, to, f"[esafety] WiFi access approved: {reg.device_name}", body)
    return to


def rejected(session: Session, reg: Registration, note: str, dashboard_url: str) -> str | None:
    to = school_address(session, reg.username)
    if to is None:
        return None
    body = "\n".join((
        f"Your request to put \"{reg.device_name}\" ({reg.mac}) on the school WiFi was not approved.",
        "",
        f"IT services said: {note}",
        "",
        f"You can see your requests at {dashboard_url.rstrip('/')}/wifi",
    ))
    _enqueue(session, to, f"[esafety] WiFi request not approved: {reg.device_name}", body)
    return to


def ended(session: Session, reg: Registration, what: str, why: str, dashboard_url: str) -> str | None:
    """Quarantine, revocation or expiry: tell the person what happened and where to read more."""
    to = school_address(session, reg.username)
    if to is None:
        return None
    body = "\n".join((
        f"Your device \"{reg.device_name}\" ({reg.mac}) has been {what} on the school WiFi.",
        "",
        f"Why: {why}",
        "",
        f"What to do: {dashboard_url.rstrip('/')}/wifi/devices/{reg.id}",
    ))
    _enqueue(session, to, f"[esafety] WiFi access {what}: {reg.device_name}", body)
    return to
