"""The devices pages: compliance per device and per check, filters, history, time-boxed exceptions,
enrolment tokens (shown once) and retiring a device.

IT (it_admin, admin) manage; the DSL, deputies and SLT read; everyone else gets 403.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import delete, func, select

from dashboard.policy_state import current_policy
from dashboard.security import CurrentUser, csrf_protect, db, require_roles
from dashboard.templating import render
from esafety.compliance import exceptions, queries
from esafety.compliance.agentsettings import timing_of
from esafety.compliance.catalogue import CATALOGUE
from esafety.compliance.enrol import MAX_TOKEN_HOURS, create_token
from esafety.compliance.rollup import DeviceState
from esafety.compliance.sessions import SOURCE, known_accounts
from esafety.compliance.tables import Device, DeviceCheckEvent, DeviceException
from esafety.compliance.wire import PLATFORMS
from esafety.incidents.audit import Chain
from esafety.store.models import IpBinding

router = APIRouter()
MANAGE = ("it_admin", "admin")
READ = (*MANAGE, "dsl", "deputy_dsl", "slt")
manager = require_roles(*MANAGE)
reader = require_roles(*READ)
STATES = [s.value for s in DeviceState] + [queries.RETIRED]


def _tz(request: Request) -> ZoneInfo:
    pol = current_policy(request.app)
    return ZoneInfo(pol.timezone if pol else "Europe/London")


def _clause_texts(request: Request) -> dict[str, str]:
    pol = current_policy(request.app)
    return {cid: c.text for cid, c in pol.clauses.items()} if pol else {}


def _choice(value: str | None, allowed: list[str] | tuple[str, ...]) -> tuple[str | None, str]:
    """A filter value, or None with a message when it is not one of the allowed ones."""
    if not value:
        return None, ""
    if value not in allowed:
        return None, f"'{value}' is not a filter value here; showing all."
    return value, ""


def _list_page(request: Request, user: CurrentUser, state_: str | None = None, check: str | None = None,
               platform: str | None = None, q: str | None = None, new_token: Any = None, error: str = "",
               status: int = 200) -> Response:
    notes = []
    state_, n1 = _choice(state_, STATES)
    check, n2 = _choice(check, [c.id for c in CATALOGUE])
    platform, n3 = _choice(platform, PLATFORMS)
    notes += [n for n in (n1, n2, n3) if n]
    q = (q or "").strip()[:100] or None
    f = queries.DeviceFilter(state_, check, platform, q)
    with db(request) as s:
        rows, total = queries.list_devices(s, f)
        counts = {st: n for st, n in s.execute(
            select(Device.state, func.count()).where(Device.retired_at.is_(None))
            .group_by(Device.state)).all()}
        toks = queries.tokens(s) if user.has_any(*MANAGE) else []
    ctx = {"rows": rows, "total": total, "filter": f, "states": STATES, "catalogue": CATALOGUE, "titles":
           {c.id: c.title for c in CATALOGUE}, "platforms": PLATFORMS, "counts": counts, "notes": notes,
           "can_manage": user.has_any(*MANAGE), "tokens": toks, "new_token": new_token, "error": error,
           "max_hours": MAX_TOKEN_HOURS, "now": datetime.now(UTC)}
    return render(request, "devices.html", ctx, user, status)  # type: ignore[no-any-return]


@router.get("/devices")
def device_list(request: Request, state: str | None = None, check: str | None = None, platform: str | None = None,
                q: str | None = None, user: CurrentUser = Depends(reader)) -> Response:
    return _list_page(request, user, state, check, platform, q)


@router.post("/devices/tokens", dependencies=[Depends(csrf_protect)])
def new_token(request: Request, hours: str = Form("24", max_length=10), note: str = Form("", max_length=200),
              owner: str = Form("", max_length=120), user: CurrentUser = Depends(manager)) -> Response:
    try:
        h = float(hours)
    except ValueError:
        h = -1.0
    if not 0 < h <= MAX_TOKEN_HOURS:
        return _list_page(request, user, error=f"A token lasts between 1 and {MAX_TOKEN_HOURS} hours.", status=422)
    with db(request) as s:
        owner_name = owner.strip() or None
        if owner_name is not None:
            found = known_accounts(s, [owner_name])
            if not found:
                return _list_page(request, user, error=f"No active account named '{owner_name}'.", status=422)
            owner_name = next(iter(found.values()))
        tok = create_token(s, user.username, h, note.strip(), owner_name)
        Chain(s).add(None, user.username, "enrolment_token", token_id=tok.id, note=note.strip(), owner=owner_name,
                     expires_at=tok.expires_at.isoformat())
        s.commit()
    # Rendered, not redirected: the token exists only in this response (the store keeps its hash).
    return _list_page(request, user, new_token=tok)


def _device_page(request: Request, user: CurrentUser, device_id: str, error: str = "", status: int = 200) -> Response:
    pol = current_policy(request.app)
    with db(request) as s:
        view = queries.device_view(s, device_id, timing_of(pol))
    if view is None:
        return render(request, "device.html", {"view": None, "error": "No such device."}, user,
                      404)  # type: ignore[no-any-return]
    ctx = {"view": view, "error": error, "can_manage": user.has_any(*MANAGE), "clauses": _clause_texts(request),
           "catalogue": [c for c in CATALOGUE if view.device.platform in c.platforms], "titles":
           {c.id: c.title for c in CATALOGUE}, "tz": str(_tz(request)), "now": datetime.now(UTC)}
    return render(request, "device.html", ctx, user, status)  # type: ignore[no-any-return]


@router.get("/devices/{device_id}")
def device_page(request: Request, device_id: str, user: CurrentUser = Depends(reader)) -> Response:
    return _device_page(request, user, device_id[:32])


@router.post("/devices/{device_id}/exceptions", dependencies=[Depends(csrf_protect)])
def grant_exception(request: Request, device_id: str, check: str = Form("", max_length=64),
                    reason: str = Form("", max_length=2000), approved_by: str = Form("", max_length=200),
                    until: str = Form("", max_length=32), user: CurrentUser = Depends(manager)) -> Response:
    device_id = device_id[:32]
    try:
        local = datetime.fromisoformat(until)
    except ValueError:
        return _device_page(request, user, device_id, "Give the date and time the exception ends.", 422)
    expires = (local if local.tzinfo else local.replace(tzinfo=_tz(request))).astimezone(UTC)
    timing = timing_of(current_policy(request.app))
    with db(request) as s:
        try:
            exceptions.grant(s, device_id, check, reason, approved_by, expires, user.username, timing)
        except exceptions.ExceptionRefused as exc:
            s.rollback()
            return _device_page(request, user, device_id, str(exc), 422)
        s.commit()
    return RedirectResponse(f"/devices/{device_id}#exceptions", status_code=303)


@router.post("/devices/{device_id}/exceptions/{exception_id:int}/revoke", dependencies=[Depends(csrf_protect)])
def revoke_exception(request: Request, device_id: str, exception_id: int,
                     user: CurrentUser = Depends(manager)) -> Response:
    device_id = device_id[:32]
    timing = timing_of(current_policy(request.app))
    with db(request) as s:
        exc = s.get(DeviceException, exception_id)
        if exc is None or exc.device_id != device_id:
            return _device_page(request, user, device_id, "No such exception on this device.", 404)
        try:
            exceptions.revoke(s, exception_id, user.username, timing)
        except exceptions.ExceptionRefused as e:
            s.rollback()
            return _device_page(request, user, device_id, str(e), 409)
        s.commit()
    return RedirectResponse(f"/devices/{device_id}#exceptions", status_code=303)


@router.post("/devices/{device_id}/retire", dependencies=[Depends(csrf_protect)])
def retire(request: Request, device_id: str, user: CurrentUser = Depends(manager)) -> Response:
    """The device's credential stops working at once (lost, stolen, replaced); its history stays."""
    device_id = device_id[:32]
    now = datetime.now(UTC)
    with db(request) as s:
        device = s.get(Device, device_id)
        if device is None:
            return _device_page(request, user, device_id, "No such device.", 404)
        if device.retired_at is not None:
            return _device_page(request, user, device_id, "This device is already retired.", 409)
        device.retired_at, device.retired_by = now, user.username
        s.add(DeviceCheckEvent(device_id=device.id, check_id=None, from_status=device.state,
                                     to_status="retired", at=now, note=f"retired by {user.username}"))
        s.execute(delete(IpBinding).where(IpBinding.source == SOURCE, IpBinding.device == device.hostname))
        Chain(s).add(None, user.username, "device_retired", device_id=device.id, hostname=device.hostname)
        s.commit()
    return RedirectResponse(f"/devices/{device_id}", status_code=303)
