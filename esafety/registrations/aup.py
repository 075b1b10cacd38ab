"""AUP versions and who accepted which. The newest published version is the current one; a new
version means everyone accepts again before their next registration (existing devices stay on).

Pupils' acceptances carry their parent or guardian's too (name, and the date they accepted);
whether someone is a pupil comes from the policy's groups (their group descends from `pupils`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from esafety.policy.schema import Policy
from esafety.registrations.errors import Conflict, Invalid
from esafety.registrations.tables import AupAcceptance, AupVersion
from esafety.store.models import User

PUPIL_GROUP = "pupils"
TEXT_MAX = 200_000


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_pupil(user: User, policy: Policy | None) -> bool:
    """A pupil if the user's policy group is, or descends from, `pupils`. Without a policy,
    anyone who is not staff and has no dashboard role is treated as a pupil (the safer side)."""
    if policy is not None and user.policy_group in policy.groups:
        return PUPIL_GROUP in policy.groups[user.policy_group].lineage
    return user.policy_group != "staff" and not (user.roles or "").strip()


def current_version(session: Session) -> AupVersion | None:
    return session.scalar(select(AupVersion).order_by(AupVersion.published_at.desc(), AupVersion.id.desc()).limit(1))


def publish(session: Session, version: str, title: str, text: str, by: str) -> AupVersion:
    version, title, text = version.strip(), title.strip(), text.strip()
    if not version or len(version) > 32:
        raise Invalid("A version label (up to 32 characters) is needed, e.g. 2026-09.")
    if not text or len(text) > TEXT_MAX:
        raise Invalid("The AUP text is empty or too long.")
    if session.scalar(select(AupVersion.id).where(AupVersion.version == version)) is not None:
        raise Conflict(f"AUP version {version} already exists; published versions are never changed.")
    digest = text_sha256(text)
    cur = current_version(session)
    if cur is not None and cur.text_sha256 == digest:
        raise Conflict(f"This text is the same as the current version ({cur.version}).")
    row = AupVersion(version=version, title=title[:200] or "Acceptable Use Policy", text=text, text_sha256=digest,
                     published_by=by, published_at=datetime.now(UTC))
    session.add(row)
    session.flush()
    return row


def acceptance(session: Session, username: str, version: AupVersion) -> AupAcceptance | None:
    return session.scalar(select(AupAcceptance).where(AupAcceptance.username == username,
                                                      AupAcceptance.aup_version_id == version.id))


def accept(session: Session, user: User, version_id: int, text_hash: str, pupil: bool, parent_name: str = "",
           parent_accepted_on: date | None = None, client_ip: str = "", today: date | None = None) -> AupAcceptance:
    """Record `user` accepting the version they were shown (its hash must still be the current text)."""
    cur = current_version(session)
    if cur is None:
        raise Invalid("No AUP has been published yet. Ask IT services.")
    if cur.id != version_id or cur.text_sha256 != text_hash:
        raise Conflict("A newer version of the AUP has been published since you opened this page. "
                       "Please read it and accept again.")
    parent_name = " ".join(parent_name.split())[:200]
    if pupil:
        today = today or datetime.now(UTC).date()
        if len(parent_name) < 2:
            raise Invalid("Your parent or guardian must accept the AUP too: enter their full name.")
        if parent_accepted_on is None:
            raise Invalid("Enter the date your parent or guardian accepted the AUP.")
        if parent_accepted_on > today:
            raise Invalid("The date your parent or guardian accepted cannot be in the future.")
        if parent_accepted_on < cur.published_at.date():
            raise Invalid(f"Your parent or guardian must accept this version ({cur.version}), published "
                          f"{cur.published_at:%Y-%m-%d}; the date is before that.")
    existing = acceptance(session, user.username, cur)
    if existing is not None:
        raise Conflict(f"You have already accepted AUP version {cur.version}.")
    row = AupAcceptance(username=user.username, aup_version_id=cur.id, text_sha256=cur.text_sha256,
                        accepted_at=datetime.now(UTC), client_ip=client_ip[:45],
                        parent_name=parent_name if pupil else None,
                        parent_accepted_on=parent_accepted_on if pupil else None)
    session.add(row)
    session.flush()
    return row


def has_current(session: Session, user: User, pupil: bool) -> tuple[AupVersion | None, AupAcceptance | None]:
    """The current version and the user's valid acceptance of it (None when missing or incomplete)."""
    cur = current_version(session)
    if cur is None:
        return None, None
    acc = acceptance(session, user.username, cur)
    if acc is None or acc.text_sha256 != cur.text_sha256:
        return cur, None
    if pupil and not (acc.parent_name and acc.parent_accepted_on):
        return cur, None
    return cur, acc
