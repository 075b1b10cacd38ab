"""The endpoint agents' API (notes/agent-contract.md): POST /api/agent/enrol and /api/agent/report.

Agents hold no dashboard session: enrolment takes a one-time token, reports carry
`Authorization: Bearer <device_id>.<credential>`. Every refusal is JSON
{"error": code, "detail": reason} and counted in esafety_agent_reports_refused_total{reason}:
  401 bad_token / unauthenticated, 409 replayed_or_out_of_order (with last_seq),
  413 too_large (body over 256 KiB), 422 malformed (the detail names the field).
The body is read (bounded) first, then, off the event loop and in one transaction: the
credential, the body's shape, the sequence number, and the report's effects.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from dashboard.policy_state import current_policy
from dashboard.security import client_ip, db
from esafety import metrics
from esafety.compliance.agentsettings import reply_settings
from esafety.compliance.enrol import TokenRefused, authenticate, enrol
from esafety.compliance.reports import Replayed, accept
from esafety.compliance.wire import MAX_BODY, Malformed, parse_enrol, parse_report
from esafety.incidents.pipeline import process_new

router = APIRouter()
log = logging.getLogger("esafety.agent_api")


class Refusal(Exception):
    def __init__(self, status: int, error: str, detail: str, reason: str, **extra: Any):
        super().__init__(detail)
        self.status, self.error, self.detail, self.reason, self.extra = status, error, detail, reason, extra

    def response(self) -> JSONResponse:
        metrics.AGENT_REPORTS_REFUSED.labels(reason=self.reason).inc()
        return JSONResponse({"error": self.error, "detail": self.detail, **self.extra}, status_code=self.status,
                            headers={"WWW-Authenticate": "Bearer"} if self.status == 401 else None)


def _malformed(exc: Malformed) -> Refusal:
    return Refusal(422, "malformed", exc.detail, "malformed", field=exc.field)


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise Refusal(413, "too_large", f"the body is {declared} bytes; the limit is {MAX_BODY}", "too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise Refusal(413, "too_large", f"the body is over the limit of {MAX_BODY} bytes", "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/api/agent/enrol")
async def enrol_device(request: Request) -> JSONResponse:
    try:
        raw = await _read_body(request)
        return await run_in_threadpool(_enrol, request, raw)
    except Refusal as r:
        return r.response()


def _enrol(request: Request, raw: bytes) -> JSONResponse:
    try:
        body = parse_enrol(raw)
    except Malformed as exc:
        raise _malformed(exc) from None
    with db(request) as s:
        try:
            done = enrol(s, body, client_ip(request))
        except TokenRefused as exc:
            s.rollback()
            raise Refusal(401, "bad_token", str(exc), "bad_token") from None
        s.commit()
    log.info("device enrolled", extra={"fields": {"device_id": done.device.id, "platform": body.platform}})
    return JSONResponse({"device_id": done.device.id, "credential": done.credential,
                         **reply_settings(current_policy(request.app))})


@router.post("/api/agent/report")
async def report(request: Request) -> JSONResponse:
    try:
        raw = await _read_body(request)
        return await run_in_threadpool(_report, request, raw)
    except Refusal as r:
        return r.response()


def _report(request: Request, raw: bytes) -> JSONResponse:
    policy = current_policy(request.app)
    with db(request) as s:
        device = authenticate(s, request.headers.get("authorization"))
        if device is None:
            raise Refusal(401, "unauthenticated", "unknown device or wrong credential (enrol again if this device "
                          "was retired)", "unauthenticated")
        try:
            body = parse_report(raw)
        except Malformed as exc:
            raise _malformed(exc) from None
        if body.device_id != device.id:
            raise Refusal(422, "malformed", "device_id: does not match the credential's device", "malformed",
                          field="device_id")
        try:
            outcome = accept(s, device, body, client_ip(request), policy, datetime.now(UTC))
        except Replayed as exc:
            s.rollback()
            raise Refusal(409, "replayed_or_out_of_order",
                          f"seq {body.seq} is not above the last accepted report ({exc.last_seq})", "replayed",
                          last_seq=exc.last_seq) from None
        if outcome.incidents:
            process_new(s, policy, request.app.state.settings.dashboard_url)
        s.commit()
    metrics.AGENT_REPORTS.labels(kind=body.kind).inc()
    reply = reply_settings(policy)
    return JSONResponse({"accepted_seq": outcome.accepted_seq, "heartbeat_seconds": reply["heartbeat_seconds"],
                         "check_seconds": reply["check_seconds"], "settings": reply["settings"],
                         "want_snapshot": outcome.want_snapshot})
