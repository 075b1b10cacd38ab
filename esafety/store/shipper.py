"""The access-log shipper: a proxy's access log into the store, from a process of its own.

The proxy only appends each request's JSON line to its access log (esafety/store/journal.py); this
process reads the file on from its checkpoint and stores the lines in batches (AccessInserter).
It runs apart from the proxy because parsing rows and driving the database then take no CPU and no
GIL from the proxy's event loop (as a writer thread inside the proxy they cost it ~5% of its
throughput, tests/bench/bench_proxy.py).

* The journal is the spool: while the store is down the checkpoint stays, and the lines are stored
  once it is back.
* A shipper that was killed may have committed a batch without moving the checkpoint: its successor
  checks the rows up to the file's size at its start against the store (by request reference).
* A log rotated by renaming is read to its end from the old descriptor (or, after a restart, found
  beside the new one by its inode); a log truncated in place (copytruncate) is read from the start.
* One shipper per journal: a lock file keeps a second one (an orphan of a killed proxy, still
  storing what it had) from starting until the first has gone. A shipper whose parent process has
  gone stores what is written, then exits.

Run by the proxy (`ShipperProcess`, started by proxy_addons/runtime.py); by hand:
`python -m esafety.store.shipper --journal var/log/access.jsonl --database-url sqlite:///var/esafety.db`.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from esafety import jsonlog
from esafety.store.access_insert import COLUMNS, AccessInserter
from esafety.store.db import sessions
from esafety.store.journal import read_checkpoint, write_checkpoint
from esafety.store.models import AccessLog

log = logging.getLogger("esafety.shipper")

CHUNK = 4 << 20  # bytes read at a time; a line is a few hundred bytes (paths are cut at 4,000)
BATCH = 2000  # rows per transaction
_REQUIRED = frozenset(COLUMNS)


def parse_line(line: bytes) -> dict[str, Any]:
    """An access-log row from one journal line: every column present, `ts` a datetime again."""
    doc = orjson.loads(line)
    if not isinstance(doc, dict) or not doc.keys() >= _REQUIRED:
        raise ValueError("not an access-log row")
    doc["ts"] = datetime.fromisoformat(doc["ts"])
    return doc


HEAD = 64  # first bytes of a file that tell it apart: its first line's time, to the microsecond


@dataclass
class _Tail:
    fh: BinaryIO
    inode: int
    offset: int  # stored up to here (the checkpoint)
    verify_to: int  # rows before this offset may be in the store already
    head: bytes = b""  # the file's first bytes once read

    def emptied(self, size: int) -> bool:
        """Truncated in place (copytruncate) since we read it, even if already refilled past our offset."""
        return size < self.offset or (bool(self.head) and os.pread(self.fh.fileno(), len(self.head), 0) != self.head)


class Shipper:
    """Stores one journal's lines beyond its checkpoint. Not thread-safe: one caller."""

    def __init__(self, journal: Path, database_url: str):
        self.path = journal
        self.database_url = database_url
        self._inserter = AccessInserter(database_url)
        self._tail: _Tail | None = None
        self.malformed = 0  # lines skipped: not JSON, or not an access-log row

    def ship(self) -> int:
        """Store everything written so far; returns the rows stored. Raises SQLAlchemyError while
        the store is down (the checkpoint stays after the last batch that was stored)."""
        stored = 0
        if self._tail is None:
            self._tail, stored = self._open()
            if self._tail is None:
                return stored
        stored += self._pump(self._tail)
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            return stored  # renamed away, and the proxy has not made a new one yet: keep the old
        if inode != self._tail.inode:
            # A new file: the old one's writer has stopped (a proxy reopens only when it starts),
            # and everything it wrote was read above.
            self._tail.fh.close()
            self._tail = _Tail(open(self.path, "rb"), inode, 0, 0)  # noqa: SIM115 - kept open while tailing
            stored += self._pump(self._tail)
        return stored

    def close(self) -> None:
        if self._tail is not None:
            self._tail.fh.close()
            self._tail = None

    def _open(self) -> tuple[_Tail | None, int]:
        """The journal from its checkpoint, and the rows stored from a rotated predecessor."""
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - kept open while tailing
        except FileNotFoundError:
            return None, 0
        st = os.fstat(fh.fileno())
        cp = read_checkpoint(self.path)
        stored = 0
        if cp.inode is not None and cp.inode != st.st_ino:
            stored = self._finish_rotated(cp.inode, cp.offset)
        tail = _Tail(fh, st.st_ino, cp.offset if cp.inode == st.st_ino else 0, st.st_size, cp.head)
        if tail.emptied(st.st_size):
            tail.offset, tail.head = 0, b""  # truncated in place while no shipper ran
        return tail, stored

    def _finish_rotated(self, inode: int, offset: int) -> int:
        """The checkpoint names a file rotated away while no shipper ran: store the rest of it if
        it is still beside the journal (logrotate's access.jsonl.1, before compression)."""
        for sibling in self.path.parent.glob(self.path.name + ".*"):
            try:
                if sibling.stat().st_ino == inode:
                    with open(sibling, "rb") as fh:
                        stored = self._pump(_Tail(fh, inode, offset, verify_to=os.fstat(fh.fileno()).st_size))
                    log.info("stored the rest of a rotated access log", extra={"fields": {"file": sibling.name}})
                    return stored
            except OSError:
                continue
        log.warning("the access log was rotated away before all of it was stored; its rest is not beside it",
                    extra={"fields": {"journal": str(self.path), "offset": offset}})
        return 0

    def _pump(self, tail: _Tail) -> int:
        stored = 0
        while True:
            size = os.fstat(tail.fh.fileno()).st_size
            if tail.emptied(size):  # copytruncate: the new content from its start
                tail.offset, tail.head, tail.verify_to = 0, b"", size
            if size == tail.offset:
                return stored
            tail.fh.seek(tail.offset)
            data = tail.fh.read(min(CHUNK, size - tail.offset))
            if tail.offset == 0:
                tail.head = data[:HEAD]
            end = data.rfind(b"\n") + 1
            if end == 0:
                if len(data) < CHUNK:
                    return stored  # the last line is still being written
                end = len(data)  # no line is this long: skip it as garbage rather than stall
            pos, rows = tail.offset, []
            for line in data[:end].splitlines(keepends=True):
                pos += len(line)
                try:
                    rows.append(parse_line(line))
                except (ValueError, TypeError):
                    self.malformed += 1
                    log.warning("skipped a malformed access-log line",
                                extra={"fields": {"journal": str(self.path), "offset": pos - len(line)}})
                if len(rows) >= BATCH:
                    stored += self._store(tail, rows, pos)
                    rows = []
            stored += self._store(tail, rows, pos)

    def _store(self, tail: _Tail, rows: list[dict[str, Any]], end: int) -> int:
        if rows and tail.offset < tail.verify_to:
            rows = self._unstored(rows)
        if rows:
            self._inserter.write(rows)
        tail.offset = end
        write_checkpoint(self.path, tail.inode, end, tail.head)
        return len(rows)

    def _unstored(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows whose request reference is not in the store yet."""
        with sessions(self.database_url)() as s:
            since = min(r["ts"] for r in rows)
            refs = {r["ref"] for r in rows}
            stored = set(s.scalars(select(AccessLog.ref).where(AccessLog.ts >= since, AccessLog.ref.in_(refs))))
        return [r for r in rows if r["ref"] not in stored]


def run(shipper: Shipper, stop: threading.Event, interval: float, parent: int | None = None,
        give_up_after: float = 10.0) -> None:
    """Ship until told to stop or the parent is gone, then store what is written and return. A store
    that stays down at the end leaves the rest in the journal for the next shipper."""
    backoff, down_since = interval, None
    while True:
        finishing = stop.is_set() or (parent is not None and os.getppid() != parent)
        try:
            shipper.ship()
            if down_since is not None:
                log.info("store reachable again; access-log lines stored",
                         extra={"fields": {"seconds_down": round(time.monotonic() - down_since, 1)}})
            backoff, down_since = interval, None
        except SQLAlchemyError as exc:
            if down_since is None:
                down_since = time.monotonic()
                log.warning("store unavailable; access-log lines wait in the journal",
                            extra={"fields": {"error": str(exc)[:200]}})
            backoff = min(backoff * 2, 5.0)
            if finishing and time.monotonic() - down_since > give_up_after:
                log.error("stopping with access-log lines not stored; the next shipper stores them",
                          extra={"fields": {"journal": str(shipper.path)}})
                return
        if finishing and down_since is None:
            return
        stop.wait(backoff)


def _lock(journal: Path, stop: threading.Event) -> int | None:
    fd = os.open(journal.with_name(journal.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o640)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if stop.wait(0.2):
                os.close(fd)
                return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m esafety.store.shipper",
                                 description="Store a proxy's access log (JSON lines) in the esafety store.")
    ap.add_argument("--journal", type=Path, required=True, help="the proxy's access log, e.g. var/log/access.jsonl")
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--interval-ms", type=int, default=200, help="how often to look for new lines")
    ap.add_argument("--parent", type=int, help="finish and exit once this process is gone")
    args = ap.parse_args(argv)
    jsonlog.setup()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    args.journal.parent.mkdir(parents=True, exist_ok=True)
    if _lock(args.journal, stop) is None:
        return 0
    shipper = Shipper(args.journal, args.database_url)
    try:
        run(shipper, stop, args.interval_ms / 1000, args.parent)
    finally:
        shipper.close()
    return 0


class ShipperProcess:
    """The shipper for one journal as a child process: started, restarted if it dies, stopped."""

    def __init__(self, journal: Path, database_url: str, interval_ms: int = 200):
        self.journal = journal
        self.database_url = database_url
        self.interval_ms = interval_ms
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._spawn()
        self._thread = threading.Thread(target=self._supervise, name="shipper-supervisor", daemon=True)
        self._thread.start()

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            # Its JSON logs go where ours go (inherited stderr).
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "esafety.store.shipper", "--journal", str(self.journal),
                 "--database-url", self.database_url, "--interval-ms", str(self.interval_ms),
                 "--parent", str(os.getpid())], stdin=subprocess.DEVNULL)

    def _supervise(self) -> None:
        delay = 1.0
        while True:
            proc = self._proc
            assert proc is not None
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            delay = 1.0 if time.monotonic() - started > 60 else min(delay * 2, 30.0)
            log.error("access-log shipper exited; restarting",
                      extra={"fields": {"returncode": code, "restart_in_seconds": delay}})
            if self._stopping.wait(delay):
                return
            self._spawn()

    def stop(self, timeout: float = 30.0) -> None:
        """Let it store what is written, then stop it (killed after `timeout`)."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            log.error("access-log shipper did not stop in time; killed (the next one stores the rest)")

    def backlog_bytes(self) -> float:
        """Bytes of the journal not yet in the store (a Prometheus gauge reads it at scrape time)."""
        try:
            st = os.stat(self.journal)
        except FileNotFoundError:
            return 0.0
        cp = read_checkpoint(self.journal)
        return float(st.st_size - cp.offset if cp.inode == st.st_ino else st.st_size)


if __name__ == "__main__":
    sys.exit(main())
