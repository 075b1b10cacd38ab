"""One incident: evidence (escaped; graphic evidence hidden until revealed), history, notes, links
and the actions its state allows. Every view, reveal and export is recorded in the chained history."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from dashboard.routes.incidents_common import acting, actor, policy, run
from dashboard.security import CurrentUser, csrf_protect, require_roles, security_headers
from dashboard.templating import render
from esafety.incidents import actions, pupils, queries, sla, states
from esafety.incidents.access import INCIDENT_ROLES, can_read_chronology, writable_queues
from esafety.incidents.csvexport import incident_csv
from esafety.store.models import Incident, User

router = APIRouter()
reader = require_roles(*INCIDENT_ROLES)
# Categories whose evidence may itself be distressing or illegal to display by default.
GRAPHIC_CATEGORIES = frozenset({"csam", "pornography", "violence", "self_harm"})


def is_graphic(inc: Incident) -> bool:
    return bool(inc.evidence.get("graphic")) or inc.category in GRAPHIC_CATEGORIES


def _page(request: Request, user: CurrentUser, incident_id: int, revealed: bool = False) -> Response:
    pol = policy(request)
    with acting(request) as s:
        inc = (actions.reveal if revealed else actions.view)(s, incident_id, actor(user))
        history = queries.history(s, inc.id)
        links = queries.linked(s, inc.id)
        pupil = pupils.lookup(s, [inc.subject]).get(inc.subject or "")
        can_write = inc.queue in writable_queues(user.roles)
        assignees = [u.username for u in s.scalars(select(User).where(User.active.is_(True)).order_by(User.username))
                     if inc.queue in writable_queues(r for r in u.roles.split(",") if r)] if can_write else []
    ctx = {
        "inc": inc, "history": history, "links": links, "can_write": can_write,
        "notes": [e for e in history if e.action == "note"],
        "transitions": states.available(inc.state) if can_write else [],
        "outcomes": states.OUTCOMES, "assignees": assignees,
        "categories": sorted(pol.categories) if pol else [inc.category],
        "graphic": is_graphic(inc), "revealed": revealed,
        "deadline": sla.deadline(inc, pol), "overdue": sla.is_overdue(inc, pol),
        "chronology": can_read_chronology(user.roles) and bool(inc.subject),
        # Today's year and tutor group (who to talk to), and the snapshot taken when it was stored.
        "pupil": pupil, "now": pupil.now if pupil else pupils.NOWHERE, "then": pupils.at_the_time(inc),
    }
    return render(request, "incident.html", ctx, user)  # type: ignore[no-any-return]


@router.get("/incidents/{incident_id:int}")
def incident(request: Request, incident_id: int, user: CurrentUser = Depends(reader)) -> Response:
    return _page(request, user, incident_id)


@router.post("/incidents/{incident_id:int}/reveal", dependencies=[Depends(csrf_protect)])
def reveal(request: Request, incident_id: int, user: CurrentUser = Depends(reader)) -> Response:
    return _page(request, user, incident_id, revealed=True)


def _back(incident_id: int) -> Response:
    return RedirectResponse(f"/incidents/{incident_id}", status_code=303)


@router.post("/incidents/{incident_id:int}/transition", dependencies=[Depends(csrf_protect)])
def transition(request: Request, incident_id: int, action: str = Form(..., max_length=32),
               outcome: str = Form("", max_length=64), reason: str = Form("", max_length=actions.REASON_MAX),
               user: CurrentUser = Depends(reader)) -> Response:
    run(request, actions.transition, incident_id, actor(user), action, outcome or None, reason or None)
    return _back(incident_id)


@router.post("/incidents/{incident_id:int}/note", dependencies=[Depends(csrf_protect)])
def note(request: Request, incident_id: int, text: str = Form(..., max_length=actions.NOTE_MAX),
         user: CurrentUser = Depends(reader)) -> Response:
    run(request, actions.add_note, incident_id, actor(user), text)
    return _back(incident_id)


@router.post("/incidents/{incident_id:int}/assign", dependencies=[Depends(csrf_protect)])
def assign(request: Request, incident_id: int, assignee: str = Form("", max_length=120),
           user: CurrentUser = Depends(reader)) -> Response:
    run(request, actions.assign, incident_id, actor(user), assignee or None)
    return _back(incident_id)


@router.post("/incidents/{incident_id:int}/level", dependencies=[Depends(csrf_protect)])
def level(request: Request, incident_id: int, level: int = Form(..., ge=1, le=5),
          reason: str = Form("", max_length=actions.REASON_MAX), user: CurrentUser = Depends(reader)) -> Response:
    run(request, actions.set_level, incident_id, actor(user), level, reason)
    return _back(incident_id)


@router.post("/incidents/{incident_id:int}/category", dependencies=[Depends(csrf_protect)])
def category(request: Request, incident_id: int, category: str = Form(..., max_length=64),
             user: CurrentUser = Depends(reader)) -> Response:
    run(request, actions.set_category, incident_id, actor(user), category, policy(request))
    return _back(incident_id)


@router.post("/incidents/{incident_id:int}/link", dependencies=[Depends(csrf_protect)])
def link(request: Request, incident_id: int, ref: str = Form(..., max_length=16),
         user: CurrentUser = Depends(reader)) -> Response:
    run(request, actions.link, incident_id, ref, actor(user))
    return _back(incident_id)


@router.get("/incidents/{incident_id:int}/export.csv")
def export(request: Request, incident_id: int, user: CurrentUser = Depends(reader)) -> Response:
    with acting(request) as s:
        inc = actions.record_export(s, incident_id, actor(user))
        body = incident_csv(inc, queries.history(s, inc.id), pupils.lookup(s, [inc.subject]).get(inc.subject or ""))
    resp = Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="incident-{inc.ref}.csv"'})
    return security_headers(resp)
