"""The background batch writer: access-log rows and incidents leave the event loop here.

The proxy hands rows to `log_access` / `raise_incident` (a deque append, no I/O). A thread
drains them every `interval` seconds: access rows go to the JSON-lines log first (what Loki or
Elasticsearch ship), then to the store in one executemany; incidents are routed and ingested.
If the store is down, both spool to disk in order and are replayed when it returns; idempotency
keys make a replay after a partial write harmless.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO, cast

from sqlalchemy import Table, insert
from sqlalchemy.exc import SQLAlchemyError

from esafety import metrics
from esafety.incidents.ingest import ingest
from esafety.incidents.model import IncidentReport
from esafety.policy.schema import Policy
from esafety.store.db import sessions
from esafety.store.models import AccessLog, Incident

log = logging.getLogger("esafety.writer")

# One encoder for every line: json.dumps(..., default=str) builds a new one per call. Same output.
_JSON = json.JSONEncoder(default=str).encode
# Core insert into the table: the ORM's bulk path adds ~4 us a row of bookkeeping for the same
# INSERT. Every row carries every column (AccessLog._row in the proxy; the spool holds those rows).
_INSERT_ACCESS = insert(cast(Table, AccessLog.__table__))


class BatchWriter:
    def __init__(self, database_url: str, spool_dir: Path, access_log_path: Path | None,
                 policy: Callable[[], Policy | None], interval: float = 0.2, batch: int = 2000,
                 on_incidents: Callable[[list[Incident]], None] | None = None):
        self.database_url = database_url
        self.spool_dir = spool_dir
        self.access_log_path = access_log_path
        self.policy = policy
        self.interval = interval
        self.batch = batch
        self.on_incidents = on_incidents
        self._access: deque[dict[str, Any]] = deque()
        self._incidents: deque[IncidentReport] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        self._jsonl: TextIO | None = None
        spool_dir.mkdir(parents=True, exist_ok=True)
        self._spool_access = spool_dir / "access.jsonl"
        self._spool_incidents = spool_dir / "incidents.jsonl"

    # -- producer side (event loop): appends only ----------------------------------------------------

    def log_access(self, row: dict[str, Any]) -> None:
        self._access.append(row)

    def raise_incident(self, report: IncidentReport) -> None:
        self._incidents.append(report)
        self._wake.set()  # incidents should reach the DSL's queue without waiting for a full batch

    # -- consumer thread -------------------------------------------------------------------------------

    def start(self) -> None:
        if self.access_log_path:
            self.access_log_path.parent.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.access_log_path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        self._thread = threading.Thread(target=self._run, name="batch-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        self._drain()
        if self._jsonl:
            self._jsonl.close()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything handed in so far has been written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while (self._access or self._incidents) and time.monotonic() < deadline:
            self._idle.clear()
            self._wake.set()
            self._idle.wait(0.05)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self._drain(cycle=True)
            except Exception:  # never let the writer die: the proxy would silently stop logging
                log.exception("batch writer cycle failed")
            self._idle.set()

    def _take(self, q: deque[Any], limit: int) -> list[Any]:
        out: list[Any] = []
        limit = min(limit, self.batch)
        while q and len(out) < limit:
            out.append(q.popleft())
        return out

    def _drain(self, cycle: bool = False) -> None:
        """Write what is queued; a cycle (cycle=True) only what was queued when it began.

        Rows that arrive during a cycle wait for the next one (an incident wakes it at once): looping
        on them wrote extra small batches under load, each paying a whole transaction (~0.3 ms of
        CPU for a one-row batch, mostly holding the GIL that the proxy's event loop needs).
        """
        self._replay_spool()
        left_access = len(self._access) if cycle else 1 << 62
        left_incidents = len(self._incidents) if cycle else 1 << 62
        while (self._access and left_access > 0) or (self._incidents and left_incidents > 0):
            rows = self._take(self._access, left_access)
            reports = self._take(self._incidents, left_incidents)
            left_access -= len(rows)
            left_incidents -= len(reports)
            if rows and self._jsonl:
                self._jsonl.write("".join(_JSON(r) + "\n" for r in rows))
                self._jsonl.flush()
            if rows and not self._write_access(rows):
                self._spool(self._spool_access, rows)
            if reports and not self._write_incidents(reports):
                self._spool(self._spool_incidents, [r.to_json() for r in reports])
        metrics.SPOOL_DEPTH.set(self._spooled_lines())

    def _write_access(self, rows: list[dict[str, Any]]) -> bool:
        try:
            with sessions(self.database_url)() as s:
                s.execute(_INSERT_ACCESS, rows)
                s.commit()
            return True
        except SQLAlchemyError as exc:
            log.warning("access log write failed; spooling", extra={"fields": {"error": str(exc)[:200]}})
            return False

    def _write_incidents(self, reports: list[IncidentReport]) -> bool:
        try:
            with sessions(self.database_url)() as s:
                created = ingest(s, reports, self.policy())
                s.commit()
        except SQLAlchemyError as exc:
            log.warning("incident write failed; spooling", extra={"fields": {"error": str(exc)[:200]}})
            return False
        for inc in created:
            metrics.INCIDENTS_RAISED.labels(source=inc.source, queue=inc.queue, level=str(inc.level)).inc()
        if created and self.on_incidents:
            try:
                self.on_incidents(created)
            except Exception:
                log.exception("incident callback failed")
        return True

    # -- spool ----------------------------------------------------------------------------------------

    def _spool(self, path: Path, docs: list[dict[str, Any]]) -> None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("".join(_JSON(d) + "\n" for d in docs))
            fh.flush()
            os.fsync(fh.fileno())

    def _spooled_lines(self) -> int:
        n = 0
        for p in (self._spool_access, self._spool_incidents):
            if p.exists():
                with open(p, "rb") as fh:
                    n += sum(1 for _ in fh)
        return n

    def _replay_spool(self) -> None:
        """Replay spooled rows in order; a file is removed only once all of it is stored."""
        for path, write in ((self._spool_incidents, self._replay_incidents), (self._spool_access, self._replay_access)):
            if not path.exists():
                continue
            with open(path, encoding="utf-8") as fh:
                docs = [json.loads(line) for line in fh if line.strip()]
            if not docs or write(docs):  # type: ignore[operator]
                path.unlink(missing_ok=True)
                if docs:
                    log.info("replayed spool", extra={"fields": {"file": path.name, "rows": len(docs)}})
            else:
                return  # still down; keep order by not writing newer rows ahead of the spool

    def _replay_access(self, docs: list[dict[str, Any]]) -> bool:
        for d in docs:
            d["ts"] = datetime.fromisoformat(d["ts"])
        return self._write_access(docs)

    def _replay_incidents(self, docs: list[dict[str, Any]]) -> bool:
        return self._write_incidents([IncidentReport.from_json(d) for d in docs])
