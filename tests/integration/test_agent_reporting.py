"""The real agent process when things go wrong: the server is down (reports wait on disk, in order,
and arrive when it is back), its counter was restored from an old backup (the server's 409 puts it
right), the device was retired (the agent stops and says so), and the credential file is private."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update

from agent.state import AgentState, Queue
from dashboard.app import create_app
from esafety.compliance.tables import Device, DeviceCheck
from esafety.store.db import sessions
from tests.conftest import free_port
from tests.support import devices as dev
from tests.support.dsl import live_server

ESAFETY = str(Path(sys.executable).with_name("esafety"))


def agent(*args: str, state: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ESAFETY, "agent", *args, "--state", str(state)], capture_output=True, text=True,
                          timeout=timeout)


def device(url: str) -> Device:
    with sessions(url)() as s:
        d = s.scalars(select(Device)).one()
        s.expunge(d)
        return d


@pytest.fixture
def dashboard(database_url: str, tmp_path: Path) -> Iterator[dict]:
    policy = dev.policy_with(tmp_path, heartbeat="1s", check_interval="1h", stale_buffer="1h")
    port = free_port()
    app = create_app(dev.settings(database_url, tmp_path / "home", policy, dashboard_url=f"http://127.0.0.1:{port}"))
    yield {"app": app, "port": port, "db": database_url, "url": f"http://127.0.0.1:{port}"}


def test_reports_wait_on_disk_while_the_server_is_down_and_arrive_in_order(dashboard: dict, tmp_path: Path):
    state = tmp_path / "agent" / "credential.json"
    with live_server(dashboard["app"], dashboard["port"]):
        enrol = agent("enrol", "--server", dashboard["url"], "--token", dev.token(dashboard["db"]), state=state)
        assert enrol.returncode == 0, enrol.stderr
    assert state.stat().st_mode & 0o777 == 0o600
    assert json.loads(state.read_text())["credential"]  # written, private

    # Server down: each run queues its report on disk and exits cleanly.
    for _ in range(2):
        r = agent("run", "--once", state=state)
        assert r.returncode == 0, r.stderr
        assert "report queued" in r.stderr
    queued = Queue(state.with_name(state.name + ".queue"))
    assert len(queued) == 2
    assert device(dashboard["db"]).last_seq == 0

    with live_server(dashboard["app"], dashboard["port"]):
        r = agent("run", "--once", state=state)
        assert r.returncode == 0, r.stderr
    assert len(queued) == 0
    d = device(dashboard["db"])
    assert d.last_seq == 3 and d.snapshot_at is not None  # 1 and 2 from the queue, then 3: none refused
    with sessions(dashboard["db"])() as s:
        assert {c.check_id for c in s.scalars(select(DeviceCheck).where(DeviceCheck.device_id == d.id))} >= {
            "p2p_clients", "listening_servers", "safeguarding_monitor"}
    assert AgentState.load(state).seq == 3


def test_a_counter_restored_from_backup_catches_up_with_the_server(dashboard: dict, tmp_path: Path):
    state = tmp_path / "credential.json"
    with live_server(dashboard["app"], dashboard["port"]):
        assert agent("enrol", "--server", dashboard["url"], "--token", dev.token(dashboard["db"]),
                     state=state).returncode == 0
        old = state.read_bytes()  # a backup taken now, at seq 0
        for _ in range(3):
            assert agent("run", "--once", state=state).returncode == 0
        assert device(dashboard["db"]).last_seq == 3
        state.write_bytes(old)
        os.chmod(state, 0o600)
        assert agent("run", "--once", state=state).returncode == 0  # seq 1: refused as a replay (409)
        assert AgentState.load(state).seq == 3  # ... and the agent adopted the server's last_seq
        assert agent("run", "--once", state=state).returncode == 0
        assert device(dashboard["db"]).last_seq == 4


def test_a_retired_device_stops_reporting_and_says_why(dashboard: dict, tmp_path: Path):
    state = tmp_path / "credential.json"
    with live_server(dashboard["app"], dashboard["port"]):
        assert agent("enrol", "--server", dashboard["url"], "--token", dev.token(dashboard["db"]),
                     state=state).returncode == 0
        with sessions(dashboard["db"])() as s:  # as the devices page's Retire button does
            s.execute(update(Device).values(retired_at=datetime.now(UTC), retired_by="itadmin"))
            s.commit()
        r = agent("run", state=state, timeout=60)
    assert r.returncode == 1
    assert "enrol again" in r.stderr


def test_enrolment_with_a_bad_token_is_refused_with_the_reason(dashboard: dict, tmp_path: Path):
    with live_server(dashboard["app"], dashboard["port"]):
        r = agent("enrol", "--server", dashboard["url"], "--token", "not-a-real-token", state=tmp_path / "c.json")
    assert r.returncode == 1 and "unknown enrolment token" in r.stderr
    assert not (tmp_path / "c.json").exists()


def test_run_without_enrolment_explains_what_to_do(tmp_path: Path):
    r = agent("run", "--once", state=tmp_path / "missing.json")
    assert r.returncode == 1 and "enrol first" in r.stderr


def test_check_prints_a_table_or_json_and_its_exit_code_says_whether_anything_fails(tmp_path: Path):
    table = subprocess.run([ESAFETY, "agent", "check", "--only", "local_admins", "--only", "hotspot"],
                           capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stdout + table.stderr
    assert table.stdout.splitlines()[0].split() == ["CHECK", "STATUS", "CRITICAL", "TIME", "EVIDENCE"]
    as_json = subprocess.run([ESAFETY, "agent", "check", "--json", "--only", "local_admins"], capture_output=True,
                             text=True, timeout=60)
    [result] = json.loads(as_json.stdout)
    assert result["id"] == "local_admins" and result["status"] == "pass"
    assert "root" in result["evidence"]["administrators"]
    # A web server for the whole network fails listening_servers: exit 1, with the fix printed.
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "0.0.0.0", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while True:
            failing = subprocess.run([ESAFETY, "agent", "check", "--only", "listening_servers"], capture_output=True,
                                     text=True, timeout=60)
            if failing.returncode == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert failing.returncode == 1 and "FAIL" in failing.stdout
        assert "fix: Stop the listed programs" in failing.stdout
    finally:
        server.kill()
        server.wait()
    unknown = subprocess.run([ESAFETY, "agent", "check", "--only", "no_such_check"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown check" in unknown.stderr
