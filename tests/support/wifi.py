"""Helpers for the WiFi registration tests: people, a published AUP, acceptances, requests."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from esafety.commands.users import create_user
from esafety.policy.loader import load_policy
from esafety.policy.schema import Policy
from esafety.registrations import aup
from esafety.registrations.requests import DeviceRequest, submit
from esafety.registrations.tables import AupVersion, Registration
from esafety.registrations.workdays import SchoolCalendar
from esafety.store.db import sessions
from esafety.store.models import User
from tests.support.dsl import PASSWORD, POLICY_PATH

AUP_TEXT = ("Acceptable Use Policy\n\n1. Internet use is filtered and logged.\n\n"
            "Appendix: WiFi Registration. Personal devices join only when registered; keep them patched, with "
            "antivirus and no P2P programs. Sharing credentials removes WiFi access permanently.")


def policy() -> Policy:
    return load_policy(POLICY_PATH)


def add_pupil(url: str, name: str = "sam.y9", email: str | None = None, group: str = "year9") -> None:
    create_user(url, name, group, [], email=email if email is not None else f"{name}@pupils.school.test",
                display_name=name.replace(".", " ").title(), password=PASSWORD)


def add_staff(url: str, name: str = "ms.khan", roles: list[str] | None = None) -> None:
    create_user(url, name, "staff", roles or [], email=f"{name}@school.test", password=PASSWORD)


def publish(url: str, version: str = "2026-09", text: str = AUP_TEXT) -> AupVersion:
    with sessions(url)() as s:
        v = aup.publish(s, version, "Acceptable Use Policy", text, "admin")
        s.commit()
        return v


def user(s: Session, name: str) -> User:
    return s.scalars(select(User).where(User.username == name)).one()


def accept(url: str, name: str, parent: str = "Jo Parent", on: date | None = None) -> None:
    with sessions(url)() as s:
        v = aup.current_version(s)
        assert v is not None
        u = user(s, name)
        pupil = aup.is_pupil(u, policy())
        aup.accept(s, u, v.id, v.text_sha256, pupil, parent if pupil else "",
                   (on or datetime.now(UTC).date()) if pupil else None)
        s.commit()


def request_device(url: str, name: str, mac: str, device: str = "Sam's iPhone", dtype: str = "phone",
                   when: datetime | None = None, calendar: SchoolCalendar | None = None,
                   private_ok: bool = False) -> int:
    with sessions(url)() as s:
        reg = submit(s, user(s, name), DeviceRequest(device, dtype, mac, private_ok, True), policy(),
                     calendar or SchoolCalendar(), now=when)
        s.commit()
        return reg.id


def reg(url: str, reg_id: int) -> Registration:
    with sessions(url)() as s:
        return s.get(Registration, reg_id)  # type: ignore[return-value]
