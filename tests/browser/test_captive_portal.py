"""The captive portal in headless Chromium, through the real esafety proxy: an unidentified pupil
opening a website lands on the school's sign-in page; signing in binds the address, and once the
proxy's identity refresh has read it, the site opens and the year group's policy applies."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import expect, sync_playwright
from sqlalchemy import select, update

from dashboard.app import create_app
from esafety.commands.users import create_user
from esafety.store.db import sessions
from esafety.store.models import AccessLog, IpBinding, User
from tests.conftest import ROOT, free_port
from tests.support.dsl import PASSWORD, live_server, settings_for
from tests.support.proxy import ProxyUnderTest, start_proxy

pytestmark = pytest.mark.browser
OUT = ROOT / "test-output"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
SITE = "https://www.bbc.co.uk/news"


def portal_policy(folder: Path) -> Path:
    """A copy of the default policy that sends unidentified browsers to the portal."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "policies" / "lists", folder / "lists", dirs_exist_ok=True)
    data = yaml.safe_load((ROOT / "policies" / "aup.yaml").read_text())
    data.setdefault("identity", {})["unidentified"] = "portal"
    path = folder / "aup.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def wait_for(check: Callable[[], object], timeout: float = 20.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def last_row(database_url: str, host: str) -> AccessLog | None:
    with sessions(database_url)() as s:
        return s.scalars(select(AccessLog).where(AccessLog.host == host).order_by(AccessLog.id.desc()).limit(1)).first()


def logged(database_url: str, host: str, status: int) -> tuple[str | None, str, int] | None:
    """The access log's latest row for `host` once it has `status` (the log is written in batches)."""
    row = last_row(database_url, host)
    return (row.username, row.policy_group, row.status) if row is not None and row.status == status else None


def proxy_knows(proxy: ProxyUnderTest, database_url: str, username: str | None) -> Callable[[], bool]:
    """An API-style request from the same address (127.0.0.1): the access log names who the proxy thinks it is."""
    def check() -> bool:
        with proxy.client() as c:
            c.get("https://identity-probe.example.org/", headers={"Accept": "application/json"})
        row = last_row(database_url, "identity-probe.example.org")
        return row is not None and row.username == username
    return check


def test_an_unidentified_pupil_signs_in_at_the_portal(database_url: str, tmp_path: Path) -> None:
    create_user(database_url, "amy.y8", "year8", [], display_name="Amy Pond", password=PASSWORD)
    with sessions(database_url)() as s:
        s.execute(update(User).where(User.username == "amy.y8").values(year_group=8, tutor_group="8RB"))
        s.commit()
    OUT.mkdir(exist_ok=True)
    port = free_port()
    dash_url = f"http://127.0.0.1:{port}"
    proxy = start_proxy(tmp_path / "proxy", policy=portal_policy(tmp_path / "policy"), database_url=database_url,
                        env={"ESAFETY_DASHBOARD_URL": dash_url})
    proxy.origin.route("/news", "<!doctype html><title>BBC News</title><h1 id=site>BBC News: the origin page</h1>")
    # The dashboard's home is the proxy's: one portal.key, so the dashboard trusts the proxy's tokens.
    app = create_app(settings_for(database_url, proxy.home, dashboard_url=dash_url))
    try:
        with live_server(app, port), sync_playwright() as pw:
            # Chromium sends everything but loopback through the proxy: the dashboard is reached
            # directly, the websites (any name: the test proxy points them at local origins) via it.
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                         args=[*CHROMIUM_ARGS, f"--proxy-server={proxy.url}"])
            page = browser.new_context(ignore_https_errors=True).new_page()

            # 1. Unidentified: the page asked for becomes the school's sign-in page.
            page.goto(SITE)
            expect(page).to_have_url(re.compile(re.escape(f"{dash_url}/portal?t=") + r"[A-Za-z0-9_-]+&next="))
            expect(page.locator("#school")).to_have_text("Example Academy")
            expect(page.locator("h1")).to_have_text("Sign in to use the internet")
            expect(page.locator("#next-text")).to_have_text(SITE)
            page.screenshot(path=str(OUT / "portal.png"), full_page=True)
            assert not proxy.origin.requests_to("www.bbc.co.uk"), "nothing reaches the site before sign-in"
            with sessions(database_url)() as s:
                assert s.scalars(select(IpBinding)).first() is None

            # 2. A wrong password: told so, nothing bound.
            page.fill("#username", "amy.y8")
            page.fill("#password", "not-my-password")
            page.click("#portal-form button[type=submit]")
            expect(page.locator("#error")).to_have_text("Wrong username or password.")

            # 3. Signing in binds the address the proxy saw.
            page.fill("#password", PASSWORD)
            page.click("#portal-form button[type=submit]")
            expect(page.locator("#signed-in")).to_have_text("Signed in as Amy Pond (Year 8, 8RB)")
            expect(page.locator("#continue")).to_have_attribute("href", SITE)
            page.screenshot(path=str(OUT / "portal-signed-in.png"), full_page=True)
            with sessions(database_url)() as s:
                b = s.get(IpBinding, "127.0.0.1")
                assert b is not None and (b.username, b.source) == ("amy.y8", "portal")

            # 4. After the proxy's identity refresh (every 2 s), the link opens the site as Amy, Year 8.
            assert wait_for(proxy_knows(proxy, database_url, "amy.y8")), "the proxy should read the binding"
            page.click("#continue")
            expect(page.locator("#site")).to_have_text("BBC News: the origin page")
            assert wait_for(lambda: logged(database_url, "www.bbc.co.uk", 200)) == ("amy.y8", "year8", 200)

            # 5. Year 8's policy: social networking is blocked (AUP 7), with the block page.
            page.goto("https://www.facebook.com/")
            expect(page.locator("body")).to_contain_text("AUP 7")
            assert wait_for(lambda: logged(database_url, "www.facebook.com", 403)) == ("amy.y8", "year8", 403)

            # 6. Signing out of the device removes the binding; the next page asks again.
            page.goto(f"{dash_url}/portal")
            expect(page.locator("#signed-in")).to_contain_text("Amy Pond")
            page.click("#signout button[type=submit]")
            expect(page.locator("#signed-out")).to_contain_text("no longer signed in")
            with sessions(database_url)() as s:
                assert s.get(IpBinding, "127.0.0.1") is None
            assert wait_for(proxy_knows(proxy, database_url, None)), "the proxy should drop the binding"
            page.goto(SITE)
            expect(page).to_have_url(re.compile(re.escape(f"{dash_url}/portal?t=")))
            browser.close()
    finally:
        proxy.stop()
    assert (OUT / "portal.png").stat().st_size > 5000
