"""Starts the device compliance sweep with the dashboard (a router lifespan, merged by include_router),
and gives WiFi registrations the agents' results (`app.state.registration_compliance`).

ESAFETY_COMPLIANCE_WORKER=0 turns the sweep off; ESAFETY_COMPLIANCE_WORKER_INTERVAL sets seconds
between passes (default 15); ESAFETY_DHCP_LEASES (shared with WiFi registrations) lets a renewed
lease count as a silent device being on the network.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, FastAPI

from dashboard.policy_state import current_policy
from esafety.compliance.source import RollupCompliance
from esafety.compliance.sweep import LeaseWatch, sweep
from esafety.incidents.pipeline import process_new
from esafety.policy.schema import Policy
from esafety.registrations.leases import read_leases
from esafety.store.db import sessions

log = logging.getLogger("esafety.compliance")


class ComplianceWorker:
    def __init__(self, database_url: str, dashboard_url: str, policy: Callable[[], Policy | None],
                 interval: float = 15.0, leases_path: Path | None = None):
        self.database_url = database_url
        self.dashboard_url = dashboard_url
        self.policy = policy
        self.interval = interval
        self.leases_path = leases_path
        self.leases = LeaseWatch()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="compliance-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.cycle()
            self._stop.wait(self.interval)

    def cycle(self) -> None:
        try:
            pol, now = self.policy(), datetime.now(UTC)
            watch = None
            if self.leases_path is not None:
                try:
                    self.leases.load(read_leases(self.leases_path), now)
                    watch = self.leases
                except OSError as exc:  # the DHCP server's file may be briefly away; proxy traffic still counts
                    log.warning("leases not read", extra={"fields": {"path": str(self.leases_path), "error": str(exc)}})
            with sessions(self.database_url)() as s:
                result = sweep(s, pol, now, watch)
                if result.tamper:
                    process_new(s, pol, self.dashboard_url)
                s.commit()
        except Exception:  # the store may be briefly away; the next pass catches up
            log.exception("compliance sweep failed")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if getattr(app.state, "registration_compliance", None) is None:
        app.state.registration_compliance = RollupCompliance()
    worker = None
    if os.environ.get("ESAFETY_COMPLIANCE_WORKER", "1") != "0":
        settings = app.state.settings
        leases = os.environ.get("ESAFETY_DHCP_LEASES", "").strip()
        worker = ComplianceWorker(settings.database_url, settings.dashboard_url, lambda: current_policy(app),
                                  float(os.environ.get("ESAFETY_COMPLIANCE_WORKER_INTERVAL", "15")),
                                  Path(leases) if leases else None)
        app.state.compliance_worker = worker
        worker.start()
    try:
        yield
    finally:
        if worker:
            worker.stop()


router = APIRouter(lifespan=lifespan)
