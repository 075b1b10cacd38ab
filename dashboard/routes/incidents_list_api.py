"""GET /api/incidents: the queue as JSON, with the HTML queue's filters and the same access rules.

For a signed-in role that reads a queue (a session cookie; GETs need no CSRF token). Query
parameters: state, level, category, queue, pupil, year (NC year: 7, 0 for Reception), tutor
(tutor group), page; values outside the allowed ones are ignored, as on the page. Each incident
carries its pupil as they are now (`pupil`: name, year, tutor group, from the roster and
directory) and as recorded when it was stored (`at_the_time`). Bearer tokens (sensors, agents)
only raise incidents: they cannot read the queue, and no pupil details go back to them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from dashboard.routes.incidents_common import policy, queue_filter
from dashboard.security import CurrentUser, db, require_roles, security_headers
from esafety.incidents import pupils, queries, sla
from esafety.incidents.access import INCIDENT_ROLES
from esafety.store.models import Incident

router = APIRouter()


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


def _incident(inc: Incident, pupil: pupils.Pupil | None, overdue: bool) -> dict[str, Any]:
    return {
        "id": inc.id, "ref": inc.ref, "level": inc.level, "state": inc.state, "queue": inc.queue,
        "category": inc.category, "source": inc.source, "subject": inc.subject, "count": inc.count,
        "created_at": _iso(inc.created_at), "last_seen_at": _iso(inc.last_seen_at),
        "acknowledged_at": _iso(inc.acknowledged_at), "assigned_to": inc.assigned_to, "overdue": overdue,
        "pupil": ({"name": pupil.name or None, **pupil.now.as_json()} if pupil else None),
        "at_the_time": pupils.at_the_time(inc).as_json() if inc.subject else None,
    }


def _no_tokens(request: Request) -> None:
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        raise HTTPException(status_code=403,
                            detail="API tokens raise incidents; reading the queue needs a signed-in role")


@router.get("/api/incidents", dependencies=[Depends(_no_tokens)])
def list_incidents(request: Request, user: CurrentUser = Depends(require_roles(*INCIDENT_ROLES))) -> JSONResponse:
    f, visible = queue_filter(request, user)
    pol = policy(request)
    with db(request) as s:
        page = queries.queue_page(s, f, visible, pol)
    body = {
        "filters": f.params(), "total": page.total, "unacknowledged": page.unacknowledged, "overdue": page.overdue,
        "page": page.page, "pages": page.pages,
        "incidents": [_incident(i, page.people.get(i.subject or ""), sla.is_overdue(i, pol)) for i in page.rows],
    }
    return security_headers(JSONResponse(body))  # type: ignore[return-value]
