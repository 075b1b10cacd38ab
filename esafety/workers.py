"""Several proxy workers behind haproxy (`esafety run|proxy --workers N`), supervised.

One mitmdump serves about one core. With N > 1 this starts N mitmdump workers on
127.0.0.1:proxy_worker_port+i (metrics on proxy_metrics_port+i) and haproxy on the public proxy
address in TCP mode. haproxy balances by source address (`balance source`, consistent hashing) so a
client's connections stay on one worker (its identity cache, incident de-duplication and tunnels),
and only the clients of a worker that goes down move; health checks take a dead worker out within
about two seconds and `option redispatch` retries a refused connection on another worker. haproxy
passes the client's address with the PROXY protocol (proxy_addons/proxyproto.py): without it every
pupil would be 127.0.0.1.

A worker that exits is restarted with exponential backoff. SIGTERM/SIGINT stop haproxy first (no
new connections), then send the workers SIGTERM so each one's incidents and access log reach the
store before it exits. Each worker has its own spool folder and access log (`esafety_worker`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from esafety.config import Settings

log = logging.getLogger("esafety.workers")

HAPROXY_PACKAGE = "haproxy"
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
STABLE_AFTER = 60.0  # a child that ran this long before exiting starts again from the first backoff
STOP_TIMEOUT = 20.0


class HaproxyMissing(RuntimeError):
    pass


def find_haproxy() -> str:
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None)
    if not found:
        raise HaproxyMissing(f"--workers N needs haproxy: install the Debian package `{HAPROXY_PACKAGE}` "
                             f"(apt-get install {HAPROXY_PACKAGE}), or run with --workers 1")
    return found


def _die_with_parent() -> None:
    """Children get SIGTERM if the supervisor itself dies (even by SIGKILL): no orphan workers."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    cmd: list[str]
    proc: subprocess.Popen | None = None
    started: float = 0.0
    backoff: float = BACKOFF_FIRST
    restart_at: float | None = None
    restarts: int = 0
    fields: dict[str, object] = field(default_factory=dict)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)  # noqa: PLW1509
        self.started = time.monotonic()
        self.restart_at = None
        log.info("proxy child started", extra={"fields": {"child": self.name, "pid": self.proc.pid, **self.fields}})

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    def __init__(self, settings: Settings, workers: int, worker_command: Callable[[int, int, list[str]], list[str]],
                 extra: list[str] | None = None, run_dir: Path | None = None):
        if workers < 2:
            raise ValueError("a supervisor is for 2 or more workers")
        self.settings = settings
        self.haproxy = find_haproxy()
        self.run_dir = run_dir or settings.home / "run"
        self.config_path = self.run_dir / "haproxy.cfg"
        self.workers = [
            Child(f"w{i}", worker_command(
                settings.proxy_worker_port + i, settings.proxy_metrics_port + i,
                ["--set", "esafety_proxy_protocol=true", "--set", f"esafety_worker=w{i}", *(extra or [])]),
                fields={"port": settings.proxy_worker_port + i, "metrics_port": settings.proxy_metrics_port + i})
            for i in range(workers)
        ]
        self.lb = Child("haproxy", [self.haproxy, "-db", "-f", str(self.config_path)],
                        fields={"listen": f"{settings.proxy_host}:{settings.proxy_port}"})
        self._lock = threading.Lock()
        self._stopping = False

    @property
    def metrics_ports(self) -> list[int]:
        return [int(w.fields["metrics_port"]) for w in self.workers]  # type: ignore[call-overload]

    def haproxy_config(self) -> str:
        s = self.settings
        servers = "\n".join(
            # send-proxy: the client's address for identity; check: TCP connect every second,
            # down after 2 failures, up after 1 success.
            f"    server {w.name} 127.0.0.1:{w.fields['port']} send-proxy check inter 1s fall 2 rise 1"
            for w in self.workers)
        return f"""# Written by esafety ({__name__}) at start; edits are overwritten.
global
    # no maxconn: haproxy derives it from the open-files limit it is given
    log stderr format raw local0 notice

defaults
    mode tcp
    log global
    option dontlognull
    timeout connect 5s
    # CONNECT tunnels and long polls: idle limits as generous as a direct connection's.
    timeout client 1h
    timeout server 1h
    timeout check 2s
    retries 3
    option redispatch

frontend esafety_proxy
    bind {s.proxy_host}:{s.proxy_port}
    default_backend esafety_workers

backend esafety_workers
    balance source
    hash-type consistent sdbm avalanche
{servers}
"""

    def start(self, ready_timeout: float = 120.0) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.haproxy_config())
        check = subprocess.run([self.haproxy, "-c", "-q", "-f", str(self.config_path)], capture_output=True, text=True)
        if check.returncode != 0:  # a bad config would fail the same way on every restart
            raise RuntimeError(f"haproxy rejects {self.config_path}: {(check.stdout + check.stderr).strip()[-500:]}")
        for w in self.workers:
            w.start()
        # haproxy last: clients reach it only once some worker listens.
        deadline = time.monotonic() + ready_timeout
        for w in self.workers:
            while not _listening(int(w.fields["port"])):  # type: ignore[call-overload]
                if not w.alive():
                    raise RuntimeError(f"proxy worker {w.name} exited during start-up")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"proxy worker {w.name} did not listen within {ready_timeout:.0f}s")
                time.sleep(0.2)
        self.lb.start()

    def tick(self) -> None:
        """Restart children that exited, each after its backoff. Call it every fraction of a second."""
        with self._lock:
            if self._stopping:
                return
            now = time.monotonic()
            for c in (*self.workers, self.lb):
                if c.proc is None or c.alive():
                    continue
                if c.restart_at is None:
                    ran = now - c.started
                    if ran >= STABLE_AFTER:
                        c.backoff = BACKOFF_FIRST
                    c.restart_at = now + c.backoff
                    log.warning("proxy child exited; restarting", extra={"fields": {
                        "child": c.name, "pid": c.proc.pid, "returncode": c.proc.returncode,
                        "ran_seconds": round(ran, 1), "restart_in_seconds": c.backoff, **c.fields}})
                    c.backoff = min(c.backoff * 2, BACKOFF_MAX)
                elif now >= c.restart_at:
                    c.restarts += 1
                    c.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        # No new connections first, then let every worker store what its access log holds.
        for c in (self.lb, *self.workers):
            if c.alive():
                c.proc.terminate()  # type: ignore[union-attr]
        deadline = time.monotonic() + STOP_TIMEOUT
        for c in (self.lb, *self.workers):
            if c.proc is None:
                continue
            try:
                c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("proxy child did not stop; killing it", extra={"fields": {"child": c.name}})
                c.proc.kill()
                c.proc.wait()
        log.info("proxy workers stopped")

    def describe(self) -> str:
        s = self.settings
        lines = [f"Proxy:     {s.proxy_host}:{s.proxy_port} (haproxy, balance source) -> {len(self.workers)} workers"]
        lines += [f"  worker {w.name}: 127.0.0.1:{w.fields['port']}  metrics :{w.fields['metrics_port']}"
                  for w in self.workers]
        lines.append(f"  metrics ports: {', '.join(map(str, self.metrics_ports))}")
        return "\n".join(lines)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def serve(sup: Supervisor, also: list[subprocess.Popen] | None = None) -> int:
    """Run until SIGTERM/SIGINT (or one of `also` exits), restarting workers; then stop cleanly."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        sup.start()
        print(sup.describe(), flush=True)
        while not stop.wait(0.2):
            sup.tick()
            if also and any(p.poll() is not None for p in also):
                break
    except RuntimeError as exc:
        log.error("proxy workers failed to start", extra={"fields": {"error": str(exc)}})
        return 1
    finally:
        sup.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
