"""The hash-chained history: every action chained; tampering found by `esafety audit verify`."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, text, update

from esafety.cli import main
from esafety.incidents import actions
from esafety.incidents.audit import verify
from esafety.incidents.tables import IncidentEvent
from esafety.store.db import sessions
from esafety.store.models import Incident
from tests.support.dsl import raise_incident

DSL = actions.Actor("dsl", frozenset({"dsl"}))


def _work(url: str) -> int:
    inc = raise_incident(url, category="self_harm", level=4)
    with sessions(url)() as s:
        actions.view(s, inc.id, DSL)
        actions.transition(s, inc.id, DSL, "acknowledge")
        actions.add_note(s, inc.id, DSL, "Spoke to the pupil's form tutor.")
        actions.set_level(s, inc.id, DSL, 5, "disclosure")
        actions.transition(s, inc.id, DSL, "close", outcome="pastoral")
        actions.transition(s, inc.id, DSL, "reopen", reason="second disclosure")
        s.commit()
    return inc.id


def test_every_action_is_a_chained_event(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    inc_id = _work(database_url)
    with sessions(database_url)() as s:
        evs = list(s.scalars(select(IncidentEvent).where(IncidentEvent.incident_id == inc_id)
                             .order_by(IncidentEvent.seq)))
        assert [e.action for e in evs] == ["raised", "view", "acknowledge", "note", "level", "close", "reopen"]
        assert all(b.prev_hash == a.hash for a, b in zip(evs, evs[1:], strict=False))
        assert verify(s).ok
    assert main(["audit", "verify", "--database-url", database_url]) == 0
    assert "audit chain OK: 7 events" in capsys.readouterr().out


def test_tampering_with_one_event_is_found(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    inc_id = _work(database_url)
    with sessions(database_url)() as s:
        note = s.scalars(select(IncidentEvent).where(IncidentEvent.incident_id == inc_id,
                                                     IncidentEvent.action == "note")).one()
        # Someone with database access rewrites the note (the JSON column, as raw SQL would).
        s.execute(update(IncidentEvent).where(IncidentEvent.id == note.id)
                  .values(detail={"text": "Nothing to worry about."}))
        s.commit()
    assert main(["audit", "verify", "--database-url", database_url]) == 1
    out = capsys.readouterr().out
    assert f"event seq {note.seq} (id {note.id}): contents altered (note by dsl)" in out


def test_deleted_events_and_edited_evidence_are_found(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    inc_id = _work(database_url)
    with sessions(database_url)() as s:
        s.execute(update(Incident).where(Incident.id == inc_id).values(evidence={"url": "http://harmless.test/"}))
        s.commit()
        problem = verify(s).problem
        assert problem is not None and "evidence of incident" in problem.what
        last = s.scalar(select(IncidentEvent.seq).order_by(IncidentEvent.seq.desc()).limit(1))
        s.execute(delete(IncidentEvent).where(IncidentEvent.seq == last - 2))
        s.commit()
    assert main(["audit", "verify", "--database-url", database_url]) == 1
    assert f"seq {last - 2}: missing" in capsys.readouterr().out


def test_history_survives_concurrent_writers(sqlite_url: str) -> None:
    """Two threads acting at once must not fork the chain (the head row serialises them)."""
    import threading

    ids = [raise_incident(sqlite_url, subject=f"p{i}").id for i in range(2)]

    def worker(inc_id: int) -> None:
        for n in range(15):
            with sessions(sqlite_url)() as s:
                actions.add_note(s, inc_id, DSL, f"note {n}")
                s.commit()

    threads = [threading.Thread(target=worker, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with sessions(sqlite_url)() as s:
        assert s.scalar(text("SELECT count(*) FROM incident_events WHERE action = 'note'")) == 30
        assert verify(s).ok
