"""`esafety run` (proxy + dashboard), `esafety proxy`, `esafety dashboard`."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from sqlalchemy import select

from esafety import jsonlog
from esafety.config import Settings, load_settings

_LAUNCHER = Path(sys.executable).with_name("esafety-mitmdump")
MITMDUMP = [str(_LAUNCHER)] if _LAUNCHER.exists() else [sys.executable, "-m", "proxy_addons.master"]


WORKERS_HELP = "proxy worker processes; more than 1 puts them behind haproxy (Debian package haproxy)"


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="the main job: filtering proxy and dashboard, with the default policy")
    r.add_argument("--workers", type=int, default=1, help=WORKERS_HELP)
    r.set_defaults(func=cmd_run)
    p = sub.add_parser("proxy", help="the filtering proxy only (mitmdump with the esafety add-ons)")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--workers", type=int, default=1, help=WORKERS_HELP)
    p.add_argument("mitmdump_args", nargs=argparse.REMAINDER, help="after --: more mitmdump arguments")
    p.set_defaults(func=cmd_proxy)
    d = sub.add_parser("dashboard", help="the dashboard only")
    d.set_defaults(func=cmd_dashboard)


def mitmdump_command(settings: Settings, port: int | None = None, extra: list[str] | None = None,
                     host: str | None = None) -> list[str]:
    """mitmdump with our add-ons built in (proxy_addons/master.py), and the options they need."""
    return [
        *MITMDUMP, "-q",
        "--listen-host", host or settings.proxy_host, "--listen-port", str(port or settings.proxy_port),
        "--set", f"confdir={settings.confdir}",
        "--set", "connection_strategy=lazy",  # decide before connecting upstream
        "--set", "stream_large_bodies=8m",
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


def _supervisor(settings: Settings, workers: int, extra: list[str] | None = None):  # type: ignore[no-untyped-def]
    """A supervisor for --workers N > 1 (None for 1: one mitmdump, as ever); exits 2 without haproxy."""
    if workers < 2:
        return None
    from esafety.workers import HaproxyMissing, Supervisor

    jsonlog.setup()
    try:
        return Supervisor(settings, workers, lambda port, metrics_port, more: mitmdump_command(
            settings, port, ["--set", f"esafety_metrics_port={metrics_port}", *more], host="127.0.0.1"), extra)
    except HaproxyMissing as exc:
        print(f"esafety: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_proxy(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.port:
        settings = replace(settings, proxy_port=args.port)
    extra = [a for a in args.mitmdump_args if a != "--"] or None
    sup = _supervisor(settings, args.workers, extra)
    first_start(settings)
    if sup is None:
        return subprocess.call(mitmdump_command(settings, args.port, extra))
    from esafety.workers import serve

    return serve(sup)


def cmd_dashboard(args: argparse.Namespace) -> int:
    import uvicorn

    from dashboard.app import create_app

    settings = load_settings()
    jsonlog.setup()
    uvicorn.run(create_app(settings), host=settings.dashboard_host, port=settings.dashboard_port, log_level="warning")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings()
    sup = _supervisor(settings, args.workers)
    first_start(settings)
    procs = [subprocess.Popen([sys.executable, "-m", "esafety.cli", "dashboard"])]
    if _radius_configured(settings):
        procs.append(subprocess.Popen([sys.executable, "-m", "esafety.cli", "radius", "run"]))
        print("RADIUS:    accounting (802.1X sign-ins) -> client-IP bindings (identity.radius)")
    if sup is None:
        procs.insert(0, subprocess.Popen(mitmdump_command(settings)))
        print(f"Proxy:     {settings.proxy_host}:{settings.proxy_port}  (metrics on :{settings.proxy_metrics_port})")
    print(f"Dashboard: {settings.dashboard_url}  (PAC file: {settings.dashboard_url}/proxy.pac)")
    print(f"Policy:    {settings.policy_path}   Store: {settings.database_url.split('@')[-1]}", flush=True)
    code = 0
    if sup is not None:
        from esafety.workers import serve

        code = serve(sup, also=procs)  # prints the proxy's addresses, supervises until a signal
    else:
        signal.signal(signal.SIGTERM, lambda *_: _terminate(procs))
        with contextlib.suppress(KeyboardInterrupt):
            while all(p.poll() is None for p in procs):
                time.sleep(0.5)
    return code or _stop(procs)


def _radius_configured(settings: Settings) -> bool:
    """The policy names a RADIUS secret: the school sends 802.1X accounting here."""
    from esafety.policy.loader import PolicyInvalid, load_policy

    try:
        return load_policy(settings.policy_path).identity.radius.secret_file is not None
    except PolicyInvalid:
        return False  # the proxy reports the errors and refuses to start


def _terminate(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()


def _stop(procs: list[subprocess.Popen]) -> int:
    """Stop every child; the first exit code that is not a clean stop, else 0."""
    _terminate(procs)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    return next((p.returncode for p in procs if p.returncode not in (0, None, -signal.SIGTERM)), 0)


__all__ = ["register", "os"]
