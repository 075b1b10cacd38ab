"""Starts the incident worker with the dashboard (a router lifespan, merged by include_router).

ESAFETY_INCIDENT_WORKER=0 turns it off (e.g. on a read-only replica dashboard);
ESAFETY_INCIDENT_WORKER_INTERVAL sets seconds between cycles (default 1).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from dashboard.policy_state import current_policy
from dashboard.worker import IncidentWorker


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    worker = None
    if os.environ.get("ESAFETY_INCIDENT_WORKER", "1") != "0":
        interval = float(os.environ.get("ESAFETY_INCIDENT_WORKER_INTERVAL", "1"))
        worker = IncidentWorker(app.state.settings, lambda: current_policy(app), interval)
        app.state.incident_worker = worker
        worker.start()
    try:
        yield
    finally:
        if worker:
            worker.stop()


router = APIRouter(lifespan=lifespan)
