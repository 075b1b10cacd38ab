"""POST /api/incidents: how other sources (sensors, agents, integrations, staff) raise an incident.

Authentication: `Authorization: Bearer <token>` (create one with `esafety users token NAME`), or a
dashboard session of a role that works a queue, sending its CSRF token in `X-CSRF-Token`
(sessions may only raise source "staff"). The body is JSON, checked strictly: unknown fields,
wrong types, unknown categories or evidence over 16 KiB are refused with 422 and the reason.
An `Idempotency-Key` header (or "key" field) makes retries safe: the same key returns the same
incident with 200 instead of 201.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from dashboard.routes.incidents_common import policy
from dashboard.security import api_caller, csrf_protect, db
from esafety.incidents.access import WRITE
from esafety.incidents.ingest import ingest
from esafety.incidents.model import EVIDENCE_MAX_BYTES, IncidentReport
from esafety.incidents.pipeline import process_new
from esafety.incidents.tables import IncidentKey
from esafety.store.models import Incident

router = APIRouter()
MAX_BODY = 64 * 1024
TOKEN_SCOPE = "incidents:write"  # noqa: S105 - a scope name, not a secret


class IncidentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["proxy", "agent", "sensor", "staff"]
    category: StrictStr = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    level: StrictInt = Field(ge=1, le=5)
    summary: StrictStr = Field(min_length=1, max_length=500)
    subject: StrictStr | None = Field(default=None, max_length=120)
    device: StrictStr | None = Field(default=None, max_length=120)
    client_ip: StrictStr | None = Field(default=None, max_length=45)
    evidence: dict[str, Any] = Field(default_factory=dict)
    occurred_at: datetime | None = None
    key: StrictStr | None = Field(default=None, min_length=8, max_length=64)

    @field_validator("client_ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is not None:
            ip_address(v)  # ValueError -> 422 "value is not a valid IP address"
        return v

    @field_validator("evidence")
    @classmethod
    def _evidence_size(cls, v: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(v, ensure_ascii=False).encode())
        if size > EVIDENCE_MAX_BYTES:
            raise ValueError(f"evidence is {size} bytes; the limit is {EVIDENCE_MAX_BYTES}")
        return v

    @field_validator("occurred_at")
    @classmethod
    def _when(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return v
        v = v if v.tzinfo else v.replace(tzinfo=UTC)
        if v > datetime.now(UTC) + timedelta(minutes=5):
            raise ValueError("occurred_at is in the future")
        return v


def _unprocessable(loc: str, msg: str) -> HTTPException:
    return HTTPException(status_code=422, detail=[{"loc": ["body", loc], "msg": msg, "type": "value_error"}])


async def _read_body(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPException(status_code=413, detail=f"body over {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _result(inc: Incident, created: bool, merged: bool = False) -> JSONResponse:
    return JSONResponse({"id": inc.id, "ref": inc.ref, "queue": inc.queue, "level": inc.level, "state": inc.state,
                         "created": created, "merged": merged}, status_code=201 if created else 200)


@router.post("/api/incidents")
async def raise_incident(request: Request) -> JSONResponse:
    caller = await run_in_threadpool(api_caller, request)  # a database lookup: not on the event loop
    if caller.via == "session":
        await csrf_protect(request, caller)
        if not any(r in WRITE for r in caller.roles):
            raise HTTPException(status_code=403, detail="your role cannot raise incidents")
    elif TOKEN_SCOPE not in caller.roles:
        raise HTTPException(status_code=403, detail=f"token lacks scope {TOKEN_SCOPE}")
    if "application/json" not in request.headers.get("content-type", ""):
        raise HTTPException(status_code=415, detail="send application/json")
    try:
        body = IncidentIn.model_validate_json(await _read_body(request))
    except ValidationError as exc:
        raise HTTPException(status_code=422, detail=json.loads(exc.json(include_url=False, include_input=False))) \
            from None
    if caller.via == "session" and body.source != "staff":
        raise _unprocessable("source", "a signed-in person raises incidents with source \"staff\"")
    pol = policy(request)
    if pol is not None and body.category not in pol.categories:
        raise _unprocessable("category", f"unknown category {body.category!r}")
    key = request.headers.get("idempotency-key") or body.key
    if key is not None and not 8 <= len(key) <= 64:
        raise _unprocessable("key", "an idempotency key is 8 to 64 characters")
    rep = IncidentReport(source=body.source, category=body.category, level=body.level, summary=body.summary,
                         subject=body.subject, device=body.device, client_ip=body.client_ip, evidence=body.evidence,
                         occurred_at=body.occurred_at or datetime.now(UTC), key=key or "")
    link = request.app.state.settings.dashboard_url
    return await _store(request, rep, key, pol, link)


async def _store(request: Request, rep: IncidentReport, key: str | None, pol: Any, link: str) -> JSONResponse:
    def work() -> JSONResponse:
        try:
            return attempt()
        except IntegrityError:  # the same key raced in from a retry: the first one won; return it
            return attempt()

    def attempt() -> JSONResponse:
        with db(request) as s:
            if key:
                existing = s.scalar(select(Incident).where(Incident.key == key))
                if existing is None:
                    merged_id = s.scalar(select(IncidentKey.incident_id).where(IncidentKey.key == key))
                    existing = s.get(Incident, merged_id) if merged_id else None
                if existing is not None:
                    return _result(existing, created=False)
            created = ingest(s, [rep], pol)
            merged = not created
            if created:
                inc = created[0]
            else:  # merged into a burst: ingest recorded which incident took the key
                inc = s.get(Incident, s.scalar(select(IncidentKey.incident_id)
                                               .where(IncidentKey.key == rep.idempotency_key())))
            process_new(s, pol, link)
            s.commit()
            return _result(inc, created=not merged, merged=merged)

    return await run_in_threadpool(work)
