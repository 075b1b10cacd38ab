"""`esafety run` (proxy + dashboard), `esafety proxy`, `esafety dashboard`."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from esafety import jsonlog
from esafety.config import Settings, load_settings

ADDON_SCRIPT = Path(__file__).resolve().parent.parent.parent / "proxy_addons" / "entry.py"


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="the main job: filtering proxy and dashboard, with the default policy")
    r.set_defaults(func=cmd_run)
    p = sub.add_parser("proxy", help="the filtering proxy only (mitmdump with the esafety add-ons)")
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(func=cmd_proxy)
    d = sub.add_parser("dashboard", help="the dashboard only")
    d.set_defaults(func=cmd_dashboard)


def mitmdump_command(settings: Settings, port: int | None = None, extra: list[str] | None = None) -> list[str]:
    mitmdump = Path(sys.executable).with_name("mitmdump")
    return [
        str(mitmdump if mitmdump.exists() else "mitmdump"), "-q",
        "--listen-host", settings.proxy_host, "--listen-port", str(port or settings.proxy_port),
        "--set", f"confdir={settings.confdir}",
        "--set", "connection_strategy=lazy",  # decide before connecting upstream
        "--set", "stream_large_bodies=8m",
        "-s", str(ADDON_SCRIPT),
        *(extra or []),
    ]


def first_start(settings: Settings) -> None:
    """Schema, admin account (password printed once) and the CA, the first time only."""
    from esafety.auth import generate_password
    from esafety.commands.users import create_user
    from esafety.store.db import sessions, upgrade
    from esafety.store.models import User

    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    with sessions(settings.database_url)() as s:
        has_admin = s.scalar(select(User.id).where(User.roles.contains("admin")).limit(1)) is not None
    if not has_admin:
        password = generate_password()
        create_user(settings.database_url, "admin", "staff", ["admin", "it_admin"], display_name="Administrator",
                    password=password)
        print("=" * 72)
        print("First start: created the dashboard account 'admin'.")
        print(f"  password (shown once, store it safely): {password}")
        print("=" * 72)
    ca = ensure_ca(settings)
    print(f"Proxy CA certificate: {ca}")
    print("  Install it as a trusted root on school devices (see deploy/ca-distribution.md), or")
    print(f"  browse to http://mitm.it through the proxy on {settings.proxy_host}:{settings.proxy_port}.")


def ensure_ca(settings: Settings) -> Path:
    from mitmproxy.certs import CertStore

    settings.confdir.mkdir(parents=True, exist_ok=True)
    CertStore.from_store(settings.confdir, "mitmproxy", 2048)
    return settings.confdir / "mitmproxy-ca-cert.pem"


def cmd_proxy(args: argparse.Namespace) -> int:
    settings = load_settings()
    first_start(settings)
    return subprocess.call(mitmdump_command(settings, args.port))


def cmd_dashboard(args: argparse.Namespace) -> int:
    import uvicorn

    from dashboard.app import create_app

    settings = load_settings()
    jsonlog.setup()
    uvicorn.run(create_app(settings), host=settings.dashboard_host, port=settings.dashboard_port, log_level="warning")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings()
    first_start(settings)
    procs = [
        subprocess.Popen(mitmdump_command(settings)),
        subprocess.Popen([sys.executable, "-m", "esafety.cli", "dashboard"]),
    ]
    print(f"Proxy:     {settings.proxy_host}:{settings.proxy_port}  (metrics on :{settings.proxy_metrics_port})")
    print(f"Dashboard: {settings.dashboard_url}  (PAC file: {settings.dashboard_url}/proxy.pac)")
    print(f"Policy:    {settings.policy_path}   Store: {settings.database_url.split('@')[-1]}", flush=True)

    def stop(*_: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    stop()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    return next((p.returncode for p in procs if p.returncode not in (0, None, -signal.SIGTERM)), 0)


__all__ = ["register", "os"]
