"""Sign in and out, and the landing page that sends each role to its work."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from dashboard.security import (
    DIRECTORY_DOWN,
    CurrentUser,
    RateLimited,
    authenticate,
    check_login_csrf,
    csrf_protect,
    current_user,
    end_session,
    login_csrf_token,
    optional_user,
    set_login_csrf,
    start_session,
)
from dashboard.templating import render
from esafety.auth import DirectoryUnreachable
from esafety.incidents.access import INCIDENT_ROLES

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only a local path: an open redirect after sign-in would make phishing easy."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


@router.get("/")
def home(user: CurrentUser = Depends(current_user)) -> Response:
    if user.roles & INCIDENT_ROLES:
        return RedirectResponse("/incidents", status_code=303)
    if "admin" in user.roles:
        return RedirectResponse("/admin/users", status_code=303)
    return RedirectResponse("/wifi", status_code=303)  # members (pupils, staff without a role): their devices


@router.get("/account")
def account(request: Request, user: CurrentUser = Depends(current_user)) -> Response:
    return render(request, "account.html", {}, user)


def _login_page(request: Request, next_url: str, error: str = "", status: int = 200) -> Response:
    token = login_csrf_token(request)
    resp: Response = render(request, "login.html", {"next": next_url, "error": error, "login_csrf": token}, None,
                            status)
    set_login_csrf(request, resp, token)
    return resp


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:  # noqa: A002 - the query name
    if optional_user(request) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(request, _safe_next(next))


@router.post("/login")
def login(request: Request, username: str = Form(..., max_length=120), password: str = Form(..., max_length=200),
          csrf_token: str = Form(""), next: str = Form("/")) -> Response:  # noqa: A002
    target = _safe_next(next)
    if not check_login_csrf(request, csrf_token):
        return _login_page(request, target, "The sign-in form expired. Please try again.", 403)
    try:
        user = authenticate(request, username, password)
    except RateLimited:
        return _login_page(request, target, "Too many failed sign-ins. Wait 15 minutes and try again.", 429)
    except DirectoryUnreachable:
        return _login_page(request, target, DIRECTORY_DOWN, 503)
    if user is None:
        return _login_page(request, target, "Wrong username or password.", 401)
    resp = RedirectResponse(target, status_code=303)
    start_session(request, resp, user.username)
    return resp


@router.post("/logout", dependencies=[Depends(csrf_protect)])
def logout(request: Request) -> Response:
    resp = RedirectResponse("/login", status_code=303)
    end_session(request, resp)
    return resp
