"""The registrations background thread: DHCP leases -> identity, device checks, expiry, SLA
breaches, credential-sharing detection and the gauges. Each step commits on its own; one failing
never stops the others. (Emails it queues are sent by the incident worker's outbox sender.)"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from esafety.policy.schema import Policy
from esafety.registrations import leases, sharing, sweep
from esafety.registrations.prereqs import ComplianceSource
from esafety.registrations.settings import WifiSettings
from esafety.registrations.workdays import SchoolCalendar
from esafety.store.db import sessions

log = logging.getLogger("esafety.registrations")


@dataclass
class WorkerDeps:
    database_url: str
    dashboard_url: str
    wifi: WifiSettings
    calendar: Callable[[], SchoolCalendar]
    policy: Callable[[], Policy | None]
    compliance: Callable[[], ComplianceSource]


class RegistrationsWorker:
    def __init__(self, deps: WorkerDeps, interval: float = 5.0, sharing_every: float = 60.0):
        self.deps = deps
        self.interval = interval
        self.sharing_every = sharing_every
        self._last_sharing = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="registrations-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.cycle()
            self._stop.wait(self.interval)

    def steps(self) -> list[tuple[str, Callable[..., object]]]:
        d = self.deps
        out: list[tuple[str, Callable[..., object]]] = []
        if d.wifi.leases_path is not None:
            path = d.wifi.leases_path
            out.append(("leases", lambda s: leases.sync(s, leases.read_leases(path), d.compliance())))
        out += [
            ("compliance", lambda s: sweep.enforce_compliance(s, d.compliance(), d.wifi.grace, d.dashboard_url)),
            ("expire", lambda s: sweep.expire(s, d.dashboard_url)),
            ("sla", sweep.mark_sla_breaches),
        ]
        if time.monotonic() - self._last_sharing >= self.sharing_every:
            self._last_sharing = time.monotonic()
            rules = sharing.SharingRules(d.wifi.sharing_window, d.wifi.max_devices, d.wifi.max_ips)
            out.append(("sharing", lambda s: sharing.raise_incidents(s, rules, d.policy())))
        out.append(("metrics", lambda s: sweep.collect(s, d.calendar())))
        return out

    def cycle(self) -> None:
        factory = sessions(self.deps.database_url)
        for name, step in self.steps():
            try:
                with factory() as s:
                    step(s)
                    s.commit()
            except Exception:
                log.exception("registrations worker step failed", extra={"fields": {"step": name}})
