"""A person asks for a device: every check first, then one registration queued for IT.

Refused (nothing stored): a bad or private-unconfirmed MAC, a MAC another live registration holds,
no acceptance of the current AUP (with a parent's for pupils), a permanent WiFi ban, too many
devices. The unique `live_mac` column settles two requests racing for one MAC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from esafety.policy.schema import Policy
from esafety.registrations import aup
from esafety.registrations.errors import Conflict, Invalid
from esafety.registrations.lifecycle import SYSTEM_ACTOR, Actor, record, transition
from esafety.registrations.macaddr import PRIVATE_EXPLANATION, MacError, parse_mac
from esafety.registrations.states import LIVE_STATES, Action, State
from esafety.registrations.tables import Registration, WifiBan
from esafety.registrations.workdays import SchoolCalendar
from esafety.store.models import User

DEVICE_TYPES: dict[str, str] = {"phone": "Phone", "tablet": "Tablet", "laptop": "Laptop", "other": "Other"}
_NAME = re.compile(r"^[\w .,'()+&-]{1,80}$")
DUPLICATE_MAC = ("That WiFi (MAC) address is already registered or waiting for approval. If it is your device, "
                 "see your devices below; if not, check the address, or ask IT services.")


@dataclass(frozen=True)
class DeviceRequest:
    device_name: str
    device_type: str
    mac: str
    private_confirmed: bool = False
    aup_accepted: bool = False  # the form's "I accept the current AUP" box


def active_ban(session: Session, username: str) -> WifiBan | None:
    return session.scalar(select(WifiBan).where(WifiBan.username == username, WifiBan.lifted_at.is_(None))
                          .order_by(WifiBan.id).limit(1))


def _validate(req: DeviceRequest) -> tuple[str, str, str, bool]:
    name = " ".join(req.device_name.split())
    if not _NAME.match(name):
        raise Invalid("Give the device a short name (letters, digits, spaces and . , ' ( ) + & -), "
                      "e.g. \"Sam's iPhone\".")
    if req.device_type not in DEVICE_TYPES:
        raise Invalid("Choose the type of device: " + ", ".join(DEVICE_TYPES.values()) + ".")
    try:
        mac = parse_mac(req.mac)
    except MacError as exc:
        raise Invalid(str(exc)) from exc
    if mac.locally_administered and not req.private_confirmed:
        raise Invalid(PRIVATE_EXPLANATION)
    return name, req.device_type, mac.value, mac.locally_administered


def submit(session: Session, user: User, req: DeviceRequest, policy: Policy | None, calendar: SchoolCalendar,
           max_per_user: int = 3, now: datetime | None = None) -> Registration:
    """Store the request and queue it for IT. The caller commits; on any error nothing is stored."""
    now = now or datetime.now(UTC)
    name, dtype, mac, private = _validate(req)
    if not user.active:
        raise Conflict("Your account is not active.")
    ban = active_ban(session, user.username)
    if ban is not None:
        raise Conflict("Your WiFi access was removed permanently for sharing credentials (AUP, WiFi Registration). "
                       "It can only be restored by IT services and the Designated Safeguarding Lead together.")
    pupil = aup.is_pupil(user, policy)
    version, acceptance = aup.has_current(session, user, pupil)
    if version is None:
        raise Conflict("No AUP has been published yet, so devices cannot be registered. Ask IT services.")
    if acceptance is None:
        raise Conflict(f"Accept the current AUP (version {version.version}) first"
                       + (", with your parent or guardian's acceptance." if pupil else "."))
    if not req.aup_accepted:
        raise Invalid("Tick the box to confirm this device will be used under the AUP.")
    live = session.scalar(select(func.count()).select_from(Registration).where(
        Registration.username == user.username, Registration.state.in_([s.value for s in LIVE_STATES]))) or 0
    if live >= max_per_user:
        raise Conflict(f"You already have {live} devices registered or waiting; the limit is {max_per_user}. "
                       "Withdraw one you no longer use first.")
    if session.scalar(select(Registration.id).where(Registration.live_mac == mac)) is not None:
        raise Conflict(DUPLICATE_MAC)
    reg = Registration(username=user.username, device_name=name, device_type=dtype, mac=mac, live_mac=mac,
                       mac_private=private, state=State.SUBMITTED.value, aup_version_id=version.id,
                       submitted_at=now, due_at=calendar.add_working_days(now, 1), updated_at=now)
    session.add(reg)
    try:
        session.flush()
    except IntegrityError as exc:  # another request took the MAC between our check and insert
        session.rollback()
        raise Conflict(DUPLICATE_MAC) from exc
    what = f"{DEVICE_TYPES[dtype]} \"{name}\" {mac}" + (" (private address, confirmed fixed)" if private else "")
    record(session, reg, Actor(user.username), "submit", None, State.SUBMITTED.value, what, at=now)
    checked = f"AUP {version.version} accepted {acceptance.accepted_at:%Y-%m-%d}"
    if pupil:
        checked += f"; parent/guardian {acceptance.parent_name} accepted {acceptance.parent_accepted_on}"
    transition(session, reg, Action.QUEUE, SYSTEM_ACTOR, checked, now=now)
    return reg
