"""The access-log shipper: how fast it stores a proxy's access log, and the CPU it spends a row.

    python -m tests.bench.bench_shipper [--quick]

Lines are journaled as proxy_addons/accesslog.py writes them, then one Shipper.ship() stores them
all (batches of 2,000 rows, a checkpoint after each), on SQLite and on PostgreSQL:

* {store}.rows_per_second: wall-clock rate; the proxy must not outrun it for long (a backlog is
  only a delay: the journal keeps the lines).
* {store}.cpu_us_per_row: the shipper's CPU per row (time.process_time: JSON parsing, the driver,
  SQLite's own work; PostgreSQL's server work is another process and not included). The shipper
  is its own process, so this CPU is taken from the machine, never from the proxy's event loop.
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
from esafety.store.shipper import Shipper
from proxy_addons.accesslog import encode

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


def measure(url: str, journal: Path, n: int) -> dict[str, float]:
    journal.write_bytes(b"".join(encode(r) for r in make_rows(n)))
    shipper = Shipper(journal, url)
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    stored = shipper.ship()
    cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
    shipper.close()
    if stored != n:
        raise RuntimeError(f"the shipper stored {stored} of {n} rows")
    return {"rows_per_second": round(n / wall), "cpu_us_per_row": round(cpu * 1e6 / n, 2)}


def run(quick: bool = False) -> dict[str, Any]:
    from tests.conftest import _pg_available, drop_pg_database, make_pg_database

    n = 20_000 if quick else 100_000
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in ("sqlite", "postgresql") if _pg_available() else ("sqlite",):
            url = f"sqlite:///{tmp / 'bench.db'}" if name == "sqlite" else make_pg_database()
            try:
                upgrade(url)
                out[name] = measure(url, tmp / f"access-{name}.jsonl", n)
            finally:
                if name == "postgresql":
                    drop_pg_database(url)
    return out


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
