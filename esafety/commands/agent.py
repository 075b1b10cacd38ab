"""`esafety agent enrol | run | check`: the endpoint agent on a school or personal device.

  enrol --server URL --token T [--ca FILE]   exchange a one-time token for this device's credential
  run [--once]                               report to the server until stopped (systemd: esafety-agent)
  check [--json] [--only ID]                 run the checks here and print them (no server needed)
Each takes --state PATH (default: $ESAFETY_AGENT_STATE, /var/lib/esafety-agent/credential.json as root).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="endpoint agent: enrol this device, report compliance, run checks locally")
    ps = p.add_subparsers(dest="agent_command", metavar="ACTION")
    ps.required = True
    e = ps.add_parser("enrol", help="enrol this device with a one-time token from IT services")
    e.add_argument("--server", required=True, help="the dashboard's URL, e.g. https://esafety.school.internal")
    e.add_argument("--token", required=True)
    e.add_argument("--ca", default=None, help="CA certificate file to trust for the server (school PKI)")
    e.add_argument("--force", action="store_true", help="replace an existing enrolment on this device")
    e.set_defaults(func=cmd_enrol)
    r = ps.add_parser("run", help="report compliance, heartbeats and who is logged in until stopped")
    r.add_argument("--once", action="store_true", help="send one snapshot (and anything queued), then exit")
    r.set_defaults(func=cmd_run)
    c = ps.add_parser("check", help="run the compliance checks here and print the results")
    c.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    c.add_argument("--only", action="append", metavar="ID", help="only this check (repeatable)")
    c.set_defaults(func=cmd_check)
    for parser in (e, r, c):
        parser.add_argument("--state", type=Path, default=None, help="credential file (root-only)")


def _state_path(args: argparse.Namespace) -> Path:
    from agent.state import default_path

    return args.state or default_path()


def cmd_enrol(args: argparse.Namespace) -> int:
    from agent.reporter import EnrolRefused, enrol

    path = _state_path(args)
    if path.exists() and not args.force:
        print(f"esafety agent: {path} already holds an enrolment; use --force to replace it", file=sys.stderr)
        return 1
    try:
        st = enrol(args.server, args.token, args.ca)
    except EnrolRefused as exc:
        print(f"esafety agent: enrolment refused: {exc}", file=sys.stderr)
        return 1
    st.save(path)
    print(f"Enrolled as device {st.device_id}; credential stored in {path} (readable by its owner only).")
    print("Start reporting with `esafety agent run` (systemd: esafety-agent.service).")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.checks.host import LocalHost
    from agent.reporter import Reporter, Unenrolled
    from agent.state import AgentState, StateError
    from esafety import jsonlog

    jsonlog.setup()
    log = logging.getLogger("esafety.agent")
    path = _state_path(args)
    try:
        state = AgentState.load(path)
    except StateError as exc:
        print(f"esafety agent: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    reporter = Reporter(state, path, LocalHost())
    log.info("agent started", extra={"fields": {"device_id": state.device_id, "server": state.server,
                                                "monitor_sha256": reporter.monitor.sha256}})
    try:
        reporter.run(stop, once=args.once)
    except Unenrolled as exc:
        log.error("the server refused this device's credential; enrol again", extra={"fields": {"reason": str(exc)}})
        return 1
    finally:
        reporter.close()
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from agent.checks.base import Ctx, Settings
    from agent.checks.host import LocalHost
    from agent.checks.runner import check_ids, run_checks
    from agent.monitor import Monitor
    from agent.state import AgentState, StateError
    from esafety.compliance.catalogue import BY_ID

    settings = Settings()
    path = _state_path(args)
    if path.exists():  # enrolled: use the school's settings as last sent by its server
        with contextlib.suppress(StateError):
            settings = Settings.from_reply(AgentState.load(path).settings)
    host = LocalHost()
    unknown = sorted(set(args.only or ()) - set(check_ids(host.platform)))
    if unknown:
        print(f"esafety agent: unknown check(s) for {host.platform}: {', '.join(unknown)}", file=sys.stderr)
        return 2
    outcomes = run_checks(Ctx(host, settings, Monitor()), only=args.only)
    if args.json:
        print(json.dumps([o.wire() for o in outcomes], indent=1))
    else:
        _table(outcomes, BY_ID)
    return 1 if any(o.status == "fail" for o in outcomes) else 0


def _table(outcomes: list[Any], specs: dict[str, Any]) -> None:
    rows = [(o.id, o.status.upper(), "yes" if specs[o.id].critical else "", f"{o.duration_ms} ms",
             _summary(o.evidence)) for o in outcomes]
    head = ("CHECK", "STATUS", "CRITICAL", "TIME", "EVIDENCE")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=False)) + "  " + r[4])
    failing = [o for o in outcomes if o.status == "fail"]
    for o in failing:
        print(f"\n{o.id}: {specs[o.id].title} (AUP {specs[o.id].aup_clause})\n  fix: {specs[o.id].remediation}")


def _summary(evidence: dict[str, Any]) -> str:
    for key in ("problem", "error", "reason", "note"):
        if evidence.get(key):
            return str(evidence[key])[:90]
    found = {k: v for k, v in evidence.items() if isinstance(v, list) and v and k not in ("allowed", "looked_for",
                                                                                          "groups")}
    return "; ".join(f"{k}: {len(v)}" for k, v in found.items())[:90] or "-"
