"""Enrol once; then report: a full snapshot, then diffs when checks change and heartbeats in between.

    run:  snapshot ── every heartbeat ──> heartbeat (users, addresses, monitor)
                   └─ every check interval ──> diff of changed checks (or a heartbeat)
The server sets both intervals and the check settings with every reply and may ask for a fresh
snapshot (after a gap in sequence numbers). When it cannot be reached, reports wait on disk in order
(bounded) and go first when it is back. A 401 means the device was retired: the agent stops.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from agent import facts
from agent.checks.base import Ctx, Host, Settings
from agent.checks.host import this_platform
from agent.checks.runner import Outcome, run_checks
from agent.monitor import Monitor
from agent.state import AgentState, Queue

VERSION = "0.1.0"
log = logging.getLogger("esafety.agent")


class Unenrolled(Exception):
    """The server no longer knows this device's credential."""


class EnrolRefused(Exception):
    pass


def _client(server: str, ca_file: str | None) -> httpx.Client:
    return httpx.Client(base_url=server.rstrip("/"), timeout=15.0, verify=ca_file or True,
                        headers={"User-Agent": f"esafety-agent/{VERSION}"})


def enrol(server: str, token: str, ca_file: str | None = None) -> AgentState:
    body = {"token": token, "hostname": facts.hostname(), "platform": this_platform(), "os_version": facts.os_version(),
            "agent_version": VERSION, "macs": facts.macs()}
    with _client(server, ca_file) as c:
        try:
            r = c.post("/api/agent/enrol", json=body)
        except httpx.HTTPError as exc:
            raise EnrolRefused(f"cannot reach {server}: {exc}") from None
    if r.status_code != 200:
        raise EnrolRefused(_reason(r))
    reply = r.json()
    st = AgentState(server=server.rstrip("/"), device_id=reply["device_id"], credential=reply["credential"],
                    ca_file=ca_file)
    st.apply_reply(reply)
    return st


def _reason(r: httpx.Response) -> str:
    try:
        body = r.json()
        return f"{r.status_code} {body.get('error', '')}: {body.get('detail', r.text)}"
    except ValueError:
        return f"{r.status_code}: {r.text[:300]}"


class Reporter:
    def __init__(self, state: AgentState, path: Path, host: Host, monitor: Monitor | None = None):
        self.state = state
        self.path = path
        self.host = host
        self.monitor = monitor or Monitor()
        self.queue = Queue(path.with_name(path.name + ".queue"))
        self.client = _client(state.server, state.ca_file)
        self.last: dict[str, tuple[str, dict[str, Any]]] = {}  # what the server holds, per check
        self.need_snapshot = True

    def close(self) -> None:
        self.client.close()

    # -- one cycle -----------------------------------------------------------------------------
    def check_now(self) -> list[Outcome]:
        ctx = Ctx(self.host, Settings.from_reply(self.state.settings), self.monitor)
        return run_checks(ctx)

    def report_checks(self) -> None:
        outcomes = self.check_now()
        if self.need_snapshot:
            self._send("snapshot", outcomes)
            return
        changed = [o for o in outcomes if self.last.get(o.id) != (o.status, o.evidence)]
        self._send("diff" if changed else "heartbeat", changed)

    def heartbeat(self) -> None:
        self._send("heartbeat", [])

    def _send(self, kind: str, outcomes: list[Outcome]) -> None:
        self.state.seq += 1
        self.state.save(self.path)  # before sending: a crash must never make us reuse a number
        body = {
            "device_id": self.state.device_id, "seq": self.state.seq, "kind": kind,
            "sent_at": datetime.now(UTC).isoformat(), "agent_version": VERSION, "hostname": facts.hostname(),
            "users": facts.users(), "addresses": facts.addresses(), "checks": [o.wire() for o in outcomes],
            "monitor": {"sha256": self.monitor.current(), "pid": os.getpid()},
        }
        for o in outcomes:
            self.last[o.id] = (o.status, o.evidence)
        if kind == "snapshot":
            self.need_snapshot = False
        raw = json.dumps(body, separators=(",", ":"), default=str).encode()
        if len(self.queue) or not self._post(raw):
            dropped = self.queue.put(self.state.seq, raw)
            if dropped:
                log.warning("offline queue full: dropped the oldest reports", extra={"fields": {"dropped": dropped}})
            self.flush()

    def flush(self) -> None:
        """Send queued reports oldest first; stop at the first that cannot be delivered."""
        while (item := self.queue.peek()) is not None:
            path, raw = item
            if not self._post(raw):
                return
            path.unlink(missing_ok=True)

    def _post(self, raw: bytes) -> bool:
        """True when the report is settled (accepted, or refused for good); False to keep it queued."""
        auth = {"Authorization": f"Bearer {self.state.device_id}.{self.state.credential}",
                "Content-Type": "application/json"}
        try:
            r = self.client.post("/api/agent/report", content=raw, headers=auth)
        except httpx.HTTPError as exc:
            log.warning("server unreachable; report queued", extra={"fields": {"error": str(exc)[:200]}})
            return False
        if r.status_code == 200:
            reply = r.json()
            self.state.apply_reply(reply)
            self.state.save(self.path)
            if reply.get("want_snapshot"):
                self.need_snapshot = True
            return True
        if r.status_code == 401:
            raise Unenrolled(_reason(r))
        if r.status_code >= 500 or r.status_code == 429:
            log.warning("server error; report queued", extra={"fields": {"status": r.status_code}})
            return False
        if r.status_code == 409:  # already delivered, or our counter is behind the server's
            last = r.json().get("last_seq")
            if isinstance(last, int) and last > self.state.seq:
                self.state.seq = last
                self.state.save(self.path)
                self.need_snapshot = True
            return True
        log.error("report refused", extra={"fields": {"status": r.status_code, "reason": _reason(r)}})
        self.need_snapshot = True  # the server may have missed state it needed
        return True

    # -- the loop -------------------------------------------------------------------------------
    def run(self, stop: threading.Event, once: bool = False) -> None:
        next_checks = 0.0
        while not stop.is_set():
            if time.monotonic() >= next_checks or self.need_snapshot:
                self.report_checks()
                next_checks = time.monotonic() + self.state.check_seconds
            else:
                self.heartbeat()
            if once:
                return
            stop.wait(min(self.state.heartbeat_seconds, max(0.0, next_checks - time.monotonic())) or 0.05)
