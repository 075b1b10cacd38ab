"""Helpers for the device compliance tests: a policy with short agent timings, a dashboard app on it,
enrolment tokens, and agent reports as the contract (notes/agent-contract.md) spells them."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from esafety.compliance.enrol import create_token
from esafety.config import PROJECT_ROOT, Settings, load_settings
from esafety.store.db import sessions

CHECK_IDS = ("os_updates", "antivirus", "disk_encryption", "screen_lock", "p2p_clients", "vpn_clients", "hotspot",
             "listening_servers", "file_shares", "local_admins", "removable_media", "safeguarding_monitor")
MONITOR = "ab" * 32


def policy_with(tmp: Path, **timings: str) -> Path:
    """A copy of the shipped policy (beside its lists) with compliance timings replaced,
    e.g. policy_with(tmp, heartbeat="1s", stale_buffer="1s", grace="1h")."""
    target = tmp / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", target, dirs_exist_ok=True)
    path = target / "aup.yaml"
    text = path.read_text()
    section = text.index("\ncompliance:\n")
    head, tail = text[:section], text[section:]
    for key, value in timings.items():
        tail, n = re.subn(rf"(?m)^  {key}: .*$", f"  {key}: {value}", tail, count=1)
        assert n == 1, f"no compliance key {key}"
    path.write_text(head + tail)
    return path


def settings(database_url: str, home: Path, policy: Path, smtp_port: int = 1,
             dashboard_url: str = "http://dash.test") -> Settings:
    return load_settings({"ESAFETY_HOME": str(home), "ESAFETY_DATABASE_URL": database_url,
                          "ESAFETY_POLICY": str(policy), "ESAFETY_SMTP_HOST": "127.0.0.1",
                          "ESAFETY_SMTP_PORT": str(smtp_port), "ESAFETY_SMTP_FROM": "esafety@school.test",
                          "ESAFETY_DASHBOARD_URL": dashboard_url})


def token(database_url: str, hours: float = 1.0, owner: str | None = None, note: str = "test") -> str:
    with sessions(database_url)() as s:
        tok = create_token(s, "itadmin", hours, note, owner)
        s.commit()
    return tok.token


def enrol_body(tok: str, hostname: str = "lab-pc-01", macs: list[str] | None = None) -> dict[str, Any]:
    return {"token": tok, "hostname": hostname, "platform": "linux", "os_version": "Debian 12",
            "agent_version": "0.1.0", "macs": macs if macs is not None else ["3c:22:fb:00:00:01"]}


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def check(check_id: str, status: str, **evidence: Any) -> dict[str, Any]:
    return {"id": check_id, "status": status, "evidence": evidence, "duration_ms": 12, "checked_at": now_iso()}


def all_passing(**overrides: str) -> list[dict[str, Any]]:
    return [check(c, overrides.get(c, "pass")) for c in CHECK_IDS]


def report(device_id: str, seq: int, kind: str = "snapshot", checks: list[dict[str, Any]] | None = None,
           users: list[str] | None = None, addresses: list[dict[str, Any]] | None = None,
           monitor: str | None = MONITOR, hostname: str = "lab-pc-01", agent_version: str = "0.1.0") -> dict[str, Any]:
    body: dict[str, Any] = {
        "device_id": device_id, "seq": seq, "kind": kind, "sent_at": now_iso(), "agent_version": agent_version,
        "hostname": hostname,
        "users": [{"name": u, "terminal": "tty1", "host": None, "started": now_iso()} for u in (users or [])],
        "addresses": addresses if addresses is not None else [
            {"ip": "127.0.0.1", "mac": None, "iface": "lo"},
            {"ip": "10.20.30.40", "mac": "3c:22:fb:00:00:01", "iface": "eth0"}],
        "checks": checks if checks is not None else ([] if kind == "heartbeat" else all_passing()),
    }
    if monitor:
        body["monitor"] = {"sha256": monitor, "pid": 4242}
    return body


class Agent:
    """A device as the API sees it: enrolled once, then numbered reports with its credential."""

    def __init__(self, client: httpx.Client, tok: str, hostname: str = "lab-pc-01"):
        self.client = client
        self.hostname = hostname
        r = client.post("/api/agent/enrol", json=enrol_body(tok, hostname))
        assert r.status_code == 200, r.text
        self.enrolment = r.json()
        self.device_id: str = self.enrolment["device_id"]
        self.credential: str = self.enrolment["credential"]
        self.seq = 0

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.device_id}.{self.credential}"}

    def send(self, kind: str = "snapshot", seq: int | None = None, **kw: Any) -> httpx.Response:
        if seq is None:
            self.seq += 1
            seq = self.seq
        return self.client.post("/api/agent/report", json=report(self.device_id, seq, kind, hostname=self.hostname,
                                                                 **kw), headers=self.auth)
