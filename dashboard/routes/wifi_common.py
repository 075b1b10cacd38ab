"""Shared by the WiFi registration routers: settings, calendar, compliance source, transactions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import Request
from sqlalchemy.orm import Session

from dashboard.policy_state import current_policy
from dashboard.security import CurrentUser, db
from esafety.compliance.source import RollupCompliance
from esafety.policy.schema import Policy
from esafety.registrations.lifecycle import Actor
from esafety.registrations.prereqs import ComplianceSource
from esafety.registrations.settings import WifiSettings, wifi_settings
from esafety.registrations.workdays import CalendarFile, SchoolCalendar

WIFI_CLAUSE = "A11"
FALLBACK_CLAUSE = ("A registered device must be kept patched, run antivirus and have no peer-to-peer programs; "
                   "a device that breaks these rules is disconnected. Sharing credentials removes WiFi access "
                   "permanently (AUP WiFi Registration appendix).")


def settings(request: Request) -> WifiSettings:
    state = request.app.state
    if not hasattr(state, "wifi_settings"):
        state.wifi_settings = wifi_settings(state.settings)
    return state.wifi_settings  # type: ignore[no-any-return]


def calendar(request: Request) -> SchoolCalendar:
    state = request.app.state
    if not hasattr(state, "wifi_calendar"):
        state.wifi_calendar = CalendarFile(settings(request).calendar_path)
    return state.wifi_calendar.get()  # type: ignore[no-any-return]


def compliance(request: Request) -> ComplianceSource:
    """`app.state.registration_compliance` (tests may set a fixed table), else the agents' rollup."""
    return getattr(request.app.state, "registration_compliance", None) or RollupCompliance()


def policy(request: Request) -> Policy | None:
    return current_policy(request.app)


def clause(request: Request) -> str:
    pol = policy(request)
    return (pol.clause_text(WIFI_CLAUSE) if pol else "") or FALLBACK_CLAUSE


def actor(user: CurrentUser) -> Actor:
    return Actor(user.username, user.roles)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


@contextmanager
def transaction(request: Request) -> Iterator[Session]:
    """One action, one transaction: committed whole, or rolled back whole on any error."""
    with db(request) as s:
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
