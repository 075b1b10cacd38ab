"""The esafety runtime inside mitmdump: options, the compiled policy, identity, logs, metrics.

Other add-ons hold a reference to this one and read `engine`, `identity`, `access_log` (appended
here, stored by the access-log shipper, a child process) and `writer` (incidents). A reload
(policy file change, imported list change, or SIGHUP) compiles a new engine off the event loop and
swaps one reference: requests see the old policy or the new one, never half of each. A broken
file is rejected with its file:line errors and the running policy stays.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mitmproxy import ctx, exceptions

from esafety import jsonlog, metrics
from esafety.config import load_settings
from esafety.identity import IdentityResolver
from esafety.policy.engine import Engine, EngineError
from esafety.policy.loader import PolicyInvalid, load_policy
from esafety.store.journal import AppendLog
from esafety.store.shipper import ShipperProcess
from esafety.store.writer import BatchWriter

log = logging.getLogger("esafety.proxy")


class Runtime:
    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.identity: IdentityResolver | None = None
        self.writer: BatchWriter | None = None
        self.access_log: AppendLog | None = None
        self._shipper: ShipperProcess | None = None
        self._stop = threading.Event()
        self._reload_lock = threading.Lock()
        self._watch_sig = ""
        self._compiled_from: tuple[str, str] | None = None  # (policy, home) the engine was built from
        self.dashboard_url = load_settings().dashboard_url
        # Called with each newly compiled engine before it is swapped in: one that raises rejects
        # the reload, so a part the new policy breaks (an unreadable keytab) keeps the running one.
        self.prepare: list[Callable[[Engine], None]] = []

    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        s = load_settings()
        loader.add_option("esafety_policy", str, str(s.policy_path), "AUP policy file (YAML).")
        loader.add_option("esafety_home", str, str(s.home), "Folder for logs, spool, caches and imported lists.")
        loader.add_option("esafety_database_url", str, s.database_url, "SQLAlchemy URL of the store.")
        loader.add_option("esafety_metrics_port", int, s.proxy_metrics_port, "Prometheus metrics port (0: off).")
        loader.add_option("esafety_worker", str, "",
                          "Worker name under `esafety run --workers N`: its own spool folder and access log "
                          "(log/access-<name>.jsonl), so no two processes share a journal or a spool.")
        loader.add_option("esafety_intercept", bool, True,
                          "Decrypt TLS to inspect it; off: decide on the SNI alone for every host.")
        loader.add_option("esafety_reload_ms", int, 1000, "Milliseconds between checks for policy changes.")
        loader.add_option("esafety_fail_closed", bool, s.fail_closed,
                          "Block when deciding fails, for groups without their own on_error.")

    def configure(self, updated: set[str]) -> None:
        if "esafety_reload_ms" in updated and ctx.options.esafety_reload_ms <= 0:
            raise exceptions.OptionsError("esafety_reload_ms must be positive")
        if "esafety_metrics_port" in updated and not 0 <= ctx.options.esafety_metrics_port < 65536:
            raise exceptions.OptionsError("esafety_metrics_port must be a port number or 0")
        source = (ctx.options.esafety_policy, ctx.options.esafety_home)
        if source != self._compiled_from:  # not again for a configure that changed neither
            try:
                self.engine = self._compile()
            except (PolicyInvalid, EngineError, OSError) as exc:
                # At start-up there is no policy to keep: refuse to run unfiltered.
                raise exceptions.OptionsError(f"esafety policy rejected:\n{exc}") from exc
            self._compiled_from = source
            self._watch_sig = self._signature()
        if self.identity is None and self.engine is not None:  # here: sign-in checks its settings in configure
            self.identity = IdentityResolver(ctx.options.esafety_database_url, self.engine.policy.default_group)
        self._identity_settings()

    def _identity_settings(self) -> None:
        if self.identity and self.engine:
            self.identity.default_group = self.engine.policy.default_group
            self.identity.auth_ttl = self.engine.policy.identity.proxy_auth.cache_seconds

    @property
    def home(self) -> Path:
        return Path(ctx.options.esafety_home)

    def _compile(self) -> Engine:
        started = time.perf_counter()
        policy = load_policy(ctx.options.esafety_policy)
        engine = Engine.build(policy, self.home / "lists", self.home / "cache")
        for cat, n in engine.list_counts.items():
            metrics.POLICY_ENTRIES.labels(category=cat).set(n)
        metrics.POLICY_LOADED_TIMESTAMP.set(time.time())
        log.info("policy loaded", extra={"fields": {"policy": policy.source, "digest": policy.digest,
                                                    "domains": len(engine.index),
                                                    "seconds": round(time.perf_counter() - started, 3)}})
        return engine

    def reload(self, reason: str) -> bool:
        """Compile and swap in the policy; on any error keep the running one. Safe from any thread."""
        with self._reload_lock:
            try:
                engine = self._compile()
                for step in self.prepare:
                    step(engine)
            except Exception as exc:  # PolicyInvalid, EngineError, OSError, or a part's own
                metrics.POLICY_RELOADS.labels(result="failure").inc()
                errors = [str(e) for e in getattr(exc, "errors", [exc])]
                log.error("policy reload rejected; keeping the running policy",
                          extra={"fields": {"reason": reason, "errors": errors}})
                return False
            self.engine = engine
            self._identity_settings()
            metrics.POLICY_RELOADS.labels(result="success").inc()
            settle_gc()
            return True

    def _signature(self) -> str:
        paths = [Path(ctx.options.esafety_policy), self.home / "lists"]
        if self.engine:
            paths += [Path(f) for c in self.engine.policy.categories.values() for f in c.lists]
        sig = []
        for p in paths:
            try:
                st = p.stat()
                sig.append(f"{p}:{st.st_mtime_ns}:{st.st_size}")
                if p.is_dir():
                    sig.extend(f"{c}:{c.stat().st_mtime_ns}" for c in sorted(p.rglob("*")) if c.is_file())
            except OSError:
                sig.append(f"{p}:missing")
        return "|".join(sig)

    def _watch(self) -> None:
        while not self._stop.wait(ctx.options.esafety_reload_ms / 1000):
            sig = self._signature()
            if sig != self._watch_sig:
                self._watch_sig = sig
                self.reload("file changed")

    def running(self) -> None:
        jsonlog.setup()
        assert self.engine is not None
        url = ctx.options.esafety_database_url
        assert self.identity is not None
        try:  # once at start, not a refresh interval later: nobody signed in is filtered as a stranger
            self.identity.refresh()
        except Exception as exc:  # the store may be away: the background refresh keeps trying
            log.warning("identity tables not loaded at start", extra={"fields": {"error": str(exc)}})
        self.identity.start()
        worker = ctx.options.esafety_worker
        spool = self.home / "spool" / worker if worker else self.home / "spool"
        self.writer = BatchWriter(url, spool, policy=lambda: self.engine.policy if self.engine else None)
        self.writer.start()
        # One access log per process: its checkpoint counts this process's lines only.
        path = self.home / "log" / (f"access-{worker}.jsonl" if worker else "access.jsonl")
        self.access_log = AppendLog(path)
        self.access_log.open()
        self._shipper = ShipperProcess(path, url)
        self._shipper.start()
        metrics.ACCESS_LOG_BACKLOG.set_function(self._shipper.backlog_bytes)
        if ctx.options.esafety_metrics_port:
            from prometheus_client import start_http_server

            start_http_server(ctx.options.esafety_metrics_port, addr="0.0.0.0")
        threading.Thread(target=self._watch, name="policy-watch", daemon=True).start()
        try:
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: threading.Thread(target=self.reload, args=("SIGHUP",), daemon=True).start())
        except (RuntimeError, NotImplementedError, ValueError):
            log.warning("SIGHUP reload unavailable on this platform")
        settle_gc()

    def done(self) -> None:
        self._stop.set()
        if self.identity:
            self.identity.stop()
        if self.writer:
            self.writer.stop()
        if self.access_log:
            self.access_log.close()
        if self._shipper:
            self._shipper.stop()  # after it has stored every line written


def settle_gc() -> None:
    """Move what start-up (or a reload) built out of the cyclic collector's reach.

    mitmproxy, SQLAlchemy and the policy leave ~130k long-lived objects; without this every full
    collection walks them all, a ~100 ms pause of the event loop every few seconds under load
    (measured with gc.callbacks). Frozen objects are still freed by reference counting.
    """
    gc.collect()
    gc.freeze()
