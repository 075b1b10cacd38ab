"""`esafety radius run`: RADIUS accounting from the WiFi (802.1X) -> who is at which client IP."""

from __future__ import annotations

import argparse
import asyncio
import sys

from esafety.config import load_settings

# 9180+i are the proxy workers' metrics ports (`esafety proxy --workers N`), 9170 the sensor's.
METRICS_PORT = 9171


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("radius", help="RADIUS accounting from the WiFi (802.1X sign-ins) -> client-IP bindings")
    ps = p.add_subparsers(dest="radius_command", metavar="ACTION")
    ps.required = True
    r = ps.add_parser("run", help="receive Accounting-Request packets (Start / Interim-Update / Stop) until stopped")
    r.add_argument("--listen", default=None, metavar="HOST:PORT",
                   help="where to listen (default: the policy's identity.radius.listen, 0.0.0.0:1813)")
    r.add_argument("--metrics-port", type=int, default=METRICS_PORT,
                   help=f"serve Prometheus metrics on this port (0: off; default {METRICS_PORT})")
    r.add_argument("--policy", default=None, help="policy file (default: ESAFETY_POLICY or policies/aup.yaml)")
    r.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from esafety import jsonlog
    from esafety.identity.radius import RadiusConfigError, ServerConfig, serve
    from esafety.policy.loader import PolicyInvalid, load_policy

    jsonlog.setup()
    settings = load_settings()
    try:
        policy = load_policy(args.policy or settings.policy_path)
        config = ServerConfig.from_settings(policy.identity.radius, args.listen)
    except PolicyInvalid as exc:
        for err in exc.errors:
            print(err, file=sys.stderr)
        return 1
    except RadiusConfigError as exc:
        print(f"esafety radius: {exc}", file=sys.stderr)
        return 1
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port)

    def ready(host: str, port: int) -> None:
        print(f"radius: listening on {host}:{port}", file=sys.stderr, flush=True)

    try:
        asyncio.run(serve(config, settings.database_url, ready))
    except OSError as exc:
        print(f"esafety radius: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
