"""The queue: open incidents the user's roles may see, highest level and oldest first."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from dashboard.routes.incidents_common import policy
from dashboard.security import CurrentUser, db, require_roles
from dashboard.templating import render
from esafety.incidents import queries, sla
from esafety.incidents.access import INCIDENT_ROLES, can_read_chronology, readable_queues
from esafety.incidents.states import OPEN_STATES

router = APIRouter()


@router.get("/incidents")
def queue(request: Request, user: CurrentUser = Depends(require_roles(*INCIDENT_ROLES))) -> Response:
    visible = readable_queues(user.roles)
    params = {k: v for k, v in request.query_params.items() if k in ("state", "level", "category", "queue", "pupil",
                                                                      "page")}
    f = queries.QueueFilter.parse(params, visible)
    pol = policy(request)
    with db(request) as s:
        page = queries.queue_page(s, f, visible, pol)
    keep = {k: v for k, v in (("state", f.state), ("level", f.level), ("category", f.category), ("queue", f.queue),
                              ("pupil", f.pupil)) if v not in (None, "")}

    def page_url(n: int) -> str:
        return "/incidents?" + urlencode({**keep, "page": n})

    ctx = {
        "page": page, "f": f, "queues": sorted(visible), "states": queries.STATE_FILTERS,
        "open_states": OPEN_STATES, "page_url": page_url,
        "overdue_ids": {i.id for i in page.rows if sla.is_overdue(i, pol)},
        "categories": sorted(pol.categories) if pol else [],
        "chronology": can_read_chronology(user.roles),
    }
    return render(request, "queue.html", ctx, user)  # type: ignore[no-any-return]
