"""The background batch writer: the proxy's incidents leave the event loop here.

The proxy hands reports to `raise_incident`: each is appended to a private journal with one
write(2) and queued in memory. A thread drains the queue every `interval` seconds (at once when an
incident arrives): incidents routed and ingested, and the journal's checkpoint moves on. A process
killed before its writer caught up loses nothing: the next one stores the journal lines beyond the
checkpoint (esafety/store/journal.py). If the store is down, reports spool to disk in order and are
replayed when it returns; idempotency keys make a replay after a partial write harmless.

Access-log rows do not come here: the proxy appends them to its access log and the access-log
shipper, a process of its own, stores them (esafety/store/shipper.py).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from esafety import metrics
from esafety.incidents.ingest import ingest
from esafety.incidents.model import IncidentReport
from esafety.policy.schema import Policy
from esafety.store.db import sessions
from esafety.store.journal import Journal
from esafety.store.models import Incident

log = logging.getLogger("esafety.writer")


class BatchWriter:
    def __init__(self, database_url: str, spool_dir: Path, policy: Callable[[], Policy | None],
                 interval: float = 0.2, batch: int = 2000,
                 on_incidents: Callable[[list[Incident]], None] | None = None):
        self.database_url = database_url
        self.spool_dir = spool_dir
        self.policy = policy
        self.interval = interval
        self.batch = batch
        self.on_incidents = on_incidents
        # Each queued report carries its journal line's length, to move the checkpoint once stored.
        self._incidents: deque[tuple[IncidentReport, int]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        spool_dir.mkdir(parents=True, exist_ok=True)
        self._journal = Journal(spool_dir / "incidents.journal")
        self._spool_path = spool_dir / "incidents.jsonl"

    # -- producer side (event loop): appends only ----------------------------------------------------

    def raise_incident(self, report: IncidentReport) -> None:
        line = (json.dumps(report.to_json(), default=str) + "\n").encode()
        self._journal.append(line)
        self._incidents.append((report, len(line)))
        self._wake.set()  # incidents should reach the DSL's queue without waiting for a full batch

    # -- consumer thread -------------------------------------------------------------------------------

    def start(self) -> None:
        self._recover()
        self._thread = threading.Thread(target=self._run, name="batch-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        self._drain()
        self._journal.close()
        self._journal.truncate_if_settled()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything handed in so far has been written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._incidents and time.monotonic() < deadline:
            self._idle.clear()
            self._wake.set()
            self._idle.wait(0.05)

    def _run(self) -> None:
        while not self._stop.is_set():
            # A new incident wakes the thread at once; the timer is for replaying the spool, and an
            # idle proxy need not tick five times a second (measured: 1.2 ms of CPU a second).
            self._wake.wait(self.interval if self._spool_path.exists() else max(self.interval, 5.0))
            self._wake.clear()
            try:
                self._drain()
            except Exception:  # never let the writer die: the proxy would silently stop raising incidents
                log.exception("batch writer cycle failed")
            self._idle.set()

    def _drain(self) -> None:
        self._replay_spool()
        while self._incidents:
            taken = [self._incidents.popleft() for _ in range(min(len(self._incidents), self.batch))]
            reports = [rep for rep, _ in taken]
            if not self._write(reports):
                self._spool([r.to_json() for r in reports])
            self._journal.settle(sum(n for _, n in taken))
        metrics.SPOOL_DEPTH.set(self._spooled_lines())

    def _write(self, reports: list[IncidentReport]) -> bool:
        try:
            with sessions(self.database_url)() as s:
                created = ingest(s, reports, self.policy())
                s.commit()
        except SQLAlchemyError as exc:
            log.warning("incident write failed; spooling", extra={"fields": {"error": str(exc)[:200]}})
            return False
        if created and self.on_incidents:
            try:
                self.on_incidents(created)
            except Exception:
                log.exception("incident callback failed")
        return True

    # -- after a crash ---------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Store what a killed predecessor journaled but never stored, then open the journal."""
        lines = self._journal.recover()
        self._journal.open()
        if lines:
            docs = [json.loads(line) for line in lines]
            if not self._write([IncidentReport.from_json(d) for d in docs]):  # keys: no doubles
                self._spool(docs)
            self._journal.settle(sum(map(len, lines)))
            log.info("recovered incidents a stopped process had not stored", extra={"fields": {"count": len(lines)}})
        self._journal.truncate_if_settled()

    # -- spool ----------------------------------------------------------------------------------------

    def _spool(self, docs: list[dict[str, Any]]) -> None:
        with open(self._spool_path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(d, default=str) + "\n" for d in docs))
            fh.flush()
            os.fsync(fh.fileno())

    def _spooled_lines(self) -> int:
        if not self._spool_path.exists():
            return 0
        with open(self._spool_path, "rb") as fh:
            return sum(1 for _ in fh)

    def _replay_spool(self) -> None:
        """Replay spooled reports in order; the file is removed only once all of it is stored."""
        if not self._spool_path.exists():
            return
        with open(self._spool_path, encoding="utf-8") as fh:
            docs = [json.loads(line) for line in fh if line.strip()]
        if not docs or self._write([IncidentReport.from_json(d) for d in docs]):
            self._spool_path.unlink(missing_ok=True)
            if docs:
                log.info("replayed spool", extra={"fields": {"file": self._spool_path.name, "rows": len(docs)}})
