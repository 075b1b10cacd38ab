"""IT's WiFi registration pages: the approval queue (oldest first, due times on the school
calendar, overdue highlighted), one registration with its history, and the decisions."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from dashboard.routes import wifi_common as wc
from dashboard.security import CurrentUser, csrf_protect, db, require_roles
from dashboard.templating import render
from esafety.registrations import decisions, queries
from esafety.registrations.errors import NotFound, RegistrationError
from esafety.registrations.lifecycle import history, load
from esafety.registrations.prereqs import TITLES, failed_checks
from esafety.registrations.requests import DEVICE_TYPES
from esafety.registrations.states import REASON_LABELS, Who, available
from esafety.registrations.tables import AupVersion
from esafety.store.models import User

router = APIRouter()


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


it_admin = require_roles("it_admin")


@router.get("/registrations")
def queue(request: Request, user: CurrentUser = Depends(it_admin)) -> Response:
    cal = wc.calendar(request)
    with db(request) as s:
        q = queries.approval_queue(s, cal)
        recent = queries.recent(s)
    ctx = {"queue": q, "recent": recent, "device_types": DEVICE_TYPES, "calendar": cal}
    return render(request, "registrations_queue.html", ctx, user)  # type: ignore[no-any-return]


def _detail(request: Request, user: CurrentUser, reg_id: int, error: str = "", status: int = 200) -> Response:
    with db(request) as s:
        try:
            reg = load(s, reg_id)
        except NotFound:
            return render(request, "registration.html", {"reg": None, "error": "No such registration."}, user,
                          404)  # type: ignore[no-any-return]
        owner = s.scalar(select(User).where(User.username == reg.username))
        version = s.get(AupVersion, reg.aup_version_id)
        failed = failed_checks(wc.compliance(request), s, reg.mac)
        events = history(s, reg_id)
    ctx = {
        "reg": reg, "owner": owner, "version": version, "events": events, "error": error,
        "actions": [t.action.value for t in available(reg.state, Who.IT)], "reasons": REASON_LABELS,
        "device_types": DEVICE_TYPES, "agent_failed": failed, "titles": TITLES,
        "overdue": reg.state in ("submitted", "pending_approval") and datetime.now(UTC) > _aware(reg.due_at),
    }
    return render(request, "registration.html", ctx, user, status)  # type: ignore[no-any-return]


@router.get("/registrations/{reg_id:int}")
def detail(request: Request, reg_id: int, user: CurrentUser = Depends(it_admin)) -> Response:
    return _detail(request, user, reg_id)


def _after(request: Request, user: CurrentUser, reg_id: int, fn, *args) -> Response:  # type: ignore[no-untyped-def]
    """Run one decision in one transaction; a refusal re-renders the page with the reason."""
    try:
        with wc.transaction(request) as s:
            fn(s, reg_id, wc.actor(user), *args)
    except RegistrationError as exc:
        return _detail(request, user, reg_id, str(exc), exc.status)
    return RedirectResponse(f"/registrations/{reg_id}", status_code=303)


@router.post("/registrations/{reg_id:int}/approve", dependencies=[Depends(csrf_protect)])
def approve(request: Request, reg_id: int, note: str = Form("", max_length=2000),
            user: CurrentUser = Depends(it_admin)) -> Response:
    ws = wc.settings(request)
    return _after(request, user, reg_id, decisions.approve, note, wc.compliance(request), wc.calendar(request),
                  ws.ssid, request.app.state.settings.dashboard_url)


@router.post("/registrations/{reg_id:int}/reject", dependencies=[Depends(csrf_protect)])
def reject(request: Request, reg_id: int, note: str = Form("", max_length=2000),
           user: CurrentUser = Depends(it_admin)) -> Response:
    return _after(request, user, reg_id, decisions.reject, note, request.app.state.settings.dashboard_url)


@router.post("/registrations/{reg_id:int}/revoke", dependencies=[Depends(csrf_protect)])
def revoke(request: Request, reg_id: int, reason: str = Form("", max_length=32), note: str = Form("", max_length=2000),
           user: CurrentUser = Depends(it_admin)) -> Response:
    return _after(request, user, reg_id, decisions.revoke, reason, note, request.app.state.settings.dashboard_url)


@router.post("/registrations/{reg_id:int}/quarantine", dependencies=[Depends(csrf_protect)])
def quarantine(request: Request, reg_id: int, note: str = Form("", max_length=2000),
               user: CurrentUser = Depends(it_admin)) -> Response:
    return _after(request, user, reg_id, decisions.quarantine, note, request.app.state.settings.dashboard_url)


@router.post("/registrations/{reg_id:int}/release", dependencies=[Depends(csrf_protect)])
def release(request: Request, reg_id: int, note: str = Form("", max_length=2000),
            user: CurrentUser = Depends(it_admin)) -> Response:
    return _after(request, user, reg_id, decisions.release, note, wc.compliance(request))
