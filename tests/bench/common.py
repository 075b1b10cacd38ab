"""Helpers shared by the benchmark modules: result rows, rounds, medians, ports and peer processes.

A benchmark module `tests/bench/bench_<name>.py` exposes `run(quick: bool) -> dict` returning
`{"rows": [row(...), ...], "notes": [...]}`; `row()` fills in the ratio and whether the goal was met.
Nothing here judges speed in CI: the harness only prints and records.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
BENCH_DIR = ROOT / "var" / "bench"

Row = dict[str, Any]

_OPS = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
}


def fmt_num(v: object) -> str:
    """Human-sized number: thousands separators for big values, 3 significant digits for small ones."""
    if v is None or v == "":
        return "-"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if v != v:  # NaN
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1 or a == 0:
        return f"{v:.2f}"
    return f"{v:.3g}"


def row(benchmark: str, metric: str, ours: float | str | None, unit: str, *, peer: float | None = None,
        peer_name: str = "", goal: tuple[str, float] | None = None, better: str = "higher",
        note: str = "") -> Row:
    """One line of the results table. goal is (operator, threshold) on `ours`, e.g. (">=", 300_000).

    better ('higher' | 'lower') says which way is good; bench-compare uses it to call regressions.
    ratio is always ours / peer.
    """
    ratio = None
    if isinstance(ours, int | float) and isinstance(peer, int | float) and peer:
        ratio = round(ours / peer, 3)
    met = None
    goal_text = ""
    if goal is not None:
        op, threshold = goal
        goal_text = f"{op} {fmt_num(threshold)}"
        met = bool(_OPS[op](ours, threshold)) if isinstance(ours, int | float) else False
    return {"benchmark": benchmark, "metric": metric, "ours": _round(ours), "peer": _round(peer),
            "peer_name": peer_name, "ratio": ratio, "unit": unit, "goal": goal_text, "met": met,
            "better": better, "note": note}


def _round(v: float | str | None) -> float | str | None:
    if isinstance(v, float):
        return float(f"{v:.6g}")
    return v


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of already-sorted values."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def alternate(rounds: int, contenders: dict[str, Callable[[], dict[str, float]]],
              log: Callable[[str], None] | None = None) -> dict[str, dict[str, float]]:
    """Run the contenders A B A B ... for `rounds` rounds; per contender, the median of each figure."""
    seen: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    for r in range(rounds):
        for name, fn in contenders.items():
            figures = fn()
            seen[name].append(figures)
            if log:
                log(f"round {r + 1}/{rounds} {name}: " + ", ".join(f"{k}={fmt_num(v)}" for k, v in figures.items()))
    return {name: {k: median([f[k] for f in runs if k in f]) for k in runs[0]} if runs else {}
            for name, runs in seen.items()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def say(msg: str) -> None:
    """Progress goes to stderr so stdout stays the table."""
    import sys

    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what or 'process'} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what or 'process'} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def which(name: str, *extra_dirs: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in (*extra_dirs, "/usr/sbin", "/sbin", "/usr/bin"):
        p = Path(d) / name
        if p.exists():
            return str(p)
    return None


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident set size of a process in KiB: VmRSS now, or VmHWM, its peak.

    VmHWM, not getrusage's ru_maxrss: on Linux a child inherits its parent's ru_maxrss across
    fork and exec, so a probe started from a big benchmark process would report the parent's peak.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def stop(proc: subprocess.Popen, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Stop a process we started (its own process group when it has one), escalating to SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen]]:
    """Collects the processes a benchmark starts and stops every one of them on the way out."""
    procs: list[subprocess.Popen] = []
    try:
        yield procs
    finally:
        for p in reversed(procs):
            stop(p)


def spawn(procs: list[subprocess.Popen], cmd: list[str], log_path: Path, **kw: Any) -> subprocess.Popen:
    """Start a peer in its own process group (so stopping it takes its children too), logging to a file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, **kw)
    procs.append(p)
    return p


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
