"""The queue: open incidents the user's roles may see, highest level and oldest first."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from dashboard.routes.incidents_common import policy, queue_filter
from dashboard.security import CurrentUser, db, require_roles
from dashboard.templating import render
from esafety.incidents import pupils, queries, sla
from esafety.incidents.access import INCIDENT_ROLES, can_read_chronology
from esafety.incidents.states import OPEN_STATES

router = APIRouter()


@router.get("/incidents")
def queue(request: Request, user: CurrentUser = Depends(require_roles(*INCIDENT_ROLES))) -> Response:
    f, visible = queue_filter(request, user)
    pol = policy(request)
    with db(request) as s:
        page = queries.queue_page(s, f, visible, pol)
        options = pupils.filter_options(s)
    keep = f.params()
    # The chosen year or tutor group stays selectable even when no current pupil has it.
    years = sorted({*options.years, *([f.year] if f.year is not None else [])})

    def page_url(n: int) -> str:
        return "/incidents?" + urlencode({**keep, "page": n})

    ctx = {
        "page": page, "f": f, "queues": sorted(visible), "states": queries.STATE_FILTERS,
        "open_states": OPEN_STATES, "page_url": page_url,
        "overdue_ids": {i.id for i in page.rows if sla.is_overdue(i, pol)},
        "categories": sorted(pol.categories) if pol else [],
        "chronology": can_read_chronology(user.roles),
        "years": [(y, pupils.year_label(y)) for y in years],
        "tutors": options.tutors, "tutor_listed": f.tutor is None or any(f.tutor in ts for _, ts in options.tutors),
        "nowhere": pupils.NOWHERE,
    }
    return render(request, "queue.html", ctx, user)  # type: ignore[no-any-return]
