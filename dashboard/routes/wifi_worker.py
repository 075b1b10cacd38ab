"""Starts the registrations worker with the dashboard (a router lifespan, merged by include_router).

ESAFETY_REGISTRATIONS_WORKER=0 turns it off; ESAFETY_REGISTRATIONS_WORKER_INTERVAL sets seconds
between cycles (default 5); ESAFETY_WIFI_SHARING_EVERY seconds between credential-sharing scans (60).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from dashboard.policy_state import current_policy
from esafety.compliance.source import RollupCompliance
from esafety.registrations.settings import wifi_settings
from esafety.registrations.workdays import CalendarFile
from esafety.registrations.worker import RegistrationsWorker, WorkerDeps


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    worker = None
    if os.environ.get("ESAFETY_REGISTRATIONS_WORKER", "1") != "0":
        settings = app.state.settings
        if not hasattr(app.state, "wifi_settings"):
            app.state.wifi_settings = wifi_settings(settings)
        if not hasattr(app.state, "wifi_calendar"):
            app.state.wifi_calendar = CalendarFile(app.state.wifi_settings.calendar_path)
        deps = WorkerDeps(
            database_url=settings.database_url, dashboard_url=settings.dashboard_url, wifi=app.state.wifi_settings,
            calendar=app.state.wifi_calendar.get, policy=lambda: current_policy(app),
            compliance=lambda: getattr(app.state, "registration_compliance", None) or RollupCompliance())
        worker = RegistrationsWorker(deps, float(os.environ.get("ESAFETY_REGISTRATIONS_WORKER_INTERVAL", "5")),
                                     float(os.environ.get("ESAFETY_WIFI_SHARING_EVERY", "60")))
        app.state.registrations_worker = worker
        worker.start()
    try:
        yield
    finally:
        if worker:
            worker.stop()


router = APIRouter(lifespan=lifespan)
