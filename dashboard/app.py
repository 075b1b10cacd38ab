"""The dashboard: a FastAPI app. Each area is a router module in dashboard/routes/ listed below."""

from __future__ import annotations

import importlib
from pathlib import Path

from fastapi import FastAPI

from esafety.config import Settings, load_settings

HERE = Path(__file__).resolve().parent

# Each module exposes `router` (an APIRouter). Add a module here to mount it.
ROUTE_MODULES = (
    "dashboard.routes.system",
    "dashboard.routes.assets",
    "dashboard.routes.auth",
    "dashboard.routes.incidents_queue",
    "dashboard.routes.incident_page",
    "dashboard.routes.chronology",
    "dashboard.routes.incidents_api",
    "dashboard.routes.incidents_list_api",
    "dashboard.routes.admin_users",
    "dashboard.routes.incidents_worker",
    "dashboard.routes.wifi_member",
    "dashboard.routes.wifi_admin",
    "dashboard.routes.wifi_policy",
    "dashboard.routes.wifi_worker",
    "dashboard.routes.agent_api",
    "dashboard.routes.devices",
    "dashboard.routes.compliance_worker",
    "dashboard.routes.portal",
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    app = FastAPI(title="esafety", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.settings = settings
    for name in ROUTE_MODULES:
        app.include_router(importlib.import_module(name).router)
    return app
