"""Every PromQL expression in the Grafana dashboards and alert rules resolves to series in a real
Prometheus scraping a real esafety: mitmdump with the add-ons, the dashboard, and the sensor on lo.

Traffic through the proxy, incidents, emails (one refused), an escalation, registrations, agent
reports and sensor detections make the labelled counters exist (prometheus-client emits nothing for
a labelled counter before its first observation). The configs also pass promtool and amtool.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiosmtpd.controller import Controller
from sqlalchemy import update

from dashboard.app import create_app
from esafety.commands.users import create_user
from esafety.config import PROJECT_ROOT, load_settings
from esafety.identity.people import record_sync
from esafety.registrations import decisions
from esafety.registrations.lifecycle import Actor
from esafety.registrations.prereqs import StaticCompliance
from esafety.registrations.workdays import SchoolCalendar
from esafety.store.db import sessions
from esafety.store.models import AccessLog, Incident
from tests.conftest import free_port
from tests.integration.conftest import wait_for
from tests.support import devices, wifi
from tests.support.dsl import PASSWORD, add_role_users, csrf_of, live_server, login, raise_incident
from tests.support.policy import policy_with
from tests.support.proxy import ProxyUnderTest, start_proxy

pytestmark = pytest.mark.xdist_group("observability")

DEPLOY = PROJECT_ROOT / "deploy"
DASHBOARDS = PROJECT_ROOT / "dashboard" / "grafana" / "dashboards"
RATE_INTERVAL = "1m"
BOUNCE = "bounce@school.test"  # the test mail server refuses this recipient: a counted failure
IT = Actor("itadmin", frozenset({"it_admin"}))


# -- the expressions --------------------------------------------------------------------------------

def dashboard_exprs() -> list[tuple[str, str]]:
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for t in panel.get("targets", []):
                expr = t["expr"].replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", RATE_INTERVAL)
                found.append((f"{path.name}: {panel['title']} [{t['refId']}]", expr))
    return found


_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)|\b(and|or|unless)\b")
_NUMBER = re.compile(r"^\s*[-+]?\d+(\.\d+)?([eE][-+]?\d+)?\s*$")


def operands(expr: str) -> list[str]:
    """Split an alert expression at its top-level comparisons and set operators (`a > 0.2 * b and c > 1`
    -> `a`, `0.2 * b`, `c`), dropping bare numbers: each remaining part must return series."""
    parts, depth, start, i, quote = [], 0, 0, 0, ""
    while i < len(expr):
        ch = expr[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            m = _COMPARISON.match(expr, i)
            if m and not (m.group(2) and i and (expr[i - 1].isalnum() or expr[i - 1] == "_")):
                parts.append(expr[start:i])
                i = start = m.end()
                continue
        i += 1
    parts.append(expr[start:])
    return [p.strip() for p in parts if p.strip() and not _NUMBER.match(p)]


def alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    found = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            for n, part in enumerate(operands(rule["expr"])):
                found.append((f"alert {rule['alert']} operand {n}", part))
    return found


def test_operands_split_only_at_top_level() -> None:
    assert operands('up{job="x"} == 0') == ['up{job="x"}']
    assert operands("a > 0.2 * (b / c) and sum by (i) (rate(d[5m])) > 0.1") == ["a", "0.2 * (b / c)",
                                                                             "sum by (i) (rate(d[5m]))"]
    assert operands('rate(x{l=~"a|b"}[5m]) > 0 or y_or_z > 0') == ['rate(x{l=~"a|b"}[5m])', "y_or_z"]


# -- the config checks --------------------------------------------------------------------------------

def test_configs_pass_promtool_and_amtool(tmp_path: Path) -> None:
    shutil.copy(DEPLOY / "prometheus" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    r = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["promtool", "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["amtool", "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for path in DASHBOARDS.glob("*.json"):
        board = json.loads(path.read_text())
        assert board["uid"] and board["title"] and board["panels"], path
        for p in board["panels"]:
            assert set(p["gridPos"]) == {"h", "w", "x", "y"} and p["datasource"] == {"type": "prometheus",
                                                                                     "uid": "prometheus"}
            assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"]), (path, p["title"])
    assert {p.stem for p in DASHBOARDS.glob("*.json")} == {"overview", "filtering", "safeguarding", "devices",
                                                          "registrations", "sensor", "identity"}


# -- the live stack ---------------------------------------------------------------------------------

class Inbox:
    def __init__(self) -> None:
        self.messages: list[list[str]] = []

    async def handle_RCPT(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]  # noqa: N802
        if address == BOUNCE:
            return "550 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]  # noqa: N802
        self.messages.append(list(envelope.rcpt_tos))
        return "250 OK"


BREAKER = """\
# Breaks deciding for one host, the way an engine bug would, so the fail-closed counter moves.
from esafety.policy.engine import Engine

_decide = Engine.decide


def decide(self, req, who):
    if req.host == "break.test":
        raise RuntimeError("simulated engine bug")
    return _decide(self, req, who)


Engine.decide = decide
addons = []
"""


@dataclass
class Prometheus:
    """Scrape ports are chosen up front (the proxy's is filled in once it runs); `start` then runs
    Prometheus on the real alerts.yml and a copy of prometheus.yml with these targets, scraping every 1 s."""
    tmp: Path
    ports: dict[str, int]
    proc: subprocess.Popen | None = None
    url: str = ""

    def start(self) -> str:
        conf = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        conf["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        conf.pop("alerting", None)  # no Alertmanager here
        conf["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
        assert {j["job_name"] for j in conf["scrape_configs"]} == set(self.ports)
        for job in conf["scrape_configs"]:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{self.ports[job['job_name']]}"]}]
        home = self.tmp / "prom"
        home.mkdir()
        (home / "prometheus.yml").write_text(yaml.safe_dump(conf))
        port = free_port()
        with open(home / "log", "wb") as log:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: _ready(self.url), timeout=30), (home / "log").read_text()
        return self.url


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    prom = Prometheus(tmp_path, {"esafety_proxy": 0, "esafety_dashboard": free_port(), "esafety_sensor": free_port(),
                                 "esafety_radius": free_port()})
    yield prom
    if prom.proc:
        prom.proc.terminate()
        prom.proc.wait(timeout=10)


def owner(name: str) -> str:
    """The job whose process really counts a metric here (see esafety/metrics.py). Incidents raised are
    counted by the batch writer: in the proxy for its flags (the sensor's with --store, agents' tamper in
    the dashboard)."""
    if name.startswith("esafety_sensor_"):
        return "esafety_sensor"
    if name.startswith("esafety_radius_"):
        return "esafety_radius"
    if name.startswith("esafety_identity_") and not name.startswith("esafety_identity_sync_"):
        return "esafety_proxy"  # the proxy's identity tables (the syncs' outcome is read by the dashboard)
    if name.startswith(("esafety_proxy_", "esafety_policy_", "esafety_content_", "esafety_downloads_",
                        "esafety_spool_", "esafety_incidents_raised_")):
        return "esafety_proxy"
    return "esafety_dashboard"


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _query(url: str, expr: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    return r.json()


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=free_port())
    ctl.start()
    yield ctl, inbox
    ctl.stop()


def _proxy_traffic(p: ProxyUnderTest) -> None:
    p.origin.route("/downloads/setup.exe", b"MZ\x90\x00" + b"\x00" * 64, content_type="application/octet-stream")
    with p.client() as c:
        assert c.get("https://www.example.org/").status_code == 200
        assert c.get("http://www.example.org/plain").status_code == 200
        assert c.get("https://www.bet365.com/").status_code == 403
        assert c.get("https://www.google.co.uk/search?q=how+to+Self+Harm+without+anyone+knowing").status_code == 200
        assert c.get("https://break.test/").status_code == 403, "fail-closed for pupils"
        assert c.get("https://files.example.org/downloads/setup.exe").status_code == 403
    with p.client(auth=("dsl", PASSWORD)) as c:  # a proxy sign-in: the store's password (basic: local)
        assert c.get("https://www.example.org/signed-in").status_code == 200
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"CONNECT ssh.example.org:22 HTTP/1.1\r\nHost: ssh.example.org:22\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 403")


def _reloads(p: ProxyUnderTest) -> None:
    """One rejected and one accepted policy reload."""
    def count(result: str) -> bool:
        text = httpx.get(f"http://127.0.0.1:{p.metrics_port}/metrics", timeout=5).text
        return f'esafety_policy_reloads_total{{result="{result}"}}' in text

    original = p.policy.read_text()
    p.policy.write_text(original.replace("categories: [gambling, phishing]", "categories: [gamblng, phishing]"))
    assert wait_for(lambda: count("failure"))
    p.policy.write_text(original + "\n")
    assert wait_for(lambda: count("success"))


def _dsl_work(base: str, database_url: str) -> None:
    """A level 5 left unacknowledged past its deadline (escalates), and one acknowledged in the dashboard."""
    late = raise_incident(database_url, category="csam", level=5, subject=None, summary="level five")
    with sessions(database_url)() as s:
        s.execute(update(Incident).where(Incident.id == late.id)
                  .values(created_at=datetime.now(UTC) - timedelta(minutes=20)))
        s.commit()
    acked = raise_incident(database_url, category="self_harm", level=4, subject=None, key="ack-me")
    with httpx.Client(base_url=base, timeout=10) as c:
        assert login(c, "dsl", PASSWORD).status_code == 303
        page = c.get(f"/incidents/{acked.id}")
        r = c.post(f"/incidents/{acked.id}/transition", data={"action": "acknowledge",
                                                             "csrf_token": csrf_of(page.text)})
        assert r.status_code == 303, r.text


def _registrations(database_url: str) -> None:
    wifi.add_pupil(database_url)
    wifi.publish(database_url)
    wifi.accept(database_url, "sam.y9")
    cal = SchoolCalendar()
    old = datetime.now(UTC) - timedelta(days=7)
    wifi.request_device(database_url, "sam.y9", "3c:22:fb:00:00:01", device="old phone", when=old, calendar=cal)
    kept = wifi.request_device(database_url, "sam.y9", "3c:22:fb:00:00:02", device="laptop", calendar=cal)
    ended = wifi.request_device(database_url, "sam.y9", "3c:22:fb:00:00:03", device="tablet", calendar=cal)
    with sessions(database_url)() as s:
        for reg_id in (kept, ended):
            decisions.approve(s, reg_id, IT, "ok", StaticCompliance(), cal, "School-BYOD", "http://dash.test")
        decisions.quarantine(s, kept, IT, "checks", "http://dash.test")
        decisions.revoke(s, ended, IT, "lost_stolen", "lost", "http://dash.test")
        # One account from eight client IPs in a few minutes (as proxy-authenticated traffic logs it):
        # the worker's credential-sharing scan raises it.
        now = datetime.now(UTC)
        for i in range(8):
            s.add(AccessLog(ts=now - timedelta(minutes=i), ref="R", username="sam.y9", policy_group="year9",
                            client_ip=f"10.20.0.{10 + i}", method="GET", scheme="https", host="example.org",
                            path="/", status=200, bytes=1, action="allow", category="uncategorised", rule="default"))
        s.commit()


def _agents(base: str, database_url: str) -> None:
    with httpx.Client(base_url=base, timeout=10) as c:
        agent = devices.Agent(c, devices.token(database_url))
        r = agent.send(checks=devices.all_passing())
        assert r.status_code == 200, r.text
        r = c.post("/api/agent/report", json=devices.report(agent.device_id, 99),
                   headers={"Authorization": f"Bearer {agent.device_id}.wrong"})
        assert r.status_code == 401


@pytest.fixture
def sensor_on_lo(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen] = []

    def start(metrics_port: int, peer_port: int) -> None:
        cfg = tmp_path / "sensor.yaml"
        cfg.write_text("{}\n")
        env = {**os.environ, "ESAFETY_HOME": str(tmp_path / "sensor-home")}
        proc = subprocess.Popen([sys.executable, "-m", "esafety.cli", "sensor", "run", "--iface", "lo",
                                 "--bpf", f"port {peer_port} or icmp", "--config", str(cfg), "--no-store",
                                 "--metrics-port", str(metrics_port), "--seconds", "60"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
                                env=env)
        procs.append(proc)
        seen = ""
        while "capturing on lo" not in seen:
            line = proc.stderr.readline()  # type: ignore[union-attr]
            assert line, seen
            seen += line

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def radius_server(tmp_path: Path) -> Iterator[Any]:
    """`esafety radius run` (802.1X accounting), scraped as the esafety_radius job."""
    procs: list[subprocess.Popen] = []

    def start(metrics_port: int, database_url: str) -> None:
        listen = free_port()
        (tmp_path / "radius").mkdir()
        (tmp_path / "radius" / "radius.secret").write_text("testing123\n")
        policy = policy_with(tmp_path / "radius",
                             "identity: {radius: {secret_file: radius.secret, clients: [127.0.0.1]}}")
        env = {**os.environ, "ESAFETY_HOME": str(tmp_path / "radius-home"), "ESAFETY_DATABASE_URL": database_url}
        procs.append(subprocess.Popen([sys.executable, "-m", "esafety.cli", "radius", "run", "--policy", str(policy),
                                       "--listen", f"127.0.0.1:{listen}", "--metrics-port", str(metrics_port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=PROJECT_ROOT, env=env))

        def counted() -> bool:  # a datagram that is no RADIUS packet: counted as malformed
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.sendto(b"not radius", ("127.0.0.1", listen))
            try:
                text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return False
            return "esafety_radius_packets_total{" in text

        assert wait_for(counted, timeout=20, interval=0.5), "the RADIUS listener counted nothing"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=20)


def _bittorrent_peer(port: int) -> socket.socket:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen()

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                hs = c.recv(68)
                c.sendall(b"\x13BitTorrent protocol" + bytes(8) + hs[28:48] + b"-XX0001-" + b"0" * 12)

    threading.Thread(target=serve, daemon=True).start()
    return srv


def _sensor_traffic(peer_port: int) -> None:
    """A BitTorrent handshake (a detection) and an ICMP echo (a frame the sensor skips: other_proto)."""
    with socket.create_connection(("127.0.0.1", peer_port), timeout=5) as c:
        c.sendall(b"\x13BitTorrent protocol" + bytes(8) + bytes(range(20)) + b"-TR3000-" + b"1" * 12)
        c.recv(68)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as icmp:
        icmp.sendto(b"\x08\x00\xf7\xff\x00\x00\x00\x00", ("127.0.0.1", 0))


def test_every_dashboard_and_alert_expression_returns_series(tmp_path: Path, prometheus, smtp,  # type: ignore[no-untyped-def]
                                                             sensor_on_lo, radius_server,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert os.geteuid() == 0, "the sensor captures on lo, which needs root (as tests/integration/test_sensor_live.py)"
    ports = prometheus.ports
    ctl, inbox = smtp
    for var, value in (("ESAFETY_INCIDENT_WORKER_INTERVAL", "0.2"), ("ESAFETY_REGISTRATIONS_WORKER_INTERVAL", "0.5"),
                       ("ESAFETY_COMPLIANCE_WORKER_INTERVAL", "0.5"), ("ESAFETY_WIFI_SHARING_EVERY", "1")):
        monkeypatch.setenv(var, value)

    p = tmp_path / "breaker.py"
    p.write_text(BREAKER)
    proxy = start_proxy(tmp_path / "proxy", extra=["-s", str(p)])
    peer = _bittorrent_peer(peer_port := free_port())
    try:
        ports["esafety_proxy"] = proxy.metrics_port
        sensor_on_lo(ports["esafety_sensor"], peer_port)
        db = proxy.database_url
        radius_server(ports["esafety_radius"], db)
        add_role_users(db)
        create_user(db, "bouncer", "staff", ["dsl"], email=BOUNCE, password=PASSWORD)
        record_sync(db, "roster", "roster.csv", None, ok=True, dry_run=False)  # the identity_sync gauges' rows
        # The dashboard reads the proxy's store and a policy with someone on call, so level 5 escalates.
        dash_policy = proxy.policy.with_name("dashboard-aup.yaml")
        dash_policy.write_text(proxy.policy.read_text().replace("on_call: []", "on_call: [dsl]"))
        assert "on_call: [dsl]" in dash_policy.read_text()
        dport = ports["esafety_dashboard"]
        settings = load_settings({"ESAFETY_HOME": str(tmp_path / "dash"), "ESAFETY_DATABASE_URL": db,
                                  "ESAFETY_POLICY": str(dash_policy), "ESAFETY_SMTP_HOST": "127.0.0.1",
                                  "ESAFETY_SMTP_PORT": str(ctl.port), "ESAFETY_SMTP_FROM": "esafety@school.test",
                                  "ESAFETY_DASHBOARD_URL": f"http://127.0.0.1:{dport}"})
        with live_server(create_app(settings), dport) as live:
            url = prometheus.start()
            _proxy_traffic(proxy)
            _reloads(proxy)
            _dsl_work(live.url, db)
            _registrations(db)
            _agents(live.url, db)

            def sensor_published() -> bool:
                _sensor_traffic(peer_port)
                text = httpx.get(f"http://127.0.0.1:{ports['esafety_sensor']}/metrics", timeout=5).text
                return "esafety_sensor_detections_total{" in text and "esafety_sensor_dropped_packets_total{" in text

            # The sensor publishes its counters every 5 s of capture, so keep frames coming until it has.
            assert wait_for(sensor_published, timeout=20, interval=0.5), "the sensor published no detections"
            assert wait_for(lambda: any(BOUNCE not in m for m in inbox.messages), timeout=10), "no email sent"

            exprs = dashboard_exprs() + alert_exprs()
            assert len(exprs) > 60
            empty: dict[str, str] = dict(exprs)

            def resolve() -> bool:
                for name, expr in list(empty.items()):
                    body = _query(url, expr)
                    assert body["status"] == "success", (name, expr, body)
                    if body["data"]["result"]:
                        del empty[name]
                return not empty

            wait_for(resolve, timeout=30, interval=1.0)
            targets = {r["metric"]["job"]: r["value"][1] for r in _query(url, "up")["data"]["result"]}
            assert not empty, f"expressions with no series: {json.dumps(empty, indent=1)}\nup: {targets}"
            assert targets == {job: "1" for job in ports}, targets

            def rules_health() -> dict[str, str]:
                groups = httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
                return {r["name"]: r["health"] for g in groups for r in g["rules"]}

            # Prometheus loaded every rule of alerts.yml and evaluates each without error.
            assert wait_for(lambda: set(rules_health().values()) == {"ok"}), rules_health()
            rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
            assert set(rules_health()) == {r["alert"] for g in rules["groups"] for r in g["rules"]}
            # The dashboard exports every metric name (one module), the proxy's and sensor's at zero:
            # each name must also come from the part that really counts it.
            names = {n for _, e in exprs for n in re.findall(r"\besafety_[a-z0-9_]+", re.sub(r'"[^"]*"', "", e))}
            assert len(names) > 40
            for name in sorted(names):
                jobs = {r["metric"].get("job") for r in _query(url, f"group by (job) ({name})")["data"]["result"]}
                assert owner(name) in jobs, (name, jobs)
    finally:
        peer.close()
        proxy.stop()
