"""A person's own WiFi pages: accept the AUP, ask for a device, see and withdraw their devices.

Any signed-in person (pupils sign in as members; staff too). Only their own registrations are
ever read here: every query is by the signed-in username.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from dashboard.routes import wifi_common as wc
from dashboard.security import CurrentUser, csrf_protect, current_user, db
from dashboard.templating import render
from esafety.registrations import aup, decisions, queries
from esafety.registrations.errors import NotFound, RegistrationError
from esafety.registrations.lifecycle import Actor, history, load
from esafety.registrations.prereqs import FIXES, TITLES
from esafety.registrations.requests import DEVICE_TYPES, DeviceRequest, active_ban, submit
from esafety.registrations.states import REASON_LABELS, Action, Reason, State, Who, available
from esafety.store.models import User

router = APIRouter()


def _me(s: Any, user: CurrentUser) -> User:
    me = s.scalar(select(User).where(User.username == user.username))
    if me is None:
        raise NotFound("no such user")
    return me  # type: ignore[no-any-return]


def _home(request: Request, user: CurrentUser, error: str = "", form: dict[str, str] | None = None,
          status: int = 200) -> Response:
    with db(request) as s:
        me = _me(s, user)
        pupil = aup.is_pupil(me, wc.policy(request))
        version, acceptance = aup.has_current(s, me, pupil)
        ctx = {
            "devices": queries.of_user(s, user.username), "version": version, "acceptance": acceptance,
            "pupil": pupil, "ban": active_ban(s, user.username), "error": error, "form": form or {},
            "device_types": DEVICE_TYPES, "max_per_user": wc.settings(request).max_per_user,
        }
    return render(request, "wifi_home.html", ctx, user, status)  # type: ignore[no-any-return]


@router.get("/wifi")
def wifi_home(request: Request, user: CurrentUser = Depends(current_user)) -> Response:
    return _home(request, user)


def _aup_page(request: Request, user: CurrentUser, error: str = "", status: int = 200) -> Response:
    with db(request) as s:
        me = _me(s, user)
        pupil = aup.is_pupil(me, wc.policy(request))
        version = aup.current_version(s)
        accepted = aup.acceptance(s, me.username, version) if version else None
    ctx = {"version": version, "pupil": pupil, "accepted": accepted, "error": error}
    return render(request, "wifi_aup.html", ctx, user, status)  # type: ignore[no-any-return]


@router.get("/wifi/aup")
def aup_page(request: Request, user: CurrentUser = Depends(current_user)) -> Response:
    return _aup_page(request, user)


@router.post("/wifi/aup", dependencies=[Depends(csrf_protect)])
def accept_aup(request: Request, user: CurrentUser = Depends(current_user), version_id: int = Form(0),
               text_sha256: str = Form("", max_length=64), accept: str = Form(""),
               parent_name: str = Form("", max_length=300), parent_date: str = Form("", max_length=20)) -> Response:
    if accept != "yes":
        return _aup_page(request, user, "Tick the box to accept the AUP.", 400)
    try:
        on = date.fromisoformat(parent_date) if parent_date.strip() else None
    except ValueError:
        return _aup_page(request, user, "The parent or guardian's date must be a date (YYYY-MM-DD).", 400)
    try:
        with wc.transaction(request) as s:
            me = _me(s, user)
            aup.accept(s, me, version_id, text_sha256, aup.is_pupil(me, wc.policy(request)), parent_name, on,
                       wc.client_ip(request))
    except RegistrationError as exc:
        return _aup_page(request, user, str(exc), exc.status)
    return RedirectResponse("/wifi", status_code=303)


@router.post("/wifi/register", dependencies=[Depends(csrf_protect)])
def register_device(request: Request, user: CurrentUser = Depends(current_user),
                    device_name: str = Form("", max_length=200), device_type: str = Form("", max_length=20),
                    mac: str = Form("", max_length=64), private_fixed: str = Form(""),
                    aup_ok: str = Form("")) -> Response:
    form = {"device_name": device_name, "device_type": device_type, "mac": mac}
    req = DeviceRequest(device_name, device_type, mac, private_fixed == "yes", aup_ok == "yes")
    try:
        with wc.transaction(request) as s:
            reg = submit(s, _me(s, user), req, wc.policy(request), wc.calendar(request),
                         wc.settings(request).max_per_user)
            reg_id = reg.id
    except RegistrationError as exc:
        return _home(request, user, str(exc), form, exc.status)
    return RedirectResponse(f"/wifi/devices/{reg_id}", status_code=303)


def _device(request: Request, user: CurrentUser, reg_id: int, error: str = "", status: int = 200) -> Response:
    with db(request) as s:
        try:
            reg = load(s, reg_id)
        except NotFound:
            reg = None
        if reg is None or reg.username != user.username:
            return render(request, "wifi_device.html", {"reg": None, "error": "No such device of yours."}, user,
                          404)  # type: ignore[no-any-return]
        events = history(s, reg_id)
    failed = [c for c in reg.failed_checks.split(",") if c]
    ctx = {
        "reg": reg, "events": events, "error": error, "failed": failed, "fixes": FIXES, "titles": TITLES,
        "clause": wc.clause(request), "reasons": REASON_LABELS, "device_types": DEVICE_TYPES,
        "can_withdraw": any(t.action is Action.REVOKE for t in available(reg.state, Who.OWNER)),
        "quarantined": reg.state == State.QUARANTINED.value,
    }
    return render(request, "wifi_device.html", ctx, user, status)  # type: ignore[no-any-return]


@router.get("/wifi/devices/{reg_id:int}")
def device_page(request: Request, reg_id: int, user: CurrentUser = Depends(current_user)) -> Response:
    return _device(request, user, reg_id)


@router.post("/wifi/devices/{reg_id:int}/withdraw", dependencies=[Depends(csrf_protect)])
def withdraw(request: Request, reg_id: int, user: CurrentUser = Depends(current_user)) -> Response:
    try:
        with wc.transaction(request) as s:
            reg = load(s, reg_id)
            if reg.username != user.username:
                raise NotFound("no such registration")
            decisions.revoke(s, reg_id, Actor(user.username), Reason.USER_REQUEST.value,  # as the owner
                             "withdrawn by the owner", request.app.state.settings.dashboard_url)
    except RegistrationError as exc:
        return _device(request, user, reg_id, str(exc), exc.status)
    return RedirectResponse(f"/wifi/devices/{reg_id}", status_code=303)
