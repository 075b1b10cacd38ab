"""`esafety sensor run | read | check`: the network sensor (VPN, Tor, proxies, P2P, hotspots)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from esafety.config import load_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sensor", help="classify network flows: VPNs, Tor, proxies, P2P, hotspots")
    ps = p.add_subparsers(dest="sensor_command", metavar="ACTION")
    ps.required = True

    r = ps.add_parser("run", help="watch an interface and raise incidents for detections")
    r.add_argument("--iface", required=True, help="interface to capture on (needs root or CAP_NET_RAW)")
    r.add_argument("--bpf", default=None, help="capture filter, e.g. 'not port 8080'")
    r.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until killed)")
    r.add_argument("--count", type=int, default=None, help="stop after this many frames")
    r.add_argument("--no-store", action="store_true", help="print detections only; raise no incidents")
    r.add_argument("--metrics-port", type=int, default=0,
                   help="serve Prometheus metrics on this port (0: off; deploy/prometheus scrapes 9170)")
    _common(r)
    r.set_defaults(func=cmd_run)

    rd = ps.add_parser("read", help="classify a pcap/pcapng file: one line per flow detection")
    rd.add_argument("file")
    rd.add_argument("--store", action="store_true", help="also raise incidents in the store")
    _common(rd)
    rd.set_defaults(func=cmd_read)

    c = ps.add_parser("check", help="validate the sensor configuration: exit 0, or 1 with file:line errors")
    c.add_argument("file", nargs="?", default=None, help="sensor YAML (default: the policy's sensor section)")
    c.add_argument("--policy", default=None, help="policy file (default: ESAFETY_POLICY or policies/aup.yaml)")
    c.set_defaults(func=cmd_check)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per detection")
    p.add_argument("--config", default=None, help="sensor YAML (default: the policy's sensor section)")
    p.add_argument("--policy", default=None, help="policy file (default: ESAFETY_POLICY or policies/aup.yaml)")


def _load(args: argparse.Namespace, config: str | None) -> Any:
    """The validated SensorConfig, or None after printing why not."""
    from agent.sensor.config import SensorConfigInvalid, load_sensor_config
    from esafety.policy.loader import PolicyInvalid, load_policy

    settings = load_settings()
    policy_path = args.policy or settings.policy_path
    try:
        policy = load_policy(policy_path)
    except (PolicyInvalid, OSError):
        policy = None  # categories then go unchecked; `esafety policy check` reports the policy itself
    try:
        return load_sensor_config(config, policy_path, policy)
    except SensorConfigInvalid as exc:
        for err in exc.errors:
            print(err, file=sys.stderr)
        print(f"{len(exc.errors)} error(s)", file=sys.stderr)
        return None


def _incidents(args: argparse.Namespace, live: bool) -> Any:
    from agent.sensor.report import IncidentSink

    settings = load_settings()
    return IncidentSink(settings.database_url, args.policy or settings.policy_path, settings.spool_dir / "sensor",
                        live=live)


def _summary(sensor: Any, extra: dict[str, Any]) -> None:
    print(json.dumps({**sensor.stats(), **extra}), file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args, args.file)
    if cfg is None:
        return 1
    print(f"{cfg.source}: ok")
    return 0


def cmd_read(args: argparse.Namespace) -> int:
    from agent.sensor.capture import CaptureError
    from agent.sensor.report import Printer, Tee
    from agent.sensor.service import read_file

    cfg = _load(args, args.config)
    if cfg is None:
        return 1
    store = _incidents(args, live=False) if args.store else None
    try:
        sensor = read_file(args.file, cfg, Tee(Printer(sys.stdout, args.json), store))
    except CaptureError as exc:
        print(exc, file=sys.stderr)
        return 2
    finally:
        if store:
            store.close()
    extra: dict[str, Any] = {"complete_file": not getattr(sensor, "incomplete_file", False)}
    if store:
        extra["incidents_raised"] = store.raised
    _summary(sensor, extra)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.sensor.capture import CaptureError
    from agent.sensor.report import Printer, Tee
    from agent.sensor.service import run_live

    cfg = _load(args, args.config)
    if cfg is None:
        return 1
    if not cfg.dhcp_allowed:
        print("note: dhcp.allowed_servers is empty, so rogue DHCP detection is off", file=sys.stderr)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port)
    store = None if args.no_store else _incidents(args, live=True)
    try:
        sensor = run_live(args.iface, cfg, Tee(Printer(sys.stdout, args.json), store), bpf=args.bpf,
                          seconds=args.seconds, count=args.count, stop=stop.is_set,
                          ready=lambda: print(f"sensor: capturing on {args.iface}", file=sys.stderr, flush=True))
    except CaptureError as exc:
        print(exc, file=sys.stderr)
        return 2
    finally:
        if store:
            store.close()
    _summary(sensor, {"incidents_raised": store.raised} if store else {})
    return 0
