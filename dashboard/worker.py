"""The dashboard's background thread: incident pipeline, on-call escalation, daily digest,
sending the email outbox, and the incident gauges for Prometheus.

Each step commits on its own and a failure in one never stops the others or the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import func, select

from esafety import metrics
from esafety.config import Settings
from esafety.identity.syncmetrics import collect_sync_metrics
from esafety.incidents import mailer, notify
from esafety.incidents.pipeline import process_new
from esafety.incidents.states import OPEN_STATES
from esafety.policy.schema import QUEUES, Policy
from esafety.store.db import sessions
from esafety.store.models import Incident

log = logging.getLogger("esafety.worker")
COLLECT_EVERY = 15.0


class IncidentWorker:
    def __init__(self, settings: Settings, policy: Callable[[], Policy | None], interval: float = 1.0):
        self.settings = settings
        self.policy = policy
        self.interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._collected = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="incident-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=15)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.cycle()
            self._wake.wait(self.interval)
            self._wake.clear()

    def cycle(self) -> None:
        factory = sessions(self.settings.database_url)
        pol, link = self.policy(), self.settings.dashboard_url
        for name, step in (("pipeline", lambda s: process_new(s, pol, link)),
                           ("escalate", lambda s: notify.escalate(s, pol, link)),
                           ("digest", lambda s: notify.digest(s, pol, link))):
            try:
                with factory() as s:
                    step(s)
                    s.commit()
            except Exception:  # one failing step must not stop alerts from the others
                log.exception("incident worker step failed", extra={"fields": {"step": name}})
        try:
            mailer.send_due(factory, self.settings.smtp_host, self.settings.smtp_port, self.settings.smtp_from)
        except Exception:
            log.exception("sending notifications failed")
        if time.monotonic() - self._collected >= COLLECT_EVERY:
            try:
                collect(self.settings.database_url)
                self._collected = time.monotonic()
            except Exception:
                log.exception("incident metrics collection failed")


def collect(database_url: str) -> None:
    """Set the open-incident gauges. Every level x queue is set, so closed-out series drop to zero."""
    now = datetime.now(UTC)
    with sessions(database_url)() as s:
        open_rows = s.execute(select(Incident.level, Incident.queue, func.count())
                              .where(Incident.state.in_(OPEN_STATES)).group_by(Incident.level, Incident.queue)).all()
        oldest = s.execute(select(Incident.level, func.min(Incident.created_at))
                           .where(Incident.state.in_(OPEN_STATES), Incident.acknowledged_at.is_(None))
                           .group_by(Incident.level)).all()
        collect_sync_metrics(s)  # roster imports and directory syncs run elsewhere: their outcome is in the store
    counts = {(int(lvl), q): int(n) for lvl, q, n in open_rows}
    ages = {int(lvl): t for lvl, t in oldest}
    for lvl in range(1, 6):
        for q in QUEUES:
            metrics.INCIDENTS_OPEN.labels(level=str(lvl), queue=q).set(counts.get((lvl, q), 0))
        t = ages.get(lvl)
        age = (now - (t if t.tzinfo else t.replace(tzinfo=UTC))).total_seconds() if t else 0.0
        metrics.INCIDENTS_OLDEST_UNACK_SECONDS.labels(level=str(lvl)).set(max(age, 0.0))
