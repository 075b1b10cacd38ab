"""IT's devices pages in headless Chromium: make an enrolment token (shown once), see an enrolled
device fail a check, and grant a time-boxed exception approved by a named person."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from dashboard.app import create_app
from tests.conftest import ROOT, free_port
from tests.support import devices as dev
from tests.support.dsl import PASSWORD, add_role_users, live_server

pytestmark = pytest.mark.browser
OUT = ROOT / "test-output"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


def test_it_enrols_a_device_and_grants_an_exception(sqlite_url: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESAFETY_COMPLIANCE_WORKER", "0")
    add_role_users(sqlite_url)
    port = free_port()
    app = create_app(dev.settings(sqlite_url, tmp_path / "home", dev.policy_with(tmp_path),
                                  dashboard_url=f"http://127.0.0.1:{port}"))
    OUT.mkdir(exist_ok=True)
    with live_server(app, port) as srv, sync_playwright() as pw, httpx.Client(base_url=srv.url) as api:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{srv.url}/devices")
        page.fill("#username", "itadmin")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        expect(page.locator("h1")).to_have_text("Devices")
        page.fill("#token-form input[name=note]", "Computing room PC 3")
        page.locator("#token-form button[type=submit]").click()
        token = page.locator("#token-value").inner_text().strip()
        assert re.fullmatch(r"enr_[A-Za-z0-9_-]+", token)

        agent = dev.Agent(api, token, hostname="comp-pc-03")
        assert agent.send(checks=dev.all_passing(listening_servers="fail")).status_code == 200
        page.goto(f"{srv.url}/devices?check=listening_servers")
        expect(page.locator("#devices tbody tr")).to_have_count(1)
        expect(page.locator(f'tr[data-device="{agent.device_id}"]')).to_contain_text("warning")
        assert token not in page.content()  # shown once only
        page.click("text=comp-pc-03")
        expect(page.locator("#device-state")).to_have_text("warning")

        page.select_option("#exception-form select[name=check]", "listening_servers")
        page.fill("#exception-form input[name=until]", (datetime.now() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M"))
        page.fill("#exception-form input[name=approved_by]", "Ms Patel, Head of Computing")
        page.fill("#exception-form input[name=reason]", "Year 10 web development: dev server on port 3000")
        page.locator("#exception-form button[type=submit]").click()
        page.wait_for_load_state()
        expect(page.locator("#device-state")).to_have_text("compliant")
        expect(page.locator('tr[data-check="listening_servers"]')).to_contain_text("excepted")
        expect(page.locator("#exception-list")).to_contain_text("Ms Patel, Head of Computing")
        expect(page.locator("#history")).to_contain_text("approved by Ms Patel")
        page.screenshot(path=str(OUT / "device-page.png"), full_page=True)
        browser.close()
