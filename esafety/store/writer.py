"""The background batch writer: access-log rows and incidents leave the event loop here.

The proxy hands rows to `log_access` / `raise_incident`: each is appended to a journal with one
write(2) (the access log's JSON lines, what Loki or Elasticsearch ship; a private journal for
incidents) and queued in memory. A thread drains the queues every `interval` seconds: access rows
to the store in one executemany, incidents routed and ingested, and the journals' checkpoints move
on. A process killed before its writer caught up loses nothing: the next one stores the journal
lines beyond the checkpoint (esafety/store/journal.py), skipping rows already stored. If the
store is down, rows spool to disk in order and are replayed when it returns; idempotency keys make
a replay after a partial write harmless.
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
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from esafety import metrics
from esafety.incidents.ingest import ingest
from esafety.incidents.model import IncidentReport
from esafety.policy.schema import Policy
from esafety.store.access_insert import AccessInserter
from esafety.store.db import sessions
from esafety.store.journal import Journal
from esafety.store.models import AccessLog, Incident

log = logging.getLogger("esafety.writer")

# One encoder for every line: json.dumps(..., default=str) builds a new one per call. Same output.
_JSON = json.JSONEncoder(default=str).encode


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
        # Rows go to the driver as tuples (executemany on SQLite, COPY on PostgreSQL): a Core insert
        # spent ~10-20 us of CPU a row, holding the GIL the event loop needs. Every row carries
        # every column (AccessLog._row in the proxy; the spool and journal hold those rows).
        self._inserter = AccessInserter(database_url)
        # Each queued item carries its journal line's length, to move the checkpoint once stored.
        self._access: deque[tuple[dict[str, Any], int]] = deque()
        self._incidents: deque[tuple[IncidentReport, int]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        spool_dir.mkdir(parents=True, exist_ok=True)
        self._access_journal = Journal(access_log_path) if access_log_path else None
        self._incident_journal = Journal(spool_dir / "incidents.journal")
        self._spool_access = spool_dir / "access.jsonl"
        self._spool_incidents = spool_dir / "incidents.jsonl"

    # -- producer side (event loop): appends only ----------------------------------------------------

    def log_access(self, row: dict[str, Any]) -> None:
        size = 0
        if self._access_journal is not None:
            line = (_JSON(row) + "\n").encode()
            self._access_journal.append(line)
            size = len(line)
        self._access.append((row, size))

    def raise_incident(self, report: IncidentReport) -> None:
        line = (_JSON(report.to_json()) + "\n").encode()
        self._incident_journal.append(line)
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
        for journal in (self._access_journal, self._incident_journal):
            if journal is not None:
                journal.close()
        self._incident_journal.truncate_if_settled()

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
            access = self._take(self._access, left_access)
            incidents = self._take(self._incidents, left_incidents)
            left_access -= len(access)
            left_incidents -= len(incidents)
            rows = [row for row, _ in access]
            reports = [rep for rep, _ in incidents]
            if rows and not self._write_access(rows):
                self._spool(self._spool_access, rows)
            if reports and not self._write_incidents(reports):
                self._spool(self._spool_incidents, [r.to_json() for r in reports])
            if self._access_journal is not None:
                self._access_journal.settle(sum(n for _, n in access))
            self._incident_journal.settle(sum(n for _, n in incidents))
        metrics.SPOOL_DEPTH.set(self._spooled_lines())

    def _write_access(self, rows: list[dict[str, Any]]) -> bool:
        try:
            self._inserter.write(rows)
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
        if created and self.on_incidents:
            try:
                self.on_incidents(created)
            except Exception:
                log.exception("incident callback failed")
        return True

    # -- after a crash ---------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Store what a killed predecessor journaled but never stored, then open the journals."""
        if self._access_journal is not None:
            lines = self._access_journal.recover()
            self._access_journal.open()
            if lines:
                rows = self._unstored([_access_row(json.loads(line)) for line in lines])
                if rows and not self._write_access(rows):
                    self._spool(self._spool_access, rows)
                self._access_journal.settle(sum(map(len, lines)))
                log.info("recovered access-log rows a stopped process had not stored",
                         extra={"fields": {"journaled": len(lines), "stored_now": len(rows)}})
        lines = self._incident_journal.recover()
        self._incident_journal.open()
        if lines:
            docs = [json.loads(line) for line in lines]
            if not self._write_incidents([IncidentReport.from_json(d) for d in docs]):  # keys: no doubles
                self._spool(self._spool_incidents, docs)
            self._incident_journal.settle(sum(map(len, lines)))
            log.info("recovered incidents a stopped process had not stored", extra={"fields": {"count": len(lines)}})
        self._incident_journal.truncate_if_settled()

    def _unstored(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows whose request reference is not in the store yet (it may have died after committing)."""
        try:
            with sessions(self.database_url)() as s:
                since = min(r["ts"] for r in rows)
                refs = {r["ref"] for r in rows}
                stored = set(s.scalars(select(AccessLog.ref).where(AccessLog.ts >= since, AccessLog.ref.in_(refs))))
        except SQLAlchemyError:
            return rows  # the store is down: spool them all; a later replay cannot double what it never had
        return [r for r in rows if r["ref"] not in stored]

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
        return self._write_access([_access_row(d) for d in docs])

    def _replay_incidents(self, docs: list[dict[str, Any]]) -> bool:
        return self._write_incidents([IncidentReport.from_json(d) for d in docs])


def _access_row(doc: dict[str, Any]) -> dict[str, Any]:
    """An access-log row read back from JSON (journal or spool): its time as a datetime again."""
    doc["ts"] = datetime.fromisoformat(doc["ts"])
    return doc
