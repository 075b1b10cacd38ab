"""Proxy throughput and latency for a 12 KB HTML page over plain HTTP, through each proxy in turn.

Contenders, all explicit HTTP proxies on 127.0.0.1 in front of one nginx origin serving a deterministic
12 KB page: bare mitmdump (no scripts), the esafety proxy (`esafety-mitmdump`, mitmdump with our
add-ons built in, as `esafety proxy` runs it; the full default policy, phrase scanning on: clients
are 'unknown', which is scanned), e2guardian (Debian package, its default configuration and phrase
lists, direct to the origin) and squid alone (no cache, no access log: the ceiling). wrk drives the
load with a Lua script that sends absolute-form request lines.

  - throughput: requests/s with 16 keep-alive connections, one wrk thread (the other core serves);
  - latency: p50/p99 with one connection, request after request: what a proxy adds to each request,
    without queueing.
Rounds alternate the contenders; medians are reported.

The goal's ratio (esafety / bare mitmdump) comes from pairs of short runs back to back, the order
swapped each pair, and is the median of the pairs' ratios: this machine's speed drifts by 10-20%
from one minute to the next (other tenants), which a ratio of medians taken minutes apart catches.
A second, steadier figure serves both proxies at once at a capped rate (the same conditions for
both, whatever the machine does) and compares the CPU each spends per request.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from esafety.commands import run as run_command
from tests.bench.common import (
    BENCH_DIR,
    ROOT,
    Row,
    alternate,
    cpu_seconds,
    free_port,
    median,
    processes,
    row,
    say,
    spawn,
    tail,
    wait_port,
    which,
)
from tests.bench.workload import html_page

NAME = "proxy"
WORK = BENCH_DIR / "proxy"
PAGE_SIZE = 12 * 1024
ORIGIN_HOST = "localhost"  # a name, not an IP literal (the default policy blocks those for pupils)
MITMDUMP = str(Path(sys.executable).with_name("mitmdump"))
ESAFETY_MITMDUMP = run_command.MITMDUMP  # mitmdump with our add-ons built in, as `esafety proxy` runs it
CORE_MITMDUMP = [sys.executable, "-c", "from proxy_addons.master import CoreMaster, main; main(master=CoreMaster)"]
BARE, CORE = "mitmdump (bare)", "esafety core, no add-ons"
POLICY = ROOT / "policies" / "aup.yaml"

LUA = """
wrk.method = "GET"
wrk.path = os.getenv("BENCH_URL")
wrk.headers["Host"] = os.getenv("BENCH_HOST")
wrk.headers["User-Agent"] = "esafety-bench"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\nBENCH {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


# -- peers ---------------------------------------------------------------------------------------------


def _chmod_open(path: Path) -> Path:
    """A folder the peers' unprivileged users (nobody, proxy, e2guardian) may write logs into."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def start_nginx(procs: list[subprocess.Popen], binary: str) -> int:
    d = WORK / "nginx"
    (d / "www").mkdir(parents=True, exist_ok=True)
    _chmod_open(d / "logs")
    (d / "www" / "page.html").write_bytes(html_page(PAGE_SIZE))
    port = free_port()
    (d / "nginx.conf").write_text(f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    types {{ text/html html; }}
    default_type text/html;
    charset utf-8;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {d}/logs/body;
    proxy_temp_path {d}/logs/proxy;
    fastcgi_temp_path {d}/logs/fastcgi;
    uwsgi_temp_path {d}/logs/uwsgi;
    scgi_temp_path {d}/logs/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
    }}
}}
""")
    p = spawn(procs, [binary, "-p", str(d), "-e", str(d / "logs" / "error.log"), "-c", str(d / "nginx.conf")],
              d / "logs" / "stdout.log")
    wait_port(port, p, what="nginx")
    return port


def start_squid(procs: list[subprocess.Popen], binary: str) -> int:
    d = _chmod_open(WORK / "squid")
    port = free_port()
    conf = d / "squid.conf"
    conf.write_text(f"""
http_port 127.0.0.1:{port}
http_access allow all
cache deny all
cache_mem 0 MB
access_log none
cache_log {d}/cache.log
pid_filename {d}/squid.pid
coredump_dir {d}
cache_effective_user proxy
workers 1
shutdown_lifetime 0 seconds
via off
forwarded_for delete
""")
    p = spawn(procs, [binary, "-N", "-f", str(conf)], d / "stdout.log")
    wait_port(port, p, timeout=30, what="squid")
    return port


def start_e2guardian(procs: list[subprocess.Popen], binary: str) -> int:
    """e2guardian with its Debian default configuration, copied to var/bench and pointed at our port."""
    d = WORK / "e2guardian"
    etc = d / "etc"
    if etc.exists():
        shutil.rmtree(etc)
    shutil.copytree("/etc/e2guardian", etc)
    logs = _chmod_open(d / "log")
    for f in etc.rglob("*"):
        if f.is_file() and not f.is_symlink():
            try:
                text = f.read_text()
            except UnicodeDecodeError:
                continue
            if "/etc/e2guardian" in text:
                f.write_text(text.replace("/etc/e2guardian", str(etc)))
    port = free_port()
    conf = etc / "e2guardian.conf"
    settings = {"filterip": "127.0.0.1", "filterports": str(port), "loglocation": f"'{logs}/access.log'",
                "pidfilename": f"'{logs}/e2guardian.pid'", "nodaemon": "on", "filecachedir": f"'{logs}'"}
    lines = []
    for line in conf.read_text().splitlines():
        key = line.lstrip("#").split("=", 1)[0].strip()
        if key in settings and "=" in line:
            continue
        lines.append(line)
    lines += [f"{k} = {v}" for k, v in settings.items()]
    conf.write_text("\n".join(lines) + "\n")
    p = spawn(procs, [binary, "-N", "-c", str(conf)], logs / "stdout.log")
    wait_port(port, p, timeout=60, what="e2guardian")
    return port


def no_scan_policy() -> Path:
    """The default policy with phrase scanning off (scan_for: []), to price the scanning alone."""
    import yaml

    d = WORK / "policy-no-scan"
    shutil.copytree(POLICY.parent / "lists", d / "lists", dirs_exist_ok=True)
    doc = yaml.safe_load(POLICY.read_text())
    doc["phrases"]["scan_for"] = []
    (d / "aup.yaml").write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return d / "aup.yaml"


def local_origin(port: int) -> list[str]:
    """The option that lets esafety reach the loopback origin (it refuses the proxy's own machine)."""
    return ["--set", f"esafety_local_origins=127.0.0.1:{port},[::1]:{port}"]


def start_mitmdump(procs: list[subprocess.Popen], esafety: bool, name: str, origin: int,
                   policy: Path = POLICY, core: bool = False) -> int:
    """Stock mitmdump (esafety False), esafety-mitmdump (True), or with core, esafety-mitmdump's
    own mitmproxy (indexed event dispatch) without our add-ons."""
    d = WORK / name
    home = d / "home"
    if d.exists():
        shutil.rmtree(d)
    home.mkdir(parents=True)
    port = free_port()
    program = ESAFETY_MITMDUMP if esafety else CORE_MITMDUMP if core else [MITMDUMP]
    cmd = [*program, "-q", "--listen-host", "127.0.0.1",
           "--listen-port", str(port), "--set", f"confdir={home / 'ca'}", "--set", "connection_strategy=lazy",
           "--set", "stream_large_bodies=8m"]
    env = dict(os.environ)
    if esafety:
        from esafety.store.db import upgrade

        db = f"sqlite:///{home / 'esafety.db'}"
        upgrade(db)
        cmd += ["--set", f"esafety_policy={policy}", "--set", f"esafety_home={home}",
                "--set", f"esafety_database_url={db}", "--set", "esafety_metrics_port=0", *local_origin(origin)]
        env["ESAFETY_DASHBOARD_URL"] = "http://dashboard.bench"
    p = spawn(procs, cmd, d / "mitmdump.log", env=env, cwd=d)
    wait_port(port, p, timeout=60, what=name)
    PIDS[name] = p.pid
    return port


PIDS: dict[str, int] = {}  # mitmdump name -> process id
_WRITTEN: set[Path] = set()


# -- load ----------------------------------------------------------------------------------------------


def check(proxy_port: int, url: str) -> None:
    """One request through the proxy must return the page itself (not a block or error page)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{proxy_port}"}))
    with opener.open(url, timeout=15) as resp:
        body = resp.read()
    if resp.status != 200 or len(body) != PAGE_SIZE:
        raise RuntimeError(f"proxy on {proxy_port} answered {resp.status} with {len(body)} bytes, not the page")


def wrk(wrk_bin: str, proxy_port: int, url: str, host: str, connections: int, seconds: float,
        extra_env: dict[str, str] | None = None, delay_ms: int = 0) -> dict[str, float]:
    WORK.mkdir(parents=True, exist_ok=True)
    script = WORK / f"absolute-form-{delay_ms}.lua"
    if script not in _WRITTEN:  # once per run: wrk runs side by side read it
        script.write_text(LUA + (f"function delay() return {delay_ms} end\n" if delay_ms else ""))
        _WRITTEN.add(script)
    env = {**os.environ, "BENCH_URL": url, "BENCH_HOST": host, **(extra_env or {})}
    out = subprocess.run([wrk_bin, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
                          "-s", str(script), f"http://127.0.0.1:{proxy_port}"],
                         capture_output=True, text=True, env=env, timeout=seconds + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result (exit {out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    r = json.loads(line[6:])
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    if errors > max(2, r["requests"] // 1000):
        raise RuntimeError(f"{errors} errors of {r['requests']} requests through port {proxy_port}: {r}")
    return {"rps": r["requests"] / (r["duration_us"] / 1e6), "p50_ms": r["p50_us"] / 1000,
            "p99_ms": r["p99_us"] / 1000, "errors": errors, "requests": r["requests"]}


def paired_ratio(wrk_bin: str, ports: dict[str, int], url: str, host: str, pairs: int,
                 seconds: float, baseline: str = BARE) -> list[float]:
    """esafety / baseline requests per second, from runs back to back; the order swaps each pair."""
    ratios = []
    for i in range(pairs):
        order = [baseline, "esafety"][:: 1 if i % 2 == 0 else -1]
        rps = {name: wrk(wrk_bin, ports[name], url, host, 16, seconds)["rps"] for name in order}
        ratios.append(rps["esafety"] / rps[baseline])
    return ratios


def cpu_per_request(wrk_bin: str, ports: dict[str, int], pids: dict[str, int], url: str, host: str,
                    rounds: int, seconds: float) -> dict[str, float]:
    """Both proxies served at once, 8 connections each pausing 40 ms between requests (well below
    either's capacity): the CPU each proxy process spends per request, median over rounds. Both
    see the same machine at the same moment."""
    import threading

    per: dict[str, list[float]] = {name: [] for name in ports}
    for _ in range(rounds):
        before = {name: cpu_seconds(pids[name]) for name in ports}
        out: dict[str, dict[str, float]] = {}
        runs = [threading.Thread(target=lambda n=name: out.__setitem__(
            n, wrk(wrk_bin, ports[n], url, host, 8, seconds, delay_ms=40))) for name in ports]
        for t in runs:
            t.start()
        for t in runs:
            t.join()
        for name in ports:
            per[name].append((cpu_seconds(pids[name]) - before[name]) / out[name]["requests"])
    return {name: median(v) for name, v in per.items()}


def _workers_supported() -> bool:
    esafety = Path(sys.executable).with_name("esafety")
    try:
        out = subprocess.run([str(esafety), "run", "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--workers" in out.stdout


# -- run -----------------------------------------------------------------------------------------------


def run(quick: bool) -> dict[str, Any]:
    rows: list[Row] = []
    notes: list[str] = []
    bench = "proxy (12 KB HTML, HTTP)"
    wrk_bin, nginx_bin = which("wrk"), which("nginx")
    if not wrk_bin or not nginx_bin:
        raise RuntimeError("wrk and nginx are needed: scripts/install-system-deps.sh bench")
    rounds, thr_s, lat_windows = (1, 3.0, 3) if quick else (3, 8.0, 5)
    pairs, pair_s, cpu_rounds, cpu_s = (4, 2.0, 2, 5.0) if quick else (12, 3.0, 4, 8.0)
    WORK.mkdir(parents=True, exist_ok=True)
    with processes() as procs:
        origin = start_nginx(procs, nginx_bin)
        url, host = f"http://{ORIGIN_HOST}:{origin}/page.html", f"{ORIGIN_HOST}:{origin}"
        ports: dict[str, int] = {}
        ports[BARE] = start_mitmdump(procs, False, "mitmdump-bare", origin)
        ports[CORE] = start_mitmdump(procs, False, "esafety-core", origin, core=True)
        ports["esafety"] = start_mitmdump(procs, True, "esafety", origin)
        ports["esafety, no phrase scan"] = start_mitmdump(procs, True, "esafety-no-scan", origin, no_scan_policy())
        e2g, squid = which("e2guardian"), which("squid")
        if e2g:
            try:
                ports["e2guardian"] = start_e2guardian(procs, e2g)
            except RuntimeError as exc:
                notes.append(f"e2guardian did not start: {exc}: {tail(WORK / 'e2guardian' / 'log' / 'stdout.log', 5)}")
        else:
            notes.append("e2guardian not installed")
        if squid:
            try:
                ports["squid"] = start_squid(procs, squid)
            except RuntimeError as exc:
                notes.append(f"squid did not start: {exc}: {tail(WORK / 'squid' / 'cache.log', 5)}")
        else:
            notes.append("squid not installed")
        for name, port in list(ports.items()):
            try:
                check(port, url)
                wrk(wrk_bin, port, url, host, 4, 1)  # warm-up: connections, caches, JIT-free but lazy imports
            except (OSError, RuntimeError) as exc:
                notes.append(f"{name} left out: {exc}")
                del ports[name]
        for needed, folder in (("esafety", "esafety"), (BARE, "mitmdump-bare"), (CORE, "esafety-core")):
            if needed not in ports:
                raise RuntimeError(f"{needed} did not serve the page: {tail(WORK / folder / 'mitmdump.log')}")

        def contender(port: int) -> Any:
            def measure() -> dict[str, float]:
                t = wrk(wrk_bin, port, url, host, 16, thr_s)
                # Latency in 1 s windows, median of them: one burst of outside load (2 shared cores)
                # spoils one window instead of the figure; the worst window is kept too.
                lat = [wrk(wrk_bin, port, url, host, 1, 1) for _ in range(lat_windows)]
                return {"rps": t["rps"], "p50_ms": median([x["p50_ms"] for x in lat]),
                        "p99_ms": median([x["p99_ms"] for x in lat]),
                        "worst_window_p99_ms": max(x["p99_ms"] for x in lat), "loaded_p99_ms": t["p99_ms"]}
            return measure

        say(f"proxy: contenders {', '.join(ports)}; {rounds} round(s) of {thr_s:.0f}s at 16 connections "
            f"+ {lat_windows} x 1s at 1 connection")
        res = alternate(rounds, {name: contender(port) for name, port in ports.items()},
                        log=lambda m: say(f"proxy: {m}"))
        ratios: dict[str, list[float]] = {}
        for baseline in (BARE, CORE):
            say(f"proxy: {pairs} pairs of {pair_s:.0f}s runs, esafety and {baseline} back to back")
            ratios[baseline] = paired_ratio(wrk_bin, ports, url, host, pairs, pair_s, baseline)
            say(f"proxy: pair ratios {', '.join(f'{r:.3f}' for r in ratios[baseline])}")
        served = {name: ports[name] for name in (BARE, CORE, "esafety")}
        say(f"proxy: CPU per request, {', '.join(served)} served at once, {cpu_rounds} x {cpu_s:.0f}s")
        cpu = cpu_per_request(wrk_bin, served, {BARE: PIDS["mitmdump-bare"], CORE: PIDS["esafety-core"],
                                                "esafety": PIDS["esafety"]}, url, host, cpu_rounds, cpu_s)
        access_log = WORK / "esafety" / "home" / "log" / "access.jsonl"
        logged = sum(1 for _ in access_log.open()) if access_log.exists() else 0
    ours, bare, core = res["esafety"], res[BARE], res[CORE]
    for name, figures in res.items():
        if name not in ("esafety", "esafety, no phrase scan"):
            rows.append(row(bench, "requests/s, 16 connections", ours["rps"], "req/s", peer=figures["rps"],
                            peer_name=name))
    for baseline, goal, what in ((BARE, (">=", 0.9), "stock mitmdump, as the goal states"),
                                 (CORE, None, "the same mitmproxy without our add-ons: what the add-ons cost")):
        r = ratios[baseline]
        rows.append(row(bench, f"throughput esafety / {baseline}", median(r), "x", goal=goal,
                        note=f"{what}; median of {len(r)} back-to-back pairs ({min(r):.2f}-{max(r):.2f}); "
                        f"medians of the rounds above: {ours['rps'] / res[baseline]['rps']:.2f}"))
        rows.append(row(bench, "CPU per request, served side by side", cpu["esafety"] * 1e6, "us",
                        peer=cpu[baseline] * 1e6, peer_name=baseline, better="lower",
                        note="all at once at a capped rate; throughput-equivalent ratio "
                        f"{cpu[baseline] / cpu['esafety']:.3f} (the access-log shipper's CPU, another "
                        "process, is not included: tests/bench/bench_shipper.py)"))
    no_scan = res.get("esafety, no phrase scan")
    if no_scan:  # per-request cost at saturation (1 / throughput), split into add-ons and phrase scanning
        rows.append(row(bench, "add-on time per request, without phrase scanning",
                        1000 / no_scan["rps"] - 1000 / core["rps"], "ms", better="lower",
                        note=f"1/throughput of esafety with scan_for: [] minus that of {CORE}"))
        rows.append(row(bench, "phrase scanning time per request (12 KB)", 1000 / ours["rps"] - 1000 / no_scan["rps"],
                        "ms", better="lower", note="1/throughput of esafety minus that with scan_for: []"))
    for baseline, figures in ((BARE, bare), (CORE, core)):
        rows.append(row(bench, "p50 latency, 1 connection", ours["p50_ms"], "ms", peer=figures["p50_ms"],
                        peer_name=baseline, better="lower"))
        rows.append(row(bench, "p99 latency, 1 connection", ours["p99_ms"], "ms", peer=figures["p99_ms"],
                        peer_name=baseline, better="lower"))
    rows.append(row(bench, "p99 added by our add-ons", ours["p99_ms"] - core["p99_ms"], "ms", goal=("<", 2),
                    better="lower", note=f"esafety p99 minus {CORE} p99, one connection (median of 1 s "
                    f"windows; worst window: esafety {ours['worst_window_p99_ms']:.1f} ms, without add-ons "
                    f"{core['worst_window_p99_ms']:.1f} ms, stock mitmdump {bare['worst_window_p99_ms']:.1f} ms)"))
    for name in ("e2guardian", "squid"):
        if name in res:
            rows.append(row(bench, "p99 latency, 1 connection", ours["p99_ms"], "ms", peer=res[name]["p99_ms"],
                            peer_name=name, better="lower"))
    rows.append(row(bench, "p99 of the worst 1 s window, 1 connection", ours["worst_window_p99_ms"], "ms",
                    peer=bare["worst_window_p99_ms"], peer_name=BARE, better="lower",
                    note="median over rounds of each round's worst window: stalls that the median of windows hides"))
    rows.append(row(bench, "p99 latency, 16 connections", ours["loaded_p99_ms"], "ms",
                    peer=bare["loaded_p99_ms"], peer_name=BARE, better="lower"))
    if _workers_supported():
        notes.append("several workers (`--workers N`): see the proxy_scaling benchmark")
    else:
        rows.append(row(bench, "esafety 2 workers vs 1", "not available", "", note="`esafety run --workers` "
                        "does not exist yet"))
    notes.append(f"esafety access log recorded {logged:,} requests (logging was on)")
    notes.append("e2guardian: Debian default configuration (weighted phrase lists, no MITM), direct to the origin; "
                 "squid: no cache, no access log")
    return {"rows": rows, "notes": notes, "raw": res}
