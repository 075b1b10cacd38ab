"""Proxy scaling: requests/s of `esafety proxy --workers 2` (haproxy + 2 mitmdump) over `--workers 1`.

Same page, origin and load as bench_proxy (12 KB HTML from nginx, wrk, 16 keep-alive connections,
absolute-form requests, the full default policy with access logging on). haproxy balances by source
address, so the load must come from many addresses: a tiny LD_PRELOAD shim (compiled here with cc)
binds each of wrk's sockets to the next of 16 loopback addresses (127.0.0.x), chosen so that each
worker gets 8 of them (which worker an address lands on is found by probing the workers' metrics).
Both set-ups get the same 16 addresses. Rounds alternate the two; medians are reported.

Goal: 2 workers >= 1.7x one worker. Note that on a 2-core machine wrk, nginx and haproxy share the
two cores with the workers, so the goal there is out of reach by construction.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests.bench import bench_proxy
from tests.bench.bench_proxy import PAGE_SIZE, POLICY, start_nginx
from tests.bench.common import BENCH_DIR, Row, alternate, processes, row, say, spawn, tail, wait_port, which
from tests.conftest import free_ports

NAME = "proxy_scaling"
WORK = BENCH_DIR / "proxy-scaling"
ORIGIN_HOST = "localhost"
CONNECTIONS = 16

SHIM = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Bind each outgoing IPv4 socket to the next address of $BENCH_SOURCES (comma separated). */
static unsigned next_source;

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_connect)(int, const struct sockaddr *, socklen_t);
    if (!real_connect) real_connect = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    const char *list = getenv("BENCH_SOURCES");
    if (list && *list && addr && addr->sa_family == AF_INET) {
        int n = 1;
        for (const char *p = list; *p; p++) n += *p == ',';
        int want = (int)(__atomic_fetch_add(&next_source, 1, __ATOMIC_RELAXED) % (unsigned)n);
        const char *start = list;
        for (int i = 0; i < want; i++) start = strchr(start, ',') + 1;
        char ip[64];
        size_t k = strcspn(start, ",");
        if (k < sizeof ip) {
            memcpy(ip, start, k);
            ip[k] = 0;
            struct sockaddr_in src;
            memset(&src, 0, sizeof src);
            src.sin_family = AF_INET;
            if (inet_pton(AF_INET, ip, &src.sin_addr) == 1) bind(fd, (struct sockaddr *)&src, sizeof src);
        }
    }
    return real_connect(fd, addr, len);
}
"""


def build_shim() -> Path:
    cc = which("cc") or which("gcc")
    if not cc:
        raise RuntimeError("a C compiler (cc) is needed for the source-address shim")
    WORK.mkdir(parents=True, exist_ok=True)
    src, lib = WORK / "bindsrc.c", WORK / "bindsrc.so"
    src.write_text(SHIM)
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(src), "-ldl"], check=True,
                   capture_output=True, text=True)
    return lib


def start_esafety(procs: list[subprocess.Popen], workers: int, origin: int) -> dict[str, Any]:
    """`esafety proxy --workers N` in its own home; its port and the metrics ports of its workers."""
    from esafety.store.db import upgrade
    from tests.bench.common import free_port

    d = WORK / f"workers-{workers}"
    if d.exists():
        shutil.rmtree(d)
    home = d / "home"
    home.mkdir(parents=True)
    db = f"sqlite:///{home / 'esafety.db'}"
    upgrade(db)
    port, metrics = free_port(), free_ports(workers)
    env = {**os.environ, "ESAFETY_HOME": str(home), "ESAFETY_DATABASE_URL": db, "ESAFETY_POLICY": str(POLICY),
           "ESAFETY_DASHBOARD_URL": "http://dashboard.bench", "ESAFETY_PROXY_PORT": str(port),
           "ESAFETY_PROXY_WORKER_PORT": str(free_ports(workers)), "ESAFETY_PROXY_METRICS_PORT": str(metrics)}
    esafety = str(Path(sys.executable).with_name("esafety"))
    cmd = [esafety, "proxy", "--workers", str(workers), "--", *bench_proxy.local_origin(origin)]
    p = spawn(procs, cmd, d / "esafety.log", env=env, cwd=d)
    wait_port(port, p, timeout=120, what=f"esafety proxy --workers {workers}")
    return {"port": port, "metrics": [metrics + i for i in range(workers)], "log": d / "esafety.log"}


def _requests_total(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(m) for m in re.findall(r"^esafety_proxy_requests_total\{[^}]*\} (\S+)$", text, re.M))


def _get(port: int, url: str, source: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15, source_address=(source, 0))
    try:
        conn.request("GET", url)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200 or len(body) != PAGE_SIZE:
        raise RuntimeError(f"proxy on {port} answered {resp.status} with {len(body)} bytes from {source}")


def balanced_sources(proxy: dict[str, Any], url: str, per_worker: int) -> list[str]:
    """Loopback addresses, per_worker of them landing on each worker (interleaved)."""
    groups: list[list[str]] = [[] for _ in proxy["metrics"]]
    for i in range(10, 250):
        source = f"127.0.0.{i}"
        before = [_requests_total(m) for m in proxy["metrics"]]
        _get(proxy["port"], url, source)
        after = [_requests_total(m) for m in proxy["metrics"]]
        w = next(k for k in range(len(before)) if after[k] > before[k])
        if len(groups[w]) < per_worker:
            groups[w].append(source)
        if all(len(g) == per_worker for g in groups):
            return [s for pair in zip(*groups, strict=True) for s in pair]
    raise RuntimeError(f"could not find {per_worker} addresses per worker: {groups}")


def wrk(wrk_bin: str, shim: Path, sources: list[str], port: int, url: str, seconds: float) -> dict[str, float]:
    """bench_proxy's wrk run, each connection bound to one of `sources` by the LD_PRELOAD shim."""
    return bench_proxy.wrk(wrk_bin, port, url, url.split("/")[2], CONNECTIONS, seconds,
                           {"LD_PRELOAD": str(shim), "BENCH_SOURCES": ",".join(sources)})


def run(quick: bool) -> dict[str, Any]:
    rows: list[Row] = []
    notes: list[str] = []
    bench = "proxy scaling (12 KB HTML, HTTP, 16 connections)"
    wrk_bin, nginx_bin = which("wrk"), which("nginx")
    if not wrk_bin or not nginx_bin:
        raise RuntimeError("wrk and nginx are needed: scripts/install-system-deps.sh bench")
    rounds, seconds = (1, 3.0) if quick else (3, 8.0)
    WORK.mkdir(parents=True, exist_ok=True)
    shim = build_shim()
    with processes() as procs:
        origin = start_nginx(procs, nginx_bin)
        url = f"http://{ORIGIN_HOST}:{origin}/page.html"
        one, two = start_esafety(procs, 1, origin), start_esafety(procs, 2, origin)
        try:
            sources = balanced_sources(two, url, CONNECTIONS // 2)
        except (OSError, RuntimeError, StopIteration) as exc:
            raise RuntimeError(f"2 workers did not serve: {exc}\n{tail(two['log'])}") from exc
        for p in (one, two):  # warm-up
            wrk(wrk_bin, shim, sources, p["port"], url, 1)
        say(f"proxy_scaling: {rounds} round(s) of {seconds:.0f}s, 1 worker vs 2 workers, sources {sources[0]}...")
        res = alternate(rounds, {
            "1 worker": lambda: wrk(wrk_bin, shim, sources, one["port"], url, seconds),
            "2 workers": lambda: wrk(wrk_bin, shim, sources, two["port"], url, seconds),
        }, log=lambda m: say(f"proxy_scaling: {m}"))
        per_worker = [_requests_total(m) for m in two["metrics"]]
    a, b = res["1 worker"], res["2 workers"]
    rows.append(row(bench, "requests/s, 2 workers vs 1", b["rps"], "req/s", peer=a["rps"], peer_name="1 worker"))
    rows.append(row(bench, "throughput 2 workers / 1 worker", b["rps"] / a["rps"], "x", goal=(">=", 1.7)))
    rows.append(row(bench, "p99 latency, 16 connections", b["p99_ms"], "ms", peer=a["p99_ms"],
                    peer_name="1 worker", better="lower"))
    notes.append(f"2 workers: requests per worker over the whole run {', '.join(f'{n:,.0f}' for n in per_worker)} "
                 f"(balance source over {len(sources)} loopback addresses)")
    notes.append(f"{os.cpu_count()} CPUs shared by wrk, nginx, haproxy and the workers")
    return {"rows": rows, "notes": notes, "raw": res}
