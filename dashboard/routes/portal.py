"""The captive portal: the sign-in page the proxy sends an unidentified browser to.

    GET  /portal?t=TOKEN&next=URL   the form (or, on a device signed in here, who is signed in)
    POST /portal                    check the password, bind the token's IP to the person for a session
    POST /portal/signout            remove this device's binding

The proxy (proxy_addons/signin.py) redirects an unidentified browser's page to /portal with a token
vouching for the client IP it saw (esafety/identity/portal.py) and the page it asked for. Signing in
writes an IpBinding(source="portal") for that IP, which the proxy reads at its next identity refresh
(seconds), and from then on the person's policy group applies. Without a token the dashboard's own
view of the client address is bound (a browser that reached the dashboard directly).

No dashboard session is started: the portal names a device on the network, and a dashboard session
is for the person at the browser (on a shared device, the next pupil would inherit it), and the two
last differently (the policy's portal session, hours; a dashboard session idles out in 30 minutes).
A pupil who wants their WiFi devices signs in at /login.

The device remembers its portal session in a cookie (path /portal) so it can show who is signed in
and sign out; signing out removes only the binding that session made.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dashboard.policy_state import current_policy
from dashboard.security import (
    DIRECTORY_DOWN,
    RateLimited,
    authenticate,
    check_login_csrf,
    client_ip,
    cookie_secure,
    db,
    login_csrf_token,
    set_login_csrf,
)
from dashboard.templating import HERE, render
from esafety import metrics
from esafety.auth import DirectoryUnreachable
from esafety.identity.portal import is_ip, load_key, verify_token
from esafety.policy.schema import PortalSettings
from esafety.store.models import IpBinding, User

router = APIRouter()
log = logging.getLogger("esafety.dashboard.portal")

CSRF_COOKIE = "esafety_portal_csrf"
SESSION_COOKIE = "esafety_portal_session"
PATH = "/portal"
SOURCE = "portal"
# A live binding from these sources is the school's own word on the address: a portal sign-in never
# replaces it (an agent sees who is logged in on the device; a static entry is IT's).
PROTECTED = frozenset({"agent", "static"})
MAX_NEXT = 2000
EXPIRED = "This sign-in link has expired: open any website again to get a new one."


# -- small helpers ---------------------------------------------------------------------------------


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _key(request: Request) -> bytes:
    key: bytes | None = getattr(request.app.state, "portal_key", None)
    if key is None:
        key = request.app.state.portal_key = load_key(request.app.state.settings.home)
    return key


def _until(request: Request, dt: datetime) -> str:
    """When the sign-in ends, in the school's time zone (a pupil reads 15:20, not 14:20 UTC)."""
    policy = current_policy(request.app)
    try:
        zone = ZoneInfo(policy.timezone) if policy else UTC
    except (ZoneInfoNotFoundError, ValueError):
        zone = UTC
    return _aware(dt).astimezone(zone).strftime("%H:%M on %A %-d %B")


def _portal_settings(request: Request) -> tuple[str, PortalSettings]:
    policy = current_policy(request.app)
    return (policy.school, policy.identity.portal) if policy else ("School", PortalSettings())


def safe_next(target: str | None) -> str | None:
    """The page to continue to: an absolute http(s) URL, or None. `next` is attacker-controlled:
    anything else (javascript:, data:, a relative path that could look like ours) is not linked."""
    if not target or len(target) > MAX_NEXT or any(ord(c) < 0x21 or c == "\\" for c in target):
        return None
    try:
        parts = urlsplit(target)
        host = parts.hostname
    except ValueError:
        return None
    return target if parts.scheme in ("http", "https") and host else None


def _year_label(year: int | None) -> str:
    if year is None:
        return ""
    return "Reception" if year == 0 else "Nursery" if year < 0 else f"Year {year}"


def _who(user: User) -> dict[str, str]:
    place = ", ".join(p for p in (_year_label(user.year_group), user.tutor_group) if p)
    return {"name": user.display_name or user.username, "username": user.username, "place": place}


def _audit(result: str, username: str, ip: str, **more: Any) -> None:
    metrics.PORTAL_SIGNINS.labels(result=result).inc()
    log.info("portal sign-in", extra={"fields": {"result": result, "username": username[:120], "ip": ip, **more}})


# -- the store ---------------------------------------------------------------------------------------


def bind(s: Session, ip: str, username: str, session_id: str, now: datetime, ttl: timedelta) -> bool:
    """Upsert the portal binding of `ip`; False (nothing written) when a live agent or static
    binding holds the address. Two sign-ins racing for one address: the later one wins."""
    for _attempt in range(2):
        b = s.get(IpBinding, ip, populate_existing=True)
        if b is not None and b.source in PROTECTED and (b.expires_at is None or _aware(b.expires_at) > now):
            return False
        if b is None:
            s.add(IpBinding(ip=ip, username=username, device=None, source=SOURCE, updated_at=now,
                            expires_at=now + ttl, session_id=session_id, nas=None))
        else:
            b.username, b.device, b.source, b.updated_at = username, None, SOURCE, now
            b.expires_at, b.session_id, b.nas = now + ttl, session_id, None
        try:
            s.commit()
            return True
        except IntegrityError:  # another sign-in inserted the same address first: update theirs
            s.rollback()
    raise RuntimeError(f"could not bind {ip}")


def _live_session(request: Request) -> tuple[IpBinding, User] | None:
    sid = request.cookies.get(SESSION_COOKIE)
    if not sid or len(sid) > 128:
        return None
    with db(request) as s:
        row = s.execute(select(IpBinding, User).join(User, User.username == IpBinding.username)
                        .where(IpBinding.session_id == sid, IpBinding.source == SOURCE)).first()
    if row is None or (row[0].expires_at is not None and _aware(row[0].expires_at) < datetime.now(UTC)):
        return None
    return row[0], row[1]


# -- pages -------------------------------------------------------------------------------------------


def _page(request: Request, state: str, status: int = 200, **ctx: Any) -> Response:
    school, _ = _portal_settings(request)
    token = login_csrf_token(request, CSRF_COOKIE)
    context = {"state": state, "school": school, "csrf": token, "error": "", "t": "", "next_url": None,
               "next_raw": "", "username": "", "who": None, "until": None, **ctx}
    resp: Response = render(request, "portal.html", context, None, status)
    set_login_csrf(request, resp, token, CSRF_COOKIE, PATH)
    return resp


def _token_ip(request: Request, t: str) -> str | None:
    """The address to bind: the token's, or (no token) the address the dashboard sees."""
    if not t:
        host = client_ip(request)
        return host if is_ip(host) else None
    return verify_token(_key(request), t, time.time())


@router.get("/assets/portal.css", include_in_schema=False)
def stylesheet() -> FileResponse:
    return FileResponse(HERE / "static" / "portal.css", media_type="text/css",
                        headers={"Cache-Control": "max-age=3600"})


@router.get("/portal")
def portal_form(request: Request, t: str = "", next: str = "") -> Response:  # noqa: A002 - the query name
    target = safe_next(next)
    ip = _token_ip(request, t[:200])
    if ip is None:
        return _page(request, "expired", 400, error=EXPIRED)
    live = _live_session(request)
    if live is not None and live[0].ip == ip:  # this device is signed in already
        return _page(request, "signed_in", who=_who(live[1]), next_url=target,
                     until=_until(request, live[0].expires_at) if live[0].expires_at else None)
    return _page(request, "form", t=t[:200], next_url=target, next_raw=next[:MAX_NEXT])


@router.post("/portal")
def portal_signin(request: Request, username: str = Form("", max_length=120), password: str = Form("", max_length=200),
                  csrf_token: str = Form("", max_length=200), t: str = Form("", max_length=200),
                  next: str = Form("", max_length=MAX_NEXT)) -> Response:  # noqa: A002
    target = safe_next(next)
    form = {"t": t, "next_url": target, "next_raw": next, "username": username}
    if not check_login_csrf(request, csrf_token, CSRF_COOKIE):
        _audit("csrf", username, client_ip(request))
        return _page(request, "form", 403, error="The sign-in form expired. Please try again.", **form)
    ip = _token_ip(request, t)
    if ip is None:
        _audit("bad_token", username, client_ip(request))
        return _page(request, "expired", 400, error=EXPIRED)
    if not username.strip() or not password:
        return _page(request, "form", 400, error="Enter your school username and password.", **form)
    try:
        user = authenticate(request, username, password)
    except RateLimited:
        _audit("rate_limited", username, ip)
        return _page(request, "form", 429, error="Too many failed sign-ins. Wait 15 minutes and try again.", **form)
    except DirectoryUnreachable:
        _audit("directory_unreachable", username, ip)
        return _page(request, "form", 503, error=DIRECTORY_DOWN, **form)
    if user is None:
        _audit("rejected", username, ip)
        return _page(request, "form", 401, error="Wrong username or password.", **form)
    _, settings = _portal_settings(request)
    now, sid = datetime.now(UTC), secrets.token_urlsafe(24)
    with db(request) as s:
        ok = bind(s, ip, user.username, sid, now, timedelta(seconds=settings.session_seconds))
    if not ok:
        _audit("managed", user.username, ip)
        return _page(request, "managed", 409)
    _audit("ok", user.username, ip, session_seconds=settings.session_seconds)
    resp = _page(request, "signed_in", who=_who(user), next_url=target,
                 until=_until(request, now + timedelta(seconds=settings.session_seconds)))
    resp.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="lax", secure=cookie_secure(request), path=PATH,
                    max_age=settings.session_seconds)
    return resp


@router.post("/portal/signout")
def portal_signout(request: Request, csrf_token: str = Form("", max_length=200)) -> Response:
    if not check_login_csrf(request, csrf_token, CSRF_COOKIE):
        return _page(request, "form", 403, error="The form expired. Open this page again to sign out.")
    sid = request.cookies.get(SESSION_COOKIE, "")
    removed: list[tuple[str, str]] = []
    if sid and len(sid) <= 128:
        with db(request) as s:
            removed = [(r.ip, r.username) for r in s.execute(
                delete(IpBinding).where(IpBinding.session_id == sid, IpBinding.source == SOURCE)
                .returning(IpBinding.ip, IpBinding.username))]
            s.commit()
    for ip, username in removed:
        log.info("portal sign-out", extra={"fields": {"username": username, "ip": ip}})
    resp = _page(request, "signed_out")
    resp.delete_cookie(SESSION_COOKIE, path=PATH)
    return resp
