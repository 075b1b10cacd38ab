"""Incident throughput and queue speed, on SQLite and PostgreSQL.

    python -m tests.bench.bench_incidents [--quick]

* ingest_batch_per_s: reports handed to BatchWriter (the proxy's path), stored, routed, chained
  and alerted (pipeline), per second. Goal >= 2,000/s.
* ingest_api_per_s: POST /api/incidents one at a time through the app (in-process client).
* queue_ms: the DSL queue page (first page, counts) with 100,000 incidents stored. Goal < 300 ms.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from esafety.incidents.model import IncidentReport
from esafety.incidents.pipeline import make_on_incidents
from esafety.policy.loader import load_policy
from esafety.store.db import upgrade
from esafety.store.models import Incident
from esafety.store.writer import BatchWriter

CATEGORIES = [("self_harm", "dsl", 4), ("vpn", "it_services", 2), ("gambling", "esafety_coordinator", 2),
              ("pornography", "dsl", 3), ("terrorism", "dsl", 5)]


def _stores(tmp: Path) -> dict[str, str]:
    from tests.conftest import _pg_available, make_pg_database

    stores = {"sqlite": f"sqlite:///{tmp / 'bench.db'}"}
    if _pg_available():
        stores["postgresql"] = make_pg_database()
    return stores


def bench_batch(url: str, tmp: Path, n: int) -> float:
    from tests.support.dsl import POLICY_PATH

    policy = load_policy(POLICY_PATH)
    writer = BatchWriter(url, tmp / f"spool-{abs(hash(url))}", lambda: policy, interval=0.05,
                         on_incidents=make_on_incidents(url, lambda: policy, "http://dash.test"))
    now = datetime.now(UTC)
    reports = [IncidentReport(source="proxy", category=c, level=lvl, summary="bench", subject=f"bench{i}",
                              evidence={"url": f"http://x.test/{i}"}, occurred_at=now)
               for i in range(n) for c, _, lvl in [CATEGORIES[i % len(CATEGORIES)]]]
    writer.start()
    t0 = time.perf_counter()
    for r in reports:
        writer.raise_incident(r)
    writer.flush(timeout=300)
    writer.stop()
    return n / (time.perf_counter() - t0)


def bench_api(url: str, tmp: Path, n: int) -> float:
    from fastapi.testclient import TestClient

    from dashboard.app import create_app
    from esafety.store.db import sessions
    from esafety.webauth import ApiToken, token_hash
    from tests.support.dsl import settings_for

    with sessions(url)() as s:
        s.add(ApiToken(name="bench", token_hash=token_hash("bench-token")))
        s.commit()
    client = TestClient(create_app(settings_for(url, tmp)))
    client.headers["Authorization"] = "Bearer bench-token"
    t0 = time.perf_counter()
    for i in range(n):
        r = client.post("/api/incidents", json={"source": "sensor", "category": "vpn", "level": 2,
                                                "summary": "bench", "client_ip": f"10.9.{i // 250}.{i % 250}"})
        assert r.status_code == 201, r.text
    return n / (time.perf_counter() - t0)


def fill(url: str, n: int) -> None:
    from esafety.store.db import sessions

    rnd = random.Random(7)
    start = datetime.now(UTC) - timedelta(days=60)
    with sessions(url)() as s:
        for lo in range(0, n, 10_000):
            rows = []
            for i in range(lo, min(n, lo + 10_000)):
                cat, queue, level = CATEGORIES[rnd.randrange(len(CATEGORIES))]
                at = start + timedelta(seconds=i * 50)
                rows.append({"key": f"fill-{i}", "ref": f"F{i:09d}", "source": "proxy", "subject": f"p{i % 900}",
                             "category": cat, "kcsie": "content", "level": level, "queue": queue,
                             "state": rnd.choice(("new", "new", "triage", "in_progress", "closed")),
                             "summary": "filler", "evidence": {"url": f"http://x.test/{i}"}, "count": 1,
                             "occurred_at": at, "last_seen_at": at, "created_at": at, "pipeline_done": True,
                             "escalations": 0})
            s.execute(insert(Incident), rows)
        s.commit()


def bench_queue(url: str, tmp: Path, n: int) -> dict[str, float]:
    from fastapi.testclient import TestClient

    from dashboard.app import create_app
    from tests.support.dsl import add_role_users, settings_for, signed_in

    fill(url, n)
    add_role_users(url)
    client: TestClient = signed_in(create_app(settings_for(url, tmp)), "dsl")
    out = {}
    for name, path in (("first_page", "/incidents"), ("page_100", "/incidents?page=100"),
                       ("filtered", "/incidents?level=4&category=self_harm&state=all"),
                       ("pupil", "/incidents?pupil=p17&state=all")):
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            r = client.get(path)
            times.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200
        out[name] = round(statistics.median(times), 1)
    return out


def run(quick: bool) -> dict[str, Any]:
    from tests.conftest import drop_pg_database

    n_ingest, n_api, n_queue = (2000, 200, 20_000) if quick else (10_000, 1000, 100_000)
    results: dict[str, Any] = {"incidents_in_queue": n_queue}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, url in _stores(tmp).items():
            try:
                upgrade(url)
                r = {"ingest_batch_per_s": round(bench_batch(url, tmp, n_ingest)),
                     "ingest_api_per_s": round(bench_api(url, tmp, n_api))}
                r["queue_ms"] = bench_queue(url, tmp, n_queue)
                r["ok"] = r["ingest_batch_per_s"] >= 2000 and r["queue_ms"]["first_page"] < 300
                results[name] = r
            finally:
                if name == "postgresql":
                    drop_pg_database(url)
    return results


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
