"""Kerberos single sign-on end to end: a real MIT KDC, kinit, `curl --proxy-negotiate` through a real
esafety mitmdump whose policy says `negotiate: true` and `unidentified: challenge`. The ticket names
the person, the users table gives their group, and the group's rules apply inside the tunnel."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from esafety.store.db import sessions, upgrade
from esafety.store.models import AccessLog, User
from tests.integration.conftest import access_rows, wait_for
from tests.support.kdc import Kdc, initiate, start_kdc
from tests.support.policy import policy_with
from tests.support.proxy import ProxyUnderTest, start_proxy

CURL = "/usr/bin/curl"
pytestmark = pytest.mark.xdist_group("proxy-kerberos")  # one worker keeps the module's KDC (and proxy)
USERS = {"amy.y8": "amy's passphrase", "ms.khan": "khan's passphrase"}
# Social networking: blocked for Key Stage 3 at all times (rule younger-social), open to staff
# outside lessons and not a lesson-time warning either (that is games): the same page, two answers.
SITE = "www.facebook.com"


@dataclass
class Setup:
    kdc: Kdc
    proxy: ProxyUnderTest

    @property
    def proxy_url(self) -> str:
        # By name: the client asks the KDC for a ticket to HTTP/<the name it uses for the proxy>.
        return f"http://localhost:{self.proxy.port}"


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    assert Path(CURL).exists(), "curl is part of the test environment (scripts/install-system-deps.sh)"
    tmp = tmp_path_factory.mktemp("kerberos")
    kdc = start_kdc(tmp, USERS)
    try:
        policy = policy_with(tmp, f"""
            identity:
              unidentified: challenge
              proxy_auth: {{negotiate: true, keytab: {kdc.keytab}, principal: HTTP/localhost, realms: [ESAFETY.TEST]}}
        """)
        # The people are in the store before the proxy starts, so its first read of them has them.
        url = f"sqlite:///{tmp / 'store.db'}"
        upgrade(url)
        with sessions(url)() as s:
            s.add_all([User(username="amy.y8", policy_group="year8", source="roster", year_group=8, tutor_group="8RB"),
                       User(username="ms.khan", policy_group="staff", source="directory")])
            s.commit()
        proxy = start_proxy(tmp / "proxy", policy=policy, database_url=url, env=kdc.acceptor_env())
        # The port opens before the identity tables' first read (a background thread): until then a
        # ticket names a person the proxy does not know yet, filtered as the default group.
        assert wait_for(lambda: _people_known(proxy) == 2, timeout=15), "the proxy never read the people"
    except BaseException:
        kdc.stop()
        raise
    yield Setup(kdc, proxy)
    proxy.stop()
    kdc.stop()


def _people_known(p: ProxyUnderTest) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{p.metrics_port}/metrics", timeout=5).text
    except httpx.HTTPError:  # the metrics server starts with the proxy's first event loop turn
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("esafety_identity_people{"))


def _auth_count(p: ProxyUnderTest, result: str) -> float:
    want = f'esafety_proxy_auth_total{{method="negotiate",result="{result}"}} '
    text = httpx.get(f"http://127.0.0.1:{p.metrics_port}/metrics", timeout=5).text
    return next((float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(want)), 0.0)


def _logged(p: ProxyUnderTest, path: str) -> AccessLog:
    """The access log's row for SITE + path (written in batches, off the event loop)."""
    rows = wait_for(lambda: [a for a in access_rows(p, SITE) if a.path == path])
    assert isinstance(rows, list) and rows, f"no access log row for {SITE}{path}"
    return rows[-1]


def _curl(s: Setup, url: str, ccache: Path | None) -> tuple[int, str, str]:
    """(status, response headers, body) as `curl --proxy-negotiate` sees them; ccache None: no ticket."""
    env = {**os.environ, **s.kdc.client_env(ccache or s.kdc.root / "nobody.ccache")}  # no file: no ticket
    out = subprocess.run(
        [CURL, "-sS", "--proxy-negotiate", "-U", ":", "--proxy", s.proxy_url, "--cacert", str(s.proxy.ca),
         "--max-time", "20", "-D", "-", "-w", "\n%{http_code}", url],
        env=env, capture_output=True, text=True, timeout=30)  # text: CRLF arrives as LF
    assert out.returncode == 0, f"curl exited {out.returncode}: {out.stderr}"
    head, _, rest = out.stdout.partition("\n\n")
    while rest.startswith("HTTP/"):  # a 407 then the answer, or the CONNECT's 200 then the page's
        head, _, rest = rest.partition("\n\n")
    body, _, code = rest.rpartition("\n")
    return int(code), head, body


def test_the_ticket_names_the_pupil_and_her_group_applies_in_the_tunnel(sso: Setup) -> None:
    status, _, page = _curl(sso, f"https://{SITE}/", sso.kdc.kinit("amy.y8"))
    assert status == 403
    assert "This page is blocked" in page and "Social networking" in page
    row = _logged(sso.proxy, "/")
    assert (row.username, row.policy_group, row.status) == ("amy.y8", "year8", 403)


def test_the_same_page_is_open_to_a_member_of_staff(sso: Setup) -> None:
    sso.proxy.origin.route("/staffroom", "<html><body>Timeline</body></html>")
    status, _, page = _curl(sso, f"https://{SITE}/staffroom", sso.kdc.kinit("ms.khan"))
    assert (status, page) == (200, "<html><body>Timeline</body></html>")
    row = _logged(sso.proxy, "/staffroom")
    assert (row.username, row.policy_group, row.status) == ("ms.khan", "staff", 200)


def test_plain_http_is_signed_in_too(sso: Setup) -> None:
    status, _, _ = _curl(sso, f"http://{SITE}/plain", sso.kdc.kinit("amy.y8"))
    assert status == 403
    row = _logged(sso.proxy, "/plain")
    assert (row.username, row.policy_group, row.scheme) == ("amy.y8", "year8", "http")


def test_a_client_without_a_ticket_is_asked_to_sign_in(sso: Setup) -> None:
    status, head, page = _curl(sso, "http://www.example.org/no-ticket", None)
    assert status == 407
    challenges = [line.split(":", 1)[1].strip() for line in head.splitlines()
                  if line.lower().startswith("proxy-authenticate:")]
    assert challenges[0] == "Negotiate", challenges
    assert any(c.startswith("Basic ") for c in challenges), "basic is not off: Basic is offered as well"
    assert "Sign in to use the internet" in page
    assert not sso.proxy.origin.requests_to("www.example.org")


def _negotiate(s: Setup, token: bytes, path: str) -> httpx.Response:
    with httpx.Client(proxy=s.proxy.url, timeout=10) as c:
        return c.get(f"http://www.example.org{path}",
                     headers={"Proxy-Authorization": "Negotiate " + base64.b64encode(token).decode()})


def test_forged_replayed_and_ntlm_tokens_are_asked_again_and_the_proxy_keeps_serving(
        sso: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRB5_CONFIG", str(sso.kdc.krb5_conf))
    rejected = _auth_count(sso.proxy, "rejected")
    token = initiate(sso.kdc.kinit("ms.khan"))
    forged = bytearray(token)
    forged[len(forged) // 2] ^= 0x40  # inside the ticket's encrypted part
    assert _negotiate(sso, bytes(forged), "/forged").status_code == 407
    assert _negotiate(sso, b"\x60\x82garbage", "/garbage").status_code == 407
    assert _negotiate(sso, b"NTLMSSP\x00\x01\x00\x00\x00" + bytes(20), "/ntlm").status_code == 407
    assert _negotiate(sso, token, "/first").status_code == 200
    assert _negotiate(sso, token, "/replayed").status_code == 407, "a captured token cannot be used again"
    assert _auth_count(sso.proxy, "rejected") == rejected + 4
    assert "Request is a replay" in sso.proxy.log(), "the log says why a sign-in was refused"
    seen = {s.path for s in sso.proxy.origin.requests_to("www.example.org")}
    assert "/first" in seen and not seen & {"/forged", "/garbage", "/ntlm", "/replayed"}
    # Still serving, and still signing people in.
    status, _, _ = _curl(sso, "http://www.example.org/after", sso.kdc.kinit("ms.khan"))
    assert status == 200
    assert sso.proxy.proc.poll() is None
