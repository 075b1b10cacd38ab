"""Pattern escalation, routing into the queue, and CSV-injection-safe exports."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from esafety.incidents import actions
from esafety.incidents.csvexport import incident_csv, safe_cell
from esafety.incidents.queries import QueueFilter, queue_page
from esafety.incidents.tables import IncidentLink
from esafety.store.db import sessions
from esafety.store.models import Incident
from tests.support.dsl import raise_incident


def test_three_low_level_incidents_in_a_week_raise_a_level_4(database_url: str) -> None:
    # Separate sources so they are separate incidents, not one burst.
    for i, source in enumerate(("proxy", "agent", "sensor")):
        raise_incident(database_url, category="gambling", level=2, subject="pupil7", source=source, key=f"gamb-{i}")
    with sessions(database_url)() as s:
        pattern = s.scalars(select(Incident).where(Incident.source == "pattern")).all()
        assert len(pattern) == 1
        p = pattern[0]
        assert (p.subject, p.category, p.level) == ("pupil7", "gambling", 4)
        assert p.queue == "esafety_coordinator"  # routed by the policy like any other incident
        assert s.scalar(select(IncidentLink.id).where(IncidentLink.b_id == p.id)) is not None
    # A fourth one in the same window does not raise a second pattern incident.
    raise_incident(database_url, category="gambling", level=2, subject="pupil7", source="staff", key="gamb-4")
    with sessions(database_url)() as s:
        assert len(s.scalars(select(Incident).where(Incident.source == "pattern")).all()) == 1


def test_other_pupils_and_categories_do_not_combine(sqlite_url: str) -> None:
    raise_incident(sqlite_url, category="gambling", level=2, subject="a", source="proxy")
    raise_incident(sqlite_url, category="gambling", level=2, subject="b", source="agent")
    raise_incident(sqlite_url, category="games", level=2, subject="a", source="sensor")
    with sessions(sqlite_url)() as s:
        assert s.scalars(select(Incident).where(Incident.source == "pattern")).all() == []


def test_ingested_incidents_reach_the_queue_sorted_by_level_then_age(sqlite_url: str) -> None:
    low = raise_incident(sqlite_url, category="pornography", level=3, subject="x")
    high = raise_incident(sqlite_url, category="terrorism", level=5, subject="y")
    it = raise_incident(sqlite_url, category="vpn", level=2, subject="z")
    with sessions(sqlite_url)() as s:
        page = queue_page(s, QueueFilter(), frozenset({"dsl", "it_services", "esafety_coordinator"}), None)
        assert [i.id for i in page.rows] == [high.id, low.id, it.id]
        assert page.unacknowledged == 3
        it_only = queue_page(s, QueueFilter(), frozenset({"it_services"}), None)
        assert [i.id for i in it_only.rows] == [it.id]
        # Overdue: a level-5 incident older than 15 minutes and unacknowledged.
        s.get(Incident, high.id).created_at = datetime.now(UTC) - timedelta(minutes=20)  # type: ignore[union-attr]
        s.commit()
        assert queue_page(s, QueueFilter(), frozenset({"dsl"}), None).overdue == 1
        actions.transition(s, high.id, actions.Actor("d", frozenset({"dsl"})), "acknowledge")
        s.commit()
        assert queue_page(s, QueueFilter(), frozenset({"dsl"}), None).overdue == 0


def test_csv_cells_cannot_become_formulas() -> None:
    for hostile in ("=HYPERLINK(\"http://evil\")", "+1+1", "-2", "@SUM(A1)", "\t=1", "\uff1d1"):
        assert safe_cell(hostile).startswith("'")
    assert safe_cell("http://ok.test/=x") == "http://ok.test/=x"


def test_incident_export_escapes_evidence(sqlite_url: str) -> None:
    inc = raise_incident(sqlite_url, category="vpn", level=2, summary="=cmd|' /C calc'!A0", subject="@pupil")
    with sessions(sqlite_url)() as s:
        body = incident_csv(s.get(Incident, inc.id), [])  # type: ignore[arg-type]
    fields = dict(r for r in csv.reader(io.StringIO(body)) if len(r) == 2)
    assert fields["summary"] == "'=cmd|' /C calc'!A0"
    assert fields["pupil"] == "'@pupil"
