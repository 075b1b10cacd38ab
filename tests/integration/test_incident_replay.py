"""A spool replayed after a database outage stores nothing twice, bursts included (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from esafety.incidents.ingest import ingest
from esafety.incidents.model import IncidentReport
from esafety.policy.loader import load_policy
from esafety.store.db import sessions, upgrade
from esafety.store.models import Incident


def test_replaying_a_batch_with_merged_bursts_counts_each_report_once(database_url: str):
    upgrade(database_url)
    policy = load_policy(Path(__file__).resolve().parents[2] / "policies" / "aup.yaml")
    t0 = datetime(2026, 11, 18, 10, 0, tzinfo=UTC)
    burst = [IncidentReport("proxy", "vpn", 2, "VPN site blocked", subject="jsmith",
                            evidence={"url": f"https://nordvpn.com/{i}"}, occurred_at=t0 + timedelta(seconds=i))
             for i in range(5)]
    other = IncidentReport("proxy", "self_harm", 4, "search", subject="akhan", occurred_at=t0)
    batch = [*burst, other]
    spooled = [IncidentReport.from_json(r.to_json()) for r in batch]  # as the writer's spool holds them

    Session = sessions(database_url)
    with Session() as s:
        assert len(ingest(s, batch, policy)) == 2
        s.commit()
    for _ in range(2):  # the replay, and a second replay after a crash mid-replay
        with Session() as s:
            assert ingest(s, spooled, policy) == []
            s.commit()

    with Session() as s:
        assert s.scalar(select(func.count()).select_from(Incident)) == 2
        vpn = s.scalars(select(Incident).where(Incident.category == "vpn")).one()
        assert vpn.count == 5 and vpn.queue == "it_services"
        assert s.scalars(select(Incident).where(Incident.category == "self_harm")).one().queue == "dsl"
