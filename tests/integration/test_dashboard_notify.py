"""Email: a real SMTP server receives the level-5 alert with no evidence; failures retried and
counted; an unacknowledged level 5 escalates down the on-call list."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from dashboard.app import create_app
from esafety.commands.users import create_user
from esafety.incidents import mailer, notify
from esafety.incidents.model import IncidentReport
from esafety.incidents.tables import IncidentEvent, NotificationOutbox
from esafety.policy.loader import load_policy
from esafety.store.db import sessions
from esafety.store.models import Incident
from esafety.store.writer import BatchWriter
from tests.conftest import free_port
from tests.support.dsl import POLICY_PATH, add_role_users, live_server, raise_incident, settings_for

EVIDENCE = "how-to-EVIDENCE-TEXT-7781"
PUPIL = "pupil-Jo-Bloggs"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]  # noqa: N802
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp():  # type: ignore[no-untyped-def]
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=free_port())
    ctl.start()
    yield ctl, inbox
    ctl.stop()


def _wait(pred, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_level_5_email_arrives_at_once_without_content(database_url: str, tmp_path: Path, smtp,  # type: ignore[no-untyped-def]
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ctl, inbox = smtp
    monkeypatch.setenv("ESAFETY_INCIDENT_WORKER_INTERVAL", "0.2")
    add_role_users(database_url)
    port = free_port()
    app = create_app(settings_for(database_url, tmp_path, smtp_port=ctl.port, dashboard_url=f"http://127.0.0.1:{port}"))
    policy = load_policy(POLICY_PATH)
    writer = BatchWriter(database_url, tmp_path / "spool", lambda: policy, interval=0.05)
    writer.start()
    with live_server(app, port):
        writer.raise_incident(IncidentReport(source="proxy", category="terrorism", level=5, subject=PUPIL,
                                             summary=f"visited {EVIDENCE}",
                                             evidence={"url": f"http://bad.test/{EVIDENCE}", "text": EVIDENCE}))
        writer.flush()
        assert _wait(lambda: len(inbox.messages) >= 2), "the DSL and deputy should both be emailed"
    writer.stop()
    with sessions(database_url)() as s:
        inc = s.scalars(select(Incident)).one()
    assert sorted(r for rcpt, _ in inbox.messages for r in rcpt) == ["deputy@school.test", "dsl@school.test"]
    for _, raw in inbox.messages:
        msg = message_from_bytes(raw)
        body = msg.get_payload(decode=True).decode()
        assert "Level:     5" in body and "Terrorist content" in body and "the web filter" in body
        assert f"http://127.0.0.1:{port}/incidents/{inc.id}" in body
        assert EVIDENCE not in raw.decode() and "bad.test" not in raw.decode() and PUPIL not in raw.decode()


def test_lower_levels_wait_for_the_digest(sqlite_url: str) -> None:
    add_role_users(sqlite_url)
    raise_incident(sqlite_url, category="pornography", level=3, evidence={"url": EVIDENCE})
    pol = load_policy(POLICY_PATH)
    with sessions(sqlite_url)() as s:
        assert s.scalars(select(NotificationOutbox)).all() == []  # nothing at once for level 3
        at_hour = datetime.now(UTC).replace(hour=pol.notifications.digest_hour + 1, minute=0)
        assert notify.digest(s, pol, "http://dash.test", now=at_hour) == 2
        assert notify.digest(s, pol, "http://dash.test", now=at_hour) == 0  # once a day
        s.commit()
        bodies = [m.body for m in s.scalars(select(NotificationOutbox))]
    assert all("Pornography" in b and EVIDENCE not in b for b in bodies)


def _failures() -> float:
    return sum(REGISTRY.get_sample_value("esafety_notification_failures_total", {"kind": k}) or 0
               for k in ("immediate", "escalation", "digest"))


def test_failed_sends_are_retried_and_counted(sqlite_url: str, smtp) -> None:  # type: ignore[no-untyped-def]
    ctl, inbox = smtp
    add_role_users(sqlite_url)
    raise_incident(sqlite_url, category="self_harm", level=4)
    factory = sessions(sqlite_url)
    before = _failures()
    dead_port = free_port()  # nothing listens here: the mail server is "down"
    assert mailer.send_due(factory, "127.0.0.1", dead_port, "esafety@school.test") == (0, 2)
    assert _failures() == before + 2
    with factory() as s:
        rows = s.scalars(select(NotificationOutbox)).all()
        assert {(r.status, r.attempts) for r in rows} == {("pending", 1)}
        assert all(r.last_error and r.next_attempt_at.replace(tzinfo=UTC) > datetime.now(UTC) for r in rows)
        assert mailer.send_due(factory, "127.0.0.1", ctl.port, "esafety@school.test") == (0, 0)  # backing off
        s.execute(update(NotificationOutbox).values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)))
        s.commit()
    assert mailer.send_due(factory, "127.0.0.1", ctl.port, "esafety@school.test") == (2, 0)
    assert len(inbox.messages) == 2


def test_unacknowledged_level_5_escalates_down_the_on_call_list(database_url: str) -> None:
    add_role_users(database_url)
    create_user(database_url, "head", "staff", ["slt"], email="head@school.test")
    base = load_policy(POLICY_PATH)
    pol = dataclasses.replace(base, notifications=dataclasses.replace(
        base.notifications, on_call=("head", "oncall-phone@school.test")))
    inc = raise_incident(database_url, category="csam", level=5)
    created = inc.created_at if inc.created_at.tzinfo else inc.created_at.replace(tzinfo=UTC)
    with sessions(database_url)() as s:
        assert notify.escalate(s, pol, "http://dash.test", now=created + timedelta(minutes=10)) == 0
        assert notify.escalate(s, pol, "http://dash.test", now=created + timedelta(minutes=16)) == 1
        assert notify.escalate(s, pol, "http://dash.test", now=created + timedelta(minutes=17)) == 0
        assert notify.escalate(s, pol, "http://dash.test", now=created + timedelta(minutes=31)) == 1
        s.commit()
        sent = [(m.kind, m.recipient) for m in s.scalars(select(NotificationOutbox).order_by(NotificationOutbox.id))]
        assert sent[-2:] == [("escalation", "head@school.test"), ("escalation", "oncall-phone@school.test")]
        steps = s.scalars(select(IncidentEvent.detail).where(IncidentEvent.action == "escalate")).all()
        assert [d["to"] for d in steps] == ["head", "oncall-phone@school.test"]
