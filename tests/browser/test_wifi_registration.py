"""The WiFi registration journey in headless Chromium, with a real SMTP server and a real proxy:
a pupil signs the AUP (with a parent) and asks for a device; an IT admin approves; the confirmation
arrives at the pupil's school address; the DHCP lease maps the device's MAC to 127.0.0.1 and the
proxy then attributes that traffic to the pupil's group; revocation for credential sharing cuts it
off and blocks registering again."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import select

from dashboard.app import create_app
from esafety.registrations.tables import Registration
from esafety.store.db import sessions
from esafety.store.models import AccessLog, IpBinding
from tests.conftest import ROOT, free_port
from tests.support import wifi
from tests.support.dsl import PASSWORD, add_role_users, live_server, settings_for
from tests.support.proxy import start_proxy

pytestmark = pytest.mark.browser
OUT = ROOT / "test-output"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
MAC = "3c:22:fb:5a:1e:07"
SCHOOL_ADDRESS = "sam.y9@pupils.school.test"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]  # noqa: N802
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=free_port())
    ctl.start()
    yield ctl, inbox
    ctl.stop()


def wait_for(check: Callable[[], object], timeout: float = 15.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def sign_in(browser: Browser, url: str, username: str) -> Page:
    page = browser.new_context().new_page()
    page.goto(url)
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    return page


def submit(page: Page, form: str) -> None:
    page.locator(f"{form} button[type=submit]").click()
    page.wait_for_load_state()


def test_wifi_registration_journey(database_url: str, tmp_path: Path, smtp, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    ctl, inbox = smtp
    leases_file = tmp_path / "dnsmasq.leases"
    leases_file.write_text("")
    monkeypatch.setenv("ESAFETY_INCIDENT_WORKER_INTERVAL", "0.2")
    monkeypatch.setenv("ESAFETY_REGISTRATIONS_WORKER_INTERVAL", "0.3")
    monkeypatch.setenv("ESAFETY_DHCP_LEASES", str(leases_file))
    add_role_users(database_url)
    wifi.add_pupil(database_url, email=SCHOOL_ADDRESS)
    wifi.publish(database_url)
    kind = database_url.split(":", 1)[0].split("+", 1)[0]
    OUT.mkdir(exist_ok=True)
    port = free_port()
    app = create_app(settings_for(database_url, tmp_path, smtp_port=ctl.port, dashboard_url=f"http://127.0.0.1:{port}"))
    proxy = start_proxy(tmp_path / "proxy", database_url=database_url)
    try:
        with live_server(app, port) as srv, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            # 1. The pupil signs the AUP with a parent's acceptance, then asks for the device.
            pupil = sign_in(browser, f"{srv.url}/wifi", "sam.y9")
            expect(pupil.locator("h1")).to_have_text("My WiFi devices")
            pupil.click("#read-aup")
            expect(pupil.locator("#aup-text")).to_contain_text("WiFi Registration")
            pupil.fill("#parent_name", "Jo Parent")
            pupil.fill("#parent_date", datetime.now(UTC).date().isoformat())
            pupil.check("#accept")
            submit(pupil, "#accept-aup")
            expect(pupil.locator("#aup-status")).to_contain_text("Jo Parent, accepted it")
            pupil.fill("#device_name", "Sam's iPhone")
            pupil.select_option("#device_type", "phone")
            pupil.fill("#mac", "DA:A1:19:5A:1E:07")  # a private address: explained, not stored
            pupil.check("#aup_ok")
            submit(pupil, "#register")
            expect(pupil.locator("#error")).to_contain_text("private (randomised) WiFi address")
            pupil.screenshot(path=str(OUT / f"wifi-private-mac-{kind}.png"), full_page=True)
            pupil.fill("#mac", MAC.upper())
            pupil.check("#aup_ok")
            submit(pupil, "#register")
            expect(pupil.locator("#state")).to_have_text("pending_approval")
            expect(pupil.locator("#due")).not_to_be_empty()
            pupil.screenshot(path=str(OUT / f"wifi-requested-{kind}.png"), full_page=True)

            # 2. IT approves from the queue, oldest first, with its due time.
            it = sign_in(browser, f"{srv.url}/registrations", "itadmin")
            row = it.locator("#approval-queue tbody tr").first
            expect(row).to_contain_text(MAC)
            expect(it.locator("#count-waiting")).to_have_text("1 waiting")
            it.screenshot(path=str(OUT / f"wifi-queue-{kind}.png"), full_page=True)
            row.locator("form.approve input[name=note]").fill("Welcome to the BYOD network")
            row.locator("form.approve button").click()
            it.wait_for_load_state()
            expect(it.locator("#state")).to_have_text("approved")

            # 3. The confirmation arrives at the school address, with how to connect.
            assert wait_for(lambda: inbox.messages), "the approval email should arrive"
            rcpts, msg = inbox.messages[0]
            assert rcpts == [SCHOOL_ADDRESS]
            body = msg.get_payload(decode=True).decode()  # type: ignore[union-attr]
            assert "School-BYOD" in body and MAC in body and "removes your WiFi access permanently" in body

            # 4. The device takes a DHCP lease on 127.0.0.1: active, bound, and the proxy knows who it is.
            leases_file.write_text(f"{int(time.time()) + 3600} {MAC} 127.0.0.1 sams-iphone *\n")

            def bound() -> bool:
                with sessions(database_url)() as s:
                    b = s.get(IpBinding, "127.0.0.1")
                    return b is not None and b.username == "sam.y9" and b.source == "wifi"

            assert wait_for(bound), "the lease should bind 127.0.0.1 to the pupil"
            pupil.reload()
            expect(pupil.locator("#state")).to_have_text("active")

            def seen_as(user: str | None) -> Callable[[], bool]:
                def check() -> bool:
                    with proxy.client() as c:
                        c.get("https://wifi-check.example.org/")
                    with sessions(database_url)() as s:
                        row = s.scalars(select(AccessLog).where(AccessLog.host == "wifi-check.example.org")
                                        .order_by(AccessLog.id.desc()).limit(1)).first()
                    return row is not None and row.username == user
                return check

            assert wait_for(seen_as("sam.y9"), timeout=20), "the proxy should attribute the device to the pupil"
            with sessions(database_url)() as s:
                row = s.scalars(select(AccessLog).where(AccessLog.username == "sam.y9")).first()
                assert row is not None and (row.policy_group, row.device) == ("year9", "Sam's iPhone")

            # 5. IT revokes for credential sharing: identity dropped, and no new registration.
            it.select_option("#do-revoke select[name=reason]", "credential_sharing")
            it.fill("#do-revoke input[name=note]", "password used on six machines at once")
            submit(it, "#do-revoke")
            expect(it.locator("#state")).to_have_text("revoked")
            expect(it.locator("#revoke-reason")).to_contain_text("Sharing credentials")
            assert wait_for(seen_as(None), timeout=20), "after revocation the device is no longer the pupil"
            pupil.goto(f"{srv.url}/wifi")
            expect(pupil.locator("#ban")).to_contain_text("removed permanently")
            expect(pupil.locator("#register")).to_have_count(0)
            pupil.screenshot(path=str(OUT / f"wifi-banned-{kind}.png"), full_page=True)
            token = pupil.locator("input[name=csrf_token]").first.get_attribute("value")
            r = pupil.request.post(f"{srv.url}/wifi/register", form={
                "csrf_token": token or "", "device_name": "Other phone", "device_type": "phone",
                "mac": "3c:22:fb:5a:1e:08", "aup_ok": "yes"})
            assert r.status == 409 and "removed permanently" in r.text()
            browser.close()
    finally:
        proxy.stop()
    with sessions(database_url)() as s:
        regs = list(s.scalars(select(Registration)))
        assert [(r.mac, r.state, r.revoke_reason) for r in regs] == [(MAC, "revoked", "credential_sharing")]
    for name in ("private-mac", "requested", "queue", "banned"):
        assert (OUT / f"wifi-{name}-{kind}.png").stat().st_size > 5000
