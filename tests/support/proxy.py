"""Start a real mitmdump with the esafety add-ons (plus the test redirect) against local origins."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from esafety.commands.run import MITMDUMP
from esafety.store.db import upgrade
from tests.conftest import ROOT, free_port
from tests.support import origin as origin_mod

REDIRECT = Path(__file__).resolve().parent / "redirect_addon.py"
PLAIN_MITMDUMP = [str(Path(sys.executable).with_name("mitmdump")), "-s", str(ROOT / "proxy_addons" / "entry.py")]


def origin_args(origin: origin_mod.Origin) -> list[str]:
    """mitmdump options pointing the proxy at the local origins, which it may reach on loopback."""
    return ["--set", f"test_origin_http={origin.http_port}", "--set", f"test_origin_https={origin.https_port}",
            "--set", f"esafety_local_origins=127.0.0.1:{origin.http_port},127.0.0.1:{origin.https_port}"]


@dataclass
class ProxyUnderTest:
    proc: subprocess.Popen
    port: int
    metrics_port: int
    home: Path
    policy: Path
    database_url: str
    origin: origin_mod.Origin
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.home / "ca" / "mitmproxy-ca-cert.pem"

    def client(self, auth: tuple[str, str] | None = None, **kw: object) -> httpx.Client:
        proxy = httpx.Proxy(self.url, auth=auth) if auth else self.url
        return httpx.Client(proxy=proxy, verify=ssl.create_default_context(cafile=self.ca), timeout=15, **kw)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_proxy(tmp: Path, policy: Path | None = None, extra: list[str] | None = None,
                database_url: str | None = None, env: dict[str, str] | None = None,
                listen_host: str = "127.0.0.1", port: int = 0, redirect: bool = True,
                as_script: bool = False) -> ProxyUnderTest:
    """redirect: point every connection at the local origins (tests/support/redirect_addon.py);
    without it the proxy connects where requests really go. as_script: plain mitmdump with our
    add-ons as a script (`-s proxy_addons/entry.py`) instead of `esafety-mitmdump`."""
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    if policy is None:
        policy = tmp / "aup.yaml"
        shutil.copytree(ROOT / "policies" / "lists", tmp / "lists", dirs_exist_ok=True)
        shutil.copy(ROOT / "policies" / "aup.yaml", policy)
    database_url = database_url or f"sqlite:///{home / 'esafety.db'}"
    upgrade(database_url)
    origin, _servers = origin_mod.start(tmp)
    port, metrics_port = port or free_port(), free_port()
    log_path = tmp / "mitmdump.log"
    cmd = [
        *(PLAIN_MITMDUMP if as_script else MITMDUMP), "--listen-host", listen_host, "--listen-port", str(port),
        "--set", f"confdir={home / 'ca'}", "--set", "connection_strategy=lazy",
        "--set", "ssl_insecure=true",  # the local origin's certificate is self-signed
        "--set", "stream_large_bodies=2m",
        *(["-s", str(REDIRECT), *origin_args(origin)] if redirect else []),
        "--set", f"esafety_policy={policy}", "--set", f"esafety_home={home}",
        "--set", f"esafety_database_url={database_url}", "--set", f"esafety_metrics_port={metrics_port}",
        "--set", "esafety_reload_ms=300",
        *(extra or []),
    ]
    full_env = {**os.environ, "ESAFETY_DASHBOARD_URL": "http://dashboard.test", **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=tmp)
    put = ProxyUnderTest(proc, port, metrics_port, home, policy, database_url, origin, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mitmdump exited {proc.returncode}:\n{put.log()}")
        try:
            with socket.create_connection((listen_host, port), timeout=0.5):
                if put.ca.exists():
                    return put
        except OSError:
            pass
        time.sleep(0.1)
    put.stop()
    raise RuntimeError(f"mitmdump did not start:\n{put.log()}")
