"""Proxy sign-in through a real mitmdump: an unidentified client is asked to sign in (407) or sent
to the captive portal, as the policy's identity.unidentified says; credentials apply the person's group."""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import delete

from esafety.auth import hash_password
from esafety.identity.portal import load_key, verify_token
from esafety.store.db import sessions
from esafety.store.models import IpBinding, User
from tests.integration.conftest import access_rows, wait_for
from tests.support.policy import policy_with
from tests.support.proxy import ProxyUnderTest, start_proxy

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def _metric(p: ProxyUnderTest, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in httpx.get(f"http://127.0.0.1:{p.metrics_port}/metrics", timeout=5).text.splitlines():
        if line.startswith(f"{name}{{{want}}}"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _people(p: ProxyUnderTest) -> None:
    with sessions(p.database_url)() as s:
        s.add_all([User(username="ms.khan", policy_group="staff", password_hash=hash_password("a staff passphrase")),
                   User(username="amy.y8", policy_group="year8", source="roster", year_group=8, tutor_group="8RB")])
        s.commit()


@pytest.fixture(scope="module")
def challenging(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("challenge")
    p = start_proxy(tmp, policy=policy_with(tmp, """
        identity:
          unidentified: challenge
          proxy_auth: {basic: local, cache: 5m}
    """))
    _people(p)
    yield p
    p.stop()


def test_an_unidentified_client_is_asked_to_sign_in(challenging: ProxyUnderTest) -> None:
    with httpx.Client(proxy=challenging.url, timeout=10) as c:
        r = c.get("http://www.facebook.com/", headers=HTML)
    assert r.status_code == 407
    assert r.headers.get_list("proxy-authenticate") == ['Basic realm="Example Academy web filter", charset="UTF-8"']
    assert "Sign in to use the internet" in r.text
    assert not challenging.origin.requests_to("www.facebook.com"), "nothing reaches the site before sign-in"
    rows = wait_for(lambda: access_rows(challenging, "www.facebook.com"))
    assert rows and (rows[0].status, rows[0].category, rows[0].username) == (407, "signin", None)


def test_a_tunnel_is_challenged_before_it_opens(challenging: ProxyUnderTest) -> None:
    with pytest.raises(httpx.ProxyError, match="407"), httpx.Client(proxy=challenging.url, verify=False,
                                                                    timeout=10) as c:
        c.get("https://www.facebook.com/")


def test_signing_in_applies_the_persons_group_for_the_whole_tunnel(challenging: ProxyUnderTest) -> None:
    ctx = ssl.create_default_context(cafile=challenging.ca)
    # Social networking is blocked for the default group at all times, open to staff outside lessons
    # (games are the lesson-time warning): a staff member gets the page.
    with httpx.Client(proxy=httpx.Proxy(challenging.url, auth=("ms.khan", "a staff passphrase")), verify=ctx,
                      timeout=10) as c:
        first = c.get("https://sanctioned-suicide.net/research")  # staff: flagged, not blocked
        again = c.get("https://sanctioned-suicide.net/again")  # the same tunnel: no credentials inside it
    assert (first.status_code, again.status_code) == (200, 200)
    rows = wait_for(lambda: [a for a in access_rows(challenging, "sanctioned-suicide.net") if a.path == "/again"])
    assert rows and (rows[0].username, rows[0].policy_group) == ("ms.khan", "staff")


def test_a_wrong_password_is_asked_again_and_checked_once(challenging: ProxyUnderTest) -> None:
    before = _metric(challenging, "esafety_proxy_auth_total", method="basic_local", result="rejected")
    with httpx.Client(proxy=httpx.Proxy(challenging.url, auth=("ms.khan", "guess")), timeout=10) as c:
        codes = [c.get(f"http://www.example.org/try{i}").status_code for i in range(3)]
    assert codes == [407, 407, 407]
    # Remembered, not re-checked: a browser repeats a bad password on every request, and each
    # check would count towards the account's lockout in a directory.
    assert _metric(challenging, "esafety_proxy_auth_total", method="basic_local", result="rejected") == before + 1
    assert _metric(challenging, "esafety_proxy_auth_total", method="basic_local", result="cached") >= 2


def test_a_client_the_ip_table_knows_is_not_asked(challenging: ProxyUnderTest) -> None:
    with sessions(challenging.database_url)() as s:
        s.add(IpBinding(ip="127.0.0.1", username="amy.y8", source="radius", session_id="s1"))
        s.commit()
    try:
        def as_amy() -> bool:
            with httpx.Client(proxy=challenging.url, timeout=10) as c:
                c.get("http://bound.example.org/", headers=HTML)
            rows = access_rows(challenging, "bound.example.org")
            return bool(rows) and rows[-1].username == "amy.y8"

        assert wait_for(as_amy, timeout=10, interval=0.5)
        assert access_rows(challenging, "bound.example.org")[-1].policy_group == "year8"
    finally:
        with sessions(challenging.database_url)() as s:
            s.execute(delete(IpBinding))
            s.commit()
        time.sleep(2.5)  # the proxy's table forgets the binding before the other tests


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("portal")
    p = start_proxy(tmp, policy=policy_with(tmp, """
        identity:
          unidentified: portal
          portal: {bypass: [connectivitycheck.gstatic.com]}
    """))
    yield p
    p.stop()


def test_an_unidentified_browser_is_sent_to_the_portal_with_a_token_for_its_address(portal: ProxyUnderTest) -> None:
    ctx = ssl.create_default_context(cafile=portal.ca)
    with httpx.Client(proxy=portal.url, verify=ctx, timeout=10) as c:
        r = c.get("https://www.bbc.co.uk/news?x=1&y=%3C2%3E", headers=HTML)
    assert r.status_code == 302
    where = urlsplit(r.headers["location"])
    assert f"{where.scheme}://{where.netloc}{where.path}" == "http://dashboard.test/portal"
    q = parse_qs(where.query)
    assert q["next"] == ["https://www.bbc.co.uk/news?x=1&y=%3C2%3E"]
    assert verify_token(load_key(portal.home), q["t"][0], time.time()) == "127.0.0.1"
    assert not portal.origin.requests_to("www.bbc.co.uk")


def test_what_cannot_show_a_page_is_filtered_as_the_default_group_meanwhile(portal: ProxyUnderTest) -> None:
    ctx = ssl.create_default_context(cafile=portal.ca)
    with httpx.Client(proxy=portal.url, verify=ctx, timeout=10) as c:
        api = c.get("https://api.example.org/v1/items", headers={"Accept": "application/json"})
        bypassed = c.get("http://connectivitycheck.gstatic.com/generate_204", headers=HTML)
        blocked = c.get("https://www.facebook.com/", headers={"Accept": "application/json"})
    assert (api.status_code, bypassed.status_code) == (200, 200)
    assert blocked.status_code == 403, "the default group's policy applies to what is not redirected"


def test_a_keytab_that_cannot_be_read_stops_the_start(tmp_path: Path) -> None:
    policy = policy_with(tmp_path, """
        identity:
          proxy_auth: {negotiate: true, keytab: missing.keytab}
    """)
    with pytest.raises(RuntimeError, match="identity settings rejected"):
        start_proxy(tmp_path, policy=policy)


def test_a_reload_that_breaks_sign_in_is_rejected_and_the_running_policy_stays(tmp_path: Path) -> None:
    policy = policy_with(tmp_path, """
        identity:
          unidentified: challenge
          proxy_auth: {basic: local}
    """)
    p = start_proxy(tmp_path, policy=policy)
    try:
        broken = "proxy_auth: {basic: local, negotiate: true, keytab: gone.keytab}"
        policy.write_text(policy.read_text().replace("proxy_auth: {basic: local}", broken))
        assert wait_for(lambda: _metric(p, "esafety_policy_reloads_total", result="failure") >= 1)
        assert "keytab" in p.log()
        with httpx.Client(proxy=p.url, timeout=10) as c:
            r = c.get("http://www.example.org/", headers=HTML)
        # Still the running settings: Basic only, no Negotiate offered from a keytab nobody can read.
        assert r.status_code == 407 and r.headers.get_list("proxy-authenticate") == [
            'Basic realm="Example Academy web filter", charset="UTF-8"']
    finally:
        p.stop()
