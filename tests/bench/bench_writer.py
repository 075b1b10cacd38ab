"""CPU the batch writer's thread spends per access-log row, on SQLite and PostgreSQL.

    python -m tests.bench.bench_writer [--quick]

The writer thread holds the GIL for its Python work, which the proxy's event loop then waits for;
this measures that work alone: BatchWriter._write_access over batches of 200 rows (what a 0.2 s
cycle sees at ~1,000 requests/s), rows built like proxy_addons/accesslog.py AccessLog._row does.

* {store}.cpu_us_per_row: thread CPU time (time.thread_time) per row, the store's own work in
  another process (PostgreSQL) not included; SQLite's C code runs in this thread, so it is (about
  half of it: the two indexes alone take ~3 us a row; sqlite3 lets go of the GIL while it steps).
* {store}.coreinsert_cpu_us_per_row: the same rows through a SQLAlchemy Core insert (the writer's
  former path), into a fresh store, for comparison.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from esafety.store.db import upgrade
from esafety.store.writer import BatchWriter

BATCH = 200
HOSTS = ["www.bbc.co.uk", "classroom.google.com", "fonts.gstatic.com", "static.xx.fbcdn.net",
         "en.wikipedia.org", "www.youtube.com", "login.microsoftonline.com", "cdn.jsdelivr.net"]


def make_rows(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        blocked = rnd.random() < 0.05
        rows.append({
            "ts": datetime.now(UTC), "ref": f"{rnd.getrandbits(48):012x}", "username": f"pupil{i % 400:03d}",
            "policy_group": "students", "device": f"LAPTOP-{i % 350:04d}" if i % 3 else None,
            "client_ip": f"10.20.{i % 7}.{i % 250 + 2}", "method": "GET" if i % 9 else "POST",
            "scheme": "https", "host": HOSTS[i % len(HOSTS)],
            "path": f"/assets/{rnd.getrandbits(32):08x}/app.js?v={i}", "status": 403 if blocked else 200,
            "bytes": rnd.randrange(200, 400_000), "action": "block" if blocked else "allow",
            "category": "gambling" if blocked else "education",
            "rule": "category:gambling" if blocked else "",
        })
    return rows


def measure(url: str, tmp: Path, n: int, core: bool = False) -> dict[str, float]:
    writer = BatchWriter(url, tmp / f"spool-{abs(hash(url))}", None, lambda: None)
    if core:
        writer._inserter._write = writer._inserter._write_core
    rows = make_rows(n)
    writer._write_access(rows[:BATCH])  # warm: engine, pool, statement caches
    rows = rows[BATCH:]
    t_cpu, t_proc, t_wall = time.thread_time(), time.process_time(), time.perf_counter()
    for i in range(0, len(rows), BATCH):
        assert writer._write_access(rows[i:i + BATCH])
    cpu, proc, wall = time.thread_time() - t_cpu, time.process_time() - t_proc, time.perf_counter() - t_wall
    k = 1e6 / len(rows)
    return {"cpu_us_per_row": round(cpu * k, 2), "process_us_per_row": round(proc * k, 2),
            "wall_us_per_row": round(wall * k, 2)}


def run(quick: bool = False) -> dict[str, Any]:
    from tests.conftest import _pg_available, drop_pg_database, make_pg_database

    n = 5_000 if quick else 20_000
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in ("sqlite", "postgresql") if _pg_available() else ("sqlite",):
            for core in (False, True):  # each into a fresh store: SQLite's cost grows with its indexes
                url = f"sqlite:///{tmp / f'bench-{core}.db'}" if name == "sqlite" else make_pg_database()
                try:
                    upgrade(url)
                    got = measure(url, tmp, n, core)
                finally:
                    if name == "postgresql":
                        drop_pg_database(url)
                if core:
                    out[name]["coreinsert_cpu_us_per_row"] = got["cpu_us_per_row"]
                else:
                    out[name] = got
    return out


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
