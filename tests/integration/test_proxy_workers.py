"""`esafety proxy --workers 2`: haproxy in front of two supervised mitmdump workers, for real.

Clients on two loopback addresses (127.0.0.x, all loopback on Linux) land on different workers
(balance source) and keep their own address through haproxy (PROXY protocol, seen in the access
log). A worker killed with SIGKILL is restarted by the supervisor while traffic keeps flowing, and
after SIGTERM every request that got a response is a row in the access log.

The worker is killed while its client is browsing: rows it had journaled (each response's line is
written before the response leaves) but not yet stored are stored by the restarted worker
(esafety/store/journal.py), so the count is exact.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from esafety.store.db import sessions, upgrade
from esafety.store.models import AccessLog
from tests.conftest import ROOT, free_ports
from tests.support import origin as origin_mod
from tests.support.proxy import REDIRECT, origin_args

pytestmark = pytest.mark.xdist_group("proxy-workers")

URL = "http://www.example.org/science"


def _requests_total(metrics_port: int) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
    except httpx.TransportError:
        return None
    return sum(float(m) for m in re.findall(r'^esafety_proxy_requests_total\{[^}]*\} (\S+)$', text, re.M))


def _rows(db: str) -> int:
    with sessions(db)() as s:
        return s.scalar(select(func.count()).select_from(AccessLog)) or 0


class Client:
    """A proxy client whose connections come from one loopback address; counts the responses it got.

    http.client, as httpx drops local_address when it talks to a proxy. One connection per request
    (Connection: close), so no request waits on a connection to a worker that was killed.
    """

    def __init__(self, proxy_port: int, address: str):
        self.proxy_port = proxy_port
        self.address = address
        self.responses = 0

    def get(self) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.proxy_port, timeout=10, source_address=(self.address, 0))
        try:
            conn.request("GET", URL, headers={"Connection": "close"})
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
        self.responses += 1  # any response counts: it must be in the access log
        return resp.status

    def try_get(self) -> bool:
        try:
            self.get()
            return True
        except (OSError, http.client.HTTPException):
            return False


def _pids(log: str) -> dict[str, int]:
    """The latest pid of each child, from the supervisor's JSON log lines."""
    pids: dict[str, int] = {}
    for line in log.splitlines():
        if line.startswith("{"):
            doc = json.loads(line)
            if doc.get("msg") == "proxy child started":
                pids[doc["child"]] = doc["pid"]
    return pids


def test_two_workers_behind_haproxy_survive_a_killed_worker(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    db = f"sqlite:///{home / 'esafety.db'}"
    upgrade(db)
    shutil.copytree(ROOT / "policies" / "lists", tmp_path / "lists")
    shutil.copy(ROOT / "policies" / "aup.yaml", tmp_path / "aup.yaml")
    origin, _servers = origin_mod.start(tmp_path)
    proxy_port, worker_base, metrics_base = free_ports(1), free_ports(2), free_ports(2)
    env = {**os.environ, "ESAFETY_HOME": str(home), "ESAFETY_DATABASE_URL": db,
           "ESAFETY_POLICY": str(tmp_path / "aup.yaml"), "ESAFETY_DASHBOARD_URL": "http://dashboard.test",
           "ESAFETY_PROXY_PORT": str(proxy_port), "ESAFETY_PROXY_WORKER_PORT": str(worker_base),
           "ESAFETY_PROXY_METRICS_PORT": str(metrics_base)}
    log_path = tmp_path / "supervisor.log"
    cmd = [sys.executable, "-m", "esafety.cli", "proxy", "--workers", "2", "--",
           "-s", str(REDIRECT), "--set", "ssl_insecure=true", *origin_args(origin)]
    with open(log_path, "wb") as out:
        sup = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)

    def log() -> str:
        return log_path.read_text(errors="replace")

    metrics = [metrics_base, metrics_base + 1]
    clients: list[Client] = []
    try:
        deadline = time.monotonic() + 60
        while "metrics ports:" not in log():
            assert sup.poll() is None and time.monotonic() < deadline, log()
            time.sleep(0.2)
        assert f"metrics ports: {metrics_base}, {metrics_base + 1}" in log()

        # Which worker serves which address: balance source hashes the address, so try 127.0.0.1,
        # 127.0.0.2, ... until each worker has a client.
        by_worker: dict[int, Client] = {}
        for i in range(1, 33):
            c = Client(proxy_port, f"127.0.0.{i}")
            before = [_requests_total(m) or 0 for m in metrics]
            deadline = time.monotonic() + 20
            while not c.try_get():  # haproxy's first health checks may still be running
                assert time.monotonic() < deadline, log()
                time.sleep(0.3)
            clients.append(c)
            after = [_requests_total(m) or 0 for m in metrics]
            served = [w for w in (0, 1) if after[w] > before[w]]
            assert len(served) == 1, (before, after)
            by_worker.setdefault(served[0], c)
            if len(by_worker) == 2:
                break
        assert set(by_worker) == {0, 1}, log()
        for c in by_worker.values():
            for _ in range(10):
                assert c.get() == 200
        assert all((_requests_total(m) or 0) > 0 for m in metrics)
        # A worker only takes connections that start with haproxy's PROXY line: no posing as another client.
        direct = http.client.HTTPConnection("127.0.0.1", worker_base, timeout=10)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            direct.request("GET", URL)
            direct.getresponse()
        direct.close()

        # Kill worker 0 mid-run: its client is browsing, and rows are still in its writer's memory.
        victim, other = by_worker[0], by_worker[1]
        stop_other = threading.Event()
        other_ok: list[bool] = []

        def keep_browsing() -> None:
            while not stop_other.is_set():
                other_ok.append(other.try_get())
                time.sleep(0.05)

        browsing = threading.Thread(target=keep_browsing)
        browsing.start()
        try:
            for _ in range(20):
                assert victim.get() == 200
            old_pid = _pids(log())["w0"]
            os.kill(old_pid, signal.SIGKILL)
            # The victim's client keeps browsing: haproxy redispatches to worker 1 until worker 0 is back.
            deadline = time.monotonic() + 40
            while _requests_total(metrics[0]) is None or _pids(log())["w0"] == old_pid:
                assert time.monotonic() < deadline, log()
                victim.try_get()
                time.sleep(0.1)
            # Back up and healthy again: the victim's address returns to it (consistent hashing).
            while not _requests_total(metrics[0]):
                assert time.monotonic() < deadline, log()
                victim.try_get()
                time.sleep(0.2)
            for _ in range(5):
                assert victim.get() == 200
        finally:
            stop_other.set()
            browsing.join()
        assert other_ok and all(other_ok), "the other worker's client was never refused"
        exited = f'"msg": "proxy child exited; restarting", "child": "w0", "pid": {old_pid}, "returncode": -9'
        assert exited in log(), log()
    finally:
        sup.send_signal(signal.SIGTERM)
        try:
            code = sup.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sup.kill()
            raise
    assert code == 0, log()
    assert "proxy workers stopped" in log()

    responses = sum(c.responses for c in clients)
    assert _rows(db) == responses, log()
    with sessions(db)() as s:
        ips = set(s.scalars(select(AccessLog.client_ip).distinct()))
    assert ips == {c.address for c in clients}, "haproxy passed each client's own address (PROXY protocol)"
    # Each worker spooled (if at all) in its own folder, and nothing is left there.
    assert not any(p.stat().st_size for p in (home / "spool").rglob("*.jsonl"))
