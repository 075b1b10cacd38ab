"""`esafety run`, the main job, from a fresh home: first-start output, proxy, dashboard, PAC, metrics."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.xdist_group("main-job")


def _start(home: Path, ports: dict[str, int]) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "ESAFETY_HOME": str(home), "ESAFETY_PROXY_PORT": str(ports["proxy"]),
           "ESAFETY_DASHBOARD_PORT": str(ports["dash"]), "ESAFETY_PROXY_METRICS_PORT": str(ports["metrics"])}
    env.pop("ESAFETY_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "esafety.cli", "run"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    # A reader thread, not select(): the text wrapper buffers lines that select() cannot see.
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    deadline = time.monotonic() + 60
    while not any("Dashboard:" in line for line in lines) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    return proc, "".join(lines)


def _wait_http(url: str, **kw: object) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(url, timeout=5, **kw)  # type: ignore[arg-type]
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_first_start_runs_proxy_and_dashboard_with_default_policy(tmp_path):
    home = tmp_path / "var"
    ports = {"proxy": free_port(), "dash": free_port(), "metrics": free_port()}
    proc, out = _start(home, ports)
    try:
        assert "password (shown once" in out, out
        password = out.split("password (shown once, store it safely):", 1)[1].split()[0]
        assert len(password) >= 16
        ca = home / "ca" / "mitmproxy-ca-cert.pem"
        assert str(ca) in out and ca.exists()
        assert (home / "esafety.db").exists(), "SQLite store under the home folder"

        pac = _wait_http(f"http://127.0.0.1:{ports['dash']}/proxy.pac")
        assert pac.status_code == 200 and f"PROXY 127.0.0.1:{ports['proxy']}" in pac.text
        assert "esafety_" in _wait_http(f"http://127.0.0.1:{ports['dash']}/metrics").text

        deadline = time.monotonic() + 30
        trust = ssl.create_default_context(cafile=ca)
        while True:
            try:
                with httpx.Client(proxy=f"http://127.0.0.1:{ports['proxy']}", verify=trust, timeout=10) as c:
                    r = c.get("https://www.bet365.com/")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        assert r.status_code == 403 and "Gambling" in r.text, "the default AUP policy is enforced"
        assert "esafety_proxy_decisions_total" in _wait_http(f"http://127.0.0.1:{ports['metrics']}/metrics").text
    finally:
        _stop(proc)

    # Second start: the admin exists, so no password is printed again.
    ports = {"proxy": free_port(), "dash": free_port(), "metrics": free_port()}
    proc, out = _start(home, ports)
    try:
        assert "Dashboard:" in out and "password (shown once" not in out
    finally:
        _stop(proc)
