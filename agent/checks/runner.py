"""Run the catalogue's checks for this platform: in parallel, each timed and bounded, none able to
stop the others (a check that raises or hangs reports `error`)."""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.checks.base import (
    Check,
    CommandFailed,
    CommandMissing,
    CommandTimeout,
    Ctx,
    Host,
    Iface,
    Listener,
    Proc,
    Result,
    error,
)
from esafety.compliance.catalogue import CATALOGUE

GRACE_SECONDS = 2.0  # beyond the per-command timeout, for the Python around it


@dataclass(frozen=True, slots=True)
class Outcome:
    id: str
    status: str
    evidence: dict[str, Any]
    duration_ms: int
    checked_at: datetime

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "evidence": self.evidence, "duration_ms": self.duration_ms,
                "checked_at": self.checked_at.isoformat()}


def platform_checks(platform: str) -> dict[str, Check]:
    return importlib.import_module(f"agent.checks.{platform}").CHECKS  # type: ignore[no-any-return]


def check_ids(platform: str) -> list[str]:
    available = platform_checks(platform)
    return [c.id for c in CATALOGUE if platform in c.platforms and c.id in available]


class RunHost:
    """One run's view of the host: the process, socket and interface lists are read once and shared."""

    def __init__(self, host: Host):
        self._host = host
        self.platform = host.platform
        self._lock = threading.Lock()
        self._memo: dict[str, Any] = {}

    def _once(self, key: str, read: Any) -> Any:
        with self._lock:
            if key not in self._memo:
                self._memo[key] = read()
            return self._memo[key]

    def processes(self) -> list[Proc]:
        return self._once("processes", self._host.processes)  # type: ignore[no-any-return]

    def listeners(self) -> list[Listener]:
        return self._once("listeners", self._host.listeners)  # type: ignore[no-any-return]

    def interfaces(self) -> list[Iface]:
        return self._once("interfaces", self._host.interfaces)  # type: ignore[no-any-return]

    def run(self, argv: Sequence[str], timeout: float, ok_codes: Sequence[int] = (0,)) -> str:
        return self._host.run(argv, timeout, ok_codes)

    def read(self, path: str) -> str | None:
        return self._host.read(path)

    def listdir(self, path: str) -> list[str]:
        return self._host.listdir(path)

    def mtime(self, path: str) -> float | None:
        return self._host.mtime(path)


def _guarded(check: Check, ctx: Ctx) -> Result:
    try:
        return check(ctx)
    except (CommandMissing, CommandTimeout, CommandFailed) as exc:
        return error(str(exc))
    except Exception as exc:  # a bug in one check must not cost the device its other results
        return error(f"{type(exc).__name__}: {exc}"[:500])


def run_checks(ctx: Ctx, only: Iterable[str] | None = None) -> list[Outcome]:
    checks = platform_checks(ctx.host.platform)
    ids = [i for i in check_ids(ctx.host.platform) if only is None or i in set(only)]
    ctx = Ctx(RunHost(ctx.host), ctx.settings, ctx.monitor)
    results: dict[str, tuple[Result, int, datetime]] = {}

    def work(cid: str) -> None:
        started, t0 = datetime.now(UTC), time.perf_counter()
        res = _guarded(checks[cid], ctx)
        results[cid] = (res, int((time.perf_counter() - t0) * 1000), started)

    threads = {cid: threading.Thread(target=work, args=(cid,), name=f"check-{cid}", daemon=True) for cid in ids}
    for t in threads.values():
        t.start()
    deadline = time.monotonic() + ctx.timeout + GRACE_SECONDS
    begun = datetime.now(UTC)
    out = []
    for cid, t in threads.items():
        t.join(max(0.0, deadline - time.monotonic()))
        if cid in results:
            res, ms, at = results[cid]
        else:  # still running: reported, and left to finish on its daemon thread
            res, ms, at = error(f"the check took longer than {ctx.timeout:g} s"), int(
                (ctx.timeout + GRACE_SECONDS) * 1000), begun
        out.append(Outcome(cid, res.status, _sorted(res.evidence), ms, at))
    return out


def _sorted(evidence: dict[str, Any]) -> dict[str, Any]:
    """Stable key order, so an unchanged result compares equal and is not sent as a diff."""
    return {k: evidence[k] for k in sorted(evidence)}
