"""Permanent WiFi bans (credential sharing) and their two-person lifting; publishing AUP versions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from dashboard.routes import wifi_common as wc
from dashboard.security import CurrentUser, csrf_protect, db, require_roles
from dashboard.templating import render
from esafety.registrations import aup, decisions, queries
from esafety.registrations.errors import RegistrationError
from esafety.registrations.tables import AupVersion

router = APIRouter()
ban_roles = require_roles("it_admin", "dsl", "deputy_dsl")
aup_roles = require_roles("it_admin", "admin")


def _bans(request: Request, user: CurrentUser, error: str = "", status: int = 200) -> Response:
    with db(request) as s:
        bans = queries.bans(s, include_lifted=True)
    return render(request, "registrations_bans.html", {"bans": bans, "error": error}, user,
                  status)  # type: ignore[no-any-return]


@router.get("/registrations/bans")
def bans(request: Request, user: CurrentUser = Depends(ban_roles)) -> Response:
    return _bans(request, user)


@router.post("/registrations/bans/{ban_id:int}/signoff", dependencies=[Depends(csrf_protect)])
def signoff(request: Request, ban_id: int, note: str = Form("", max_length=2000),
            user: CurrentUser = Depends(ban_roles)) -> Response:
    try:
        with wc.transaction(request) as s:
            decisions.sign_off_ban(s, ban_id, wc.actor(user), note)
    except RegistrationError as exc:
        return _bans(request, user, str(exc), exc.status)
    return RedirectResponse("/registrations/bans", status_code=303)


def _aup(request: Request, user: CurrentUser, error: str = "", status: int = 200) -> Response:
    with db(request) as s:
        versions = list(s.scalars(select(AupVersion).order_by(AupVersion.published_at.desc(), AupVersion.id.desc())))
    return render(request, "registrations_aup.html", {"versions": versions, "error": error}, user,
                  status)  # type: ignore[no-any-return]


@router.get("/registrations/aup")
def aup_versions(request: Request, user: CurrentUser = Depends(aup_roles)) -> Response:
    return _aup(request, user)


@router.post("/registrations/aup", dependencies=[Depends(csrf_protect)])
def publish(request: Request, version: str = Form("", max_length=64), title: str = Form("", max_length=200),
            text: str = Form("", max_length=aup.TEXT_MAX), user: CurrentUser = Depends(aup_roles)) -> Response:
    try:
        with wc.transaction(request) as s:
            aup.publish(s, version, title, text, user.username)
    except RegistrationError as exc:
        return _aup(request, user, str(exc), exc.status)
    return RedirectResponse("/registrations/aup", status_code=303)
