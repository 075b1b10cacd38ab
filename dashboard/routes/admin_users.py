"""Admin: dashboard accounts. New accounts get a generated password shown once; nobody types one."""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy import delete, select

from dashboard.security import CurrentUser, csrf_protect, db, require_roles
from dashboard.templating import render
from esafety.auth import generate_password, hash_password
from esafety.commands.users import ROLES
from esafety.store.models import User
from esafety.webauth import WebSession

router = APIRouter()
admin = require_roles("admin")
NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,120}$")


def _page(request: Request, user: CurrentUser, message: str = "", password: str = "", status: int = 200) -> Response:
    with db(request) as s:
        users = list(s.scalars(select(User).where(User.roles != "").order_by(User.username)))
    return render(request, "users.html", {"users": users, "roles": ROLES, "message": message,  # type: ignore
                                          "password": password}, user, status)


@router.get("/admin/users")
def users(request: Request, user: CurrentUser = Depends(admin)) -> Response:
    return _page(request, user)


@router.post("/admin/users", dependencies=[Depends(csrf_protect)])
async def add_user(request: Request, user: CurrentUser = Depends(admin)) -> Response:
    form = await request.form()
    name = str(form.get("username", "")).strip()
    roles = [r for r in form.getlist("roles") if isinstance(r, str) and r in ROLES]
    email = str(form.get("email", "")).strip()[:254]
    if not NAME_RE.match(name) or not roles:
        return _page(request, user, "A username (letters, digits, . _ @ -) and at least one role are needed.",
                     status=400)
    password = generate_password()
    with db(request) as s:
        if s.scalar(select(User.id).where(User.username == name)) is not None:
            return _page(request, user, f"{name} already exists.", status=409)
        s.add(User(username=name, display_name=name, email=email, policy_group="staff", roles=",".join(roles),
                   password_hash=hash_password(password)))
        s.commit()
    return _page(request, user, f"Added {name}. Give them this password once; it is not stored.", password)


@router.post("/admin/users/{username}/deactivate", dependencies=[Depends(csrf_protect)])
def deactivate(request: Request, username: str, user: CurrentUser = Depends(admin)) -> Response:
    if username == user.username:
        raise HTTPException(status_code=409, detail="you cannot deactivate yourself")
    with db(request) as s:
        target = s.scalar(select(User).where(User.username == username))
        if target is None:
            raise HTTPException(status_code=404, detail="no such user")
        target.active = False
        s.execute(delete(WebSession).where(WebSession.username == username))  # signed out everywhere
        s.commit()
    return _page(request, user, f"{username} can no longer sign in.")
