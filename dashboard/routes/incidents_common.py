"""Shared by the incident routers: the acting user, errors as pages, the policy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import HTTPException, Request
from sqlalchemy.orm import Session

from dashboard.policy_state import current_policy
from dashboard.security import CurrentUser, db
from esafety.incidents import queries
from esafety.incidents.access import readable_queues
from esafety.incidents.actions import Actor, Forbidden, Invalid, NotFound
from esafety.incidents.states import TransitionError
from esafety.policy.schema import Policy


def queue_filter(request: Request, user: CurrentUser) -> tuple[queries.QueueFilter, frozenset[str]]:
    """The queue's filters from the query string, limited to the queues this user may read."""
    visible = readable_queues(user.roles)
    params = {k: v for k, v in request.query_params.items() if k in queries.FILTER_PARAMS}
    return queries.QueueFilter.parse(params, visible), visible


def actor(user: CurrentUser) -> Actor:
    return Actor(user.username, user.roles)


def policy(request: Request) -> Policy | None:
    return current_policy(request.app)


@contextmanager
def acting(request: Request) -> Iterator[Session]:
    """One transaction for one action; workflow errors become HTTP errors with a readable reason."""
    with db(request) as s:
        try:
            yield s
            s.commit()
        except NotFound as exc:
            s.rollback()
            raise HTTPException(status_code=404, detail="no such incident, or not in a queue you can see") from exc
        except Forbidden as exc:
            s.rollback()
            raise HTTPException(status_code=403, detail=str(exc)) from exc
        except (Invalid, TransitionError) as exc:
            s.rollback()
            raise HTTPException(status_code=409, detail=str(exc)) from exc


def run(request: Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with acting(request) as s:
        return fn(s, *args, **kwargs)
