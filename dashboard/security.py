"""Sign-in, sessions, CSRF and role checks for every dashboard router.

How other routers use this module:

    from dashboard.security import CurrentUser, csrf_protect, current_user, require_roles

    @router.get("/devices")
    def devices(request: Request, user: CurrentUser = Depends(require_roles("it_admin", "admin"))): ...

    @router.post("/devices/{id}/retire", dependencies=[Depends(csrf_protect)])
    def retire(..., user: CurrentUser = Depends(require_roles("it_admin"))): ...

* `current_user` - any signed-in person, members included (below). Pages (not /api/) without a
  session are redirected to /login?next=...; /api/ paths get 401.
* `MEMBER` - the access level of people with no dashboard role (pupils, staff without a role):
  they may sign in and reach only pages that serve their own things (WiFi registration, account).
  Staff pages use `require_roles`, which members never pass.
* `require_roles(*roles)` - signed in and holding at least one of the roles, else 403.
* `csrf_protect` - for every state-changing request made with a session cookie: the form field
  `csrf_token` (use `{{ csrf_field() }}` in templates, see dashboard/templating.py) or the header
  `X-CSRF-Token` must equal the session's token. Bearer-token callers are exempt (no cookie).
* `api_caller` - a bearer token (`Authorization: Bearer ...`, from `esafety users token NAME`) or a
  session; returns a CurrentUser whose `via` says which.

Sessions live server-side (web_sessions, only a hash of the id is stored); the cookie is HttpOnly,
SameSite=Lax (links from alert emails still work; cross-site POSTs carry no cookie), and Secure
when the dashboard is reached over TLS or ESAFETY_COOKIE_SECURE=1.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

from fastapi import Depends, HTTPException, Request, Response
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from dashboard.policy_state import current_policy
from esafety.auth import checked_by_directory, verify_user
from esafety.policy.schema import DirectorySettings
from esafety.store.db import sessions
from esafety.store.models import User
from esafety.webauth import ApiToken, LoginAttempt, WebSession, new_token, token_hash

SESSION_COOKIE = "esafety_session"
LOGIN_CSRF_COOKIE = "esafety_login_csrf"
IDLE_TIMEOUT = timedelta(minutes=30)
ABSOLUTE_TIMEOUT = timedelta(hours=10)
TOUCH_EVERY = timedelta(seconds=60)  # write last_seen_at at most this often
# Login rate limits: failures within the window lock the account name, or the client address.
RATE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_IP = 30
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MEMBER = "member"  # signed in without a dashboard role: only their own pages


@dataclass(frozen=True)
class CurrentUser:
    username: str
    display_name: str
    roles: frozenset[str]
    csrf_token: str | None  # None for bearer-token callers
    via: str = "session"  # session | token

    def has_any(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def db(request: Request) -> Session:
    """A short session on the dashboard's store (callers use it as a context manager)."""
    return sessions(request.app.state.settings.database_url)()


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _roles(user: User) -> frozenset[str]:
    return frozenset(r.strip() for r in (user.roles or "").split(",") if r.strip())


# -- sessions --------------------------------------------------------------------------------------


def optional_user(request: Request) -> CurrentUser | None:
    """The signed-in user, or None. Cached on the request so several dependencies share one lookup."""
    if hasattr(request.state, "esafety_user"):
        return request.state.esafety_user  # type: ignore[no-any-return]
    user = _lookup_session(request)
    request.state.esafety_user = user
    return user


def _lookup_session(request: Request) -> CurrentUser | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw or len(raw) > 200:
        return None
    now = datetime.now(UTC)
    with db(request) as s:
        ws = s.get(WebSession, token_hash(raw))
        if ws is None:
            return None
        if _aware(ws.expires_at) < now or _aware(ws.last_seen_at) + IDLE_TIMEOUT < now:
            s.delete(ws)
            s.commit()
            return None
        user = s.scalar(select(User).where(User.username == ws.username, User.active.is_(True)))
        if user is None or not (user.password_hash or checked_by_directory(user)):
            return None
        if _aware(ws.last_seen_at) + TOUCH_EVERY < now:
            ws.last_seen_at = now
            s.commit()
        return CurrentUser(user.username, user.display_name or user.username, _roles(user) or frozenset({MEMBER}),
                           ws.csrf_token)


def _login_redirect(request: Request) -> HTTPException:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return HTTPException(status_code=303, detail="sign in first",
                         headers={"Location": f"/login?next={quote(target, safe='')}"})


def current_user(request: Request) -> CurrentUser:
    user = optional_user(request)
    if user is None:
        if request.url.path.startswith("/api/"):
            raise HTTPException(status_code=401, detail="sign in or send a bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        raise _login_redirect(request)
    return user


def require_roles(*roles: str) -> Callable[..., CurrentUser]:
    """A dependency: the signed-in user, who must hold at least one of `roles` (403 otherwise)."""
    wanted = frozenset(roles)

    def dependency(user: CurrentUser = Depends(current_user)) -> CurrentUser:
        if not user.roles & wanted:
            raise HTTPException(status_code=403, detail="your role does not give access to this page")
        return user

    return dependency


def cookie_secure(request: Request) -> bool:
    return request.url.scheme == "https" or os.environ.get("ESAFETY_COOKIE_SECURE") == "1"


def start_session(request: Request, response: Response, username: str) -> str:
    """A fresh session id for every sign-in (no fixation); returns its CSRF token."""
    raw, csrf = new_token(), secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with db(request) as s:
        s.add(WebSession(id_hash=token_hash(raw), username=username, csrf_token=csrf, created_at=now,
                         last_seen_at=now, expires_at=now + ABSOLUTE_TIMEOUT))
        s.commit()
    response.set_cookie(SESSION_COOKIE, raw, httponly=True, samesite="lax", secure=cookie_secure(request),
                        path="/", max_age=int(ABSOLUTE_TIMEOUT.total_seconds()))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return csrf


def end_session(request: Request, response: Response) -> None:
    raw = request.cookies.get(SESSION_COOKIE)
    if raw:
        with db(request) as s:
            s.execute(delete(WebSession).where(WebSession.id_hash == token_hash(raw)))
            s.commit()
    response.delete_cookie(SESSION_COOKIE, path="/")


# -- CSRF ------------------------------------------------------------------------------------------


def _same_origin(request: Request) -> bool:
    """Browsers send Origin on POST; a different host means another site is posting."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def csrf_protect(request: Request, user: CurrentUser = Depends(current_user)) -> None:
    """Reject a state-changing request whose CSRF token does not match the session's."""
    if request.method not in UNSAFE_METHODS or user.via == "token":
        return
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not (_same_origin(request) and sent and user.csrf_token and hmac.compare_digest(sent, user.csrf_token)):
        raise HTTPException(status_code=403, detail="the form has expired or did not come from this site; reload it")


def login_csrf_token(request: Request, cookie: str = LOGIN_CSRF_COOKIE) -> str:
    """A double-submit token for a sign-in form (there is no session yet to hold one). Each form
    (/login, the captive portal's /portal) has its own cookie, scoped to its own path."""
    return request.cookies.get(cookie) or secrets.token_urlsafe(32)


def set_login_csrf(request: Request, response: Response, token: str, cookie: str = LOGIN_CSRF_COOKIE,
                   path: str = "/login") -> None:
    response.set_cookie(cookie, token, httponly=True, samesite="strict", secure=cookie_secure(request),
                        path=path, max_age=3600)


def check_login_csrf(request: Request, sent: str, cookie: str = LOGIN_CSRF_COOKIE) -> bool:
    held = request.cookies.get(cookie, "")
    return bool(held and sent and hmac.compare_digest(held, sent) and _same_origin(request))


# -- sign-in with rate limiting ----------------------------------------------------------------------


class RateLimited(Exception):
    pass


# What the sign-in pages say when a directory person's password cannot be checked.
DIRECTORY_DOWN = ("The school's directory cannot be reached just now, so your password could not be checked. "
                  "Try again in a few minutes.")


def _directory(request: Request) -> DirectorySettings | None:
    """The running policy's directory, which checks the passwords of people synced from it."""
    policy = current_policy(request.app)
    return policy.identity.directory if policy is not None else None


def authenticate(request: Request, username: str, password: str) -> User | None:
    """Check a password, counting failures; raises RateLimited before checking once over the limit,
    and DirectoryUnreachable (not counted as a failure) when the directory cannot be asked."""
    username, ip, now = username.strip()[:120], client_ip(request), datetime.now(UTC)
    since = now - RATE_WINDOW
    with db(request) as s:
        by_user = s.scalar(select(func.count()).select_from(LoginAttempt).where(
            LoginAttempt.username == username, LoginAttempt.ok.is_(False), LoginAttempt.at >= since)) or 0
        by_ip = s.scalar(select(func.count()).select_from(LoginAttempt).where(
            LoginAttempt.ip == ip, LoginAttempt.ok.is_(False), LoginAttempt.at >= since)) or 0
    if by_user >= MAX_FAILURES_PER_USER or by_ip >= MAX_FAILURES_PER_IP:
        raise RateLimited
    user = verify_user(request.app.state.settings.database_url, username, password, _directory(request))
    with db(request) as s:
        s.add(LoginAttempt(username=username, ip=ip, ok=user is not None, at=now))
        s.execute(delete(LoginAttempt).where(LoginAttempt.at < now - timedelta(days=30)))
        s.commit()
    return user


# -- bearer tokens for systems that raise incidents ----------------------------------------------------


def bearer_caller(request: Request) -> CurrentUser | None:
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        return None
    raw = auth[7:].strip()
    with db(request) as s:
        # Look up and stamp last use in one statement: this runs on every API call.
        tok = s.execute(update(ApiToken).where(ApiToken.token_hash == token_hash(raw), ApiToken.revoked_at.is_(None))
                        .values(last_used_at=datetime.now(UTC)).returning(ApiToken.name, ApiToken.scope)).first()
        if tok is None:
            raise HTTPException(status_code=401, detail="unknown or revoked token",
                                headers={"WWW-Authenticate": "Bearer"})
        s.commit()
        return CurrentUser(f"token:{tok.name}", tok.name, frozenset({tok.scope}), None, via="token")


def api_caller(request: Request) -> CurrentUser:
    """A bearer token if one is sent, else the signed-in user (who must then send X-CSRF-Token)."""
    return bearer_caller(request) or current_user(request)


def security_headers(response: Response) -> Response:
    """Safeguarding pages: no caching, no framing, no inline script; evidence stays inert."""
    response.headers["Content-Security-Policy"] = ("default-src 'self'; script-src 'self'; object-src 'none'; "
                                                   "base-uri 'none'; frame-ancestors 'none'; form-action 'self'; "
                                                   "img-src 'self'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response
