"""A pupil's chronology across every incident, for safeguarding roles only; viewing and export audited."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from dashboard.routes.incidents_common import acting, actor
from dashboard.security import CurrentUser, require_roles, security_headers
from dashboard.templating import render
from esafety.incidents import actions, pupils, queries
from esafety.incidents.access import SAFEGUARDING_READ
from esafety.incidents.csvexport import chronology_csv

router = APIRouter()
safeguarding = require_roles(*SAFEGUARDING_READ)


@router.get("/pupils/{subject}/chronology")
def chronology(request: Request, subject: str, user: CurrentUser = Depends(safeguarding)) -> Response:
    subject = subject[:120]
    with acting(request) as s:
        actions.record_chronology(s, subject, actor(user), "view_chronology")
        entries = queries.chronology(s, subject)
        pupil = pupils.lookup(s, [subject]).get(subject)
    incidents = {e.incident.id: e.incident for e in entries}
    return render(request, "chronology.html",  # type: ignore[no-any-return]
                  {"subject": subject, "entries": entries, "incidents": list(incidents.values()), "pupil": pupil,
                   "now": pupil.now if pupil else pupils.NOWHERE, "at_the_time": pupils.at_the_time}, user)


@router.get("/pupils/{subject}/chronology.csv")
def chronology_export(request: Request, subject: str, user: CurrentUser = Depends(safeguarding)) -> Response:
    subject = subject[:120]
    with acting(request) as s:
        actions.record_chronology(s, subject, actor(user), "export_chronology")
        body = chronology_csv(subject, queries.chronology(s, subject), pupils.lookup(s, [subject]).get(subject))
    safe_name = "".join(c for c in subject if c.isalnum() or c in "-_.")[:60] or "pupil"
    resp = Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="chronology-{safe_name}.csv"'})
    return security_headers(resp)
