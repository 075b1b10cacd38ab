"""The endpoint agent's footprint on this machine: a full check run, its memory, and idle CPU.

    python -m tests.bench.bench_agent [--quick]

* cold run: `esafety agent check --json` as a new process (imports, the apt solver's first answer).
* warm run: the second run inside one agent process, as `esafety agent run` does every interval
  (apt's answer is reused until the package state changes). Goal < 1 s.
* peak RSS of the agent process (Goal < 50 MB), and of the OS commands it runs (apt-get), apart.
* idle CPU: `esafety agent run` between check runs (heartbeats only), as a share of one core.
No peer: Debian packages no endpoint compliance agent (osquery, Wazuh agent) to run beside it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.common import cpu_seconds, row

ESAFETY = str(Path(sys.executable).with_name("esafety"))
WARM = """
import json, resource, time
from agent.checks.base import Ctx, Settings
from agent.checks.host import LocalHost
from agent.checks.runner import run_checks
from agent.monitor import Monitor
ctx = Ctx(LocalHost(), Settings(), Monitor())
run_checks(ctx)
times = []
for _ in range(ROUNDS):
    t0 = time.perf_counter(); run_checks(ctx); times.append(time.perf_counter() - t0)
print(json.dumps({"times": times, "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "children_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def _cold() -> float:
    t0 = time.perf_counter()
    subprocess.run([ESAFETY, "agent", "check", "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _idle_cpu(seconds: float) -> float:
    """CPU share of `esafety agent run` with a 5 s heartbeat and checks every 15 min, server unreachable."""
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "credential.json"
        state.write_text(json.dumps({"server": "http://127.0.0.1:9", "device_id": "bench", "credential": "x",
                                     "heartbeat_seconds": 5, "check_seconds": 900}))
        os.chmod(state, 0o600)
        proc = subprocess.Popen([ESAFETY, "agent", "run", "--state", str(state)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            time.sleep(3.5)  # start-up and the first (snapshot) check run are not "between runs"
            before = cpu_seconds(proc.pid)
            time.sleep(seconds)
            return (cpu_seconds(proc.pid) - before) / seconds
        finally:
            proc.terminate()
            proc.wait(timeout=15)


def run(quick: bool) -> dict[str, Any]:
    rounds = 3 if quick else 10
    colds = [_cold() for _ in range(1 if quick else 3)]
    out = subprocess.run([sys.executable, "-c", WARM.replace("ROUNDS", str(rounds))], capture_output=True, text=True,
                         check=True)
    warm = json.loads(out.stdout.strip().splitlines()[-1])
    warm_s = statistics.median(warm["times"])
    idle = _idle_cpu(4 if quick else 30)
    rows = [
        row("agent", "full check run (warm, median)", warm_s, "s", goal=("<", 1.0), better="lower"),
        row("agent", "full check run (cold process)", statistics.median(colds), "s", better="lower",
            note="includes interpreter start and apt's dependency solver (cached after)"),
        row("agent", "peak RSS of the agent", warm["rss_kb"] / 1024, "MB", goal=("<", 50), better="lower"),
        row("agent", "peak RSS of a command it runs", warm["children_rss_kb"] / 1024, "MB", better="lower",
            note="apt-get's solver, for a moment, once per change of the package state"),
        row("agent", "idle CPU between runs", idle * 100, "% of a core", goal=("<", 1.0), better="lower"),
    ]
    return {"rows": rows}


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=1))
