"""The DSL's whole review in headless Chromium: sign in, acknowledge, note, level, close, reopen."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy import select

from dashboard.app import create_app
from esafety.incidents.audit import verify
from esafety.incidents.tables import IncidentEvent
from esafety.store.db import sessions
from tests.conftest import ROOT, free_port
from tests.support.dsl import PASSWORD, add_role_users, live_server, raise_incident, settings_for

pytestmark = pytest.mark.browser
OUT = ROOT / "test-output"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


def _act(page: Page, form: str) -> None:
    page.locator(f"{form} button[type=submit]").click()
    page.wait_for_load_state()


def test_dsl_reviews_an_incident_end_to_end(database_url: str, tmp_path: Path) -> None:
    add_role_users(database_url)
    hostile = "http://bad.test/<script>document.title='pwned'</script>"
    inc = raise_incident(database_url, category="extremism", level=4, subject="pupil42",
                         evidence={"url": hostile, "search": "how to join"})
    raise_incident(database_url, category="vpn", level=2, subject="pupil43")
    port = free_port()
    app = create_app(settings_for(database_url, tmp_path, dashboard_url=f"http://127.0.0.1:{port}"))
    OUT.mkdir(exist_ok=True)
    with live_server(app, port) as srv, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{srv.url}/incidents")
        expect(page).to_have_url(f"{srv.url}/login?next=%2Fincidents")
        page.fill("#username", "dsl")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        expect(page.locator("h1")).to_have_text("Incident queue")
        expect(page.locator("#count-unack")).to_have_text("2 unacknowledged")
        rows = page.locator("#queue tbody tr")
        expect(rows).to_have_count(2)
        expect(rows.first).to_contain_text(inc.ref)  # level 4 above level 2
        page.screenshot(path=str(OUT / "dsl-queue.png"), full_page=True)

        page.click(f"text={inc.ref}")
        expect(page.locator("#state")).to_have_text("new")
        expect(page.locator("#evidence-fields")).to_contain_text("<script>document.title='pwned'</script>")
        assert page.title() != "pwned"  # shown as text, never run

        _act(page, "#do-acknowledge")
        expect(page.locator("#state")).to_have_text("triage")
        page.fill("#note-text", "Spoke to pupil42 with their head of year; parents informed.")
        _act(page, "#add-note")
        expect(page.locator("#notes")).to_contain_text("parents informed")
        page.select_option("#set-level select[name=level]", "5")
        page.fill("#set-level input[name=reason]", "pupil disclosed contact with a recruiter")
        _act(page, "#set-level")
        expect(page.locator("#level")).to_have_text("5")
        page.select_option("#do-close select[name=outcome]", "prevent")
        _act(page, "#do-close")
        expect(page.locator("#state")).to_have_text("closed")
        expect(page.locator("#outcome")).to_have_text("Prevent")
        page.fill("#do-reopen input[name=reason]", "a second disclosure from a friend")
        _act(page, "#do-reopen")
        expect(page.locator("#state")).to_have_text("in_progress")
        expect(page.locator("#history")).to_contain_text("a second disclosure from a friend")
        page.screenshot(path=str(OUT / "dsl-incident.png"), full_page=True)

        page.click("text=pupil42")
        expect(page.locator("#subject")).to_have_text("pupil42")
        expect(page.locator("#chronology")).to_contain_text("parents informed")
        browser.close()

    with sessions(database_url)() as s:
        actions = list(s.scalars(select(IncidentEvent.action).where(IncidentEvent.incident_id == inc.id)
                                 .order_by(IncidentEvent.seq)))
        assert [a for a in actions if a != "view"] == ["raised", "acknowledge", "note", "level", "close", "reopen"]
        assert verify(s).ok
    assert (OUT / "dsl-queue.png").stat().st_size > 5000 and (OUT / "dsl-incident.png").stat().st_size > 5000
