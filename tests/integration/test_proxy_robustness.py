"""Reloads, hostile input, metrics, no-inspect passthrough, the DoH canary and fail-closed, through real mitmdump."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import struct

import httpx
import pytest

from esafety.auth import hash_password
from esafety.store.db import sessions
from esafety.store.models import User
from tests.conftest import ROOT, free_port
from tests.integration.conftest import access_rows, wait_for
from tests.support.proxy import start_proxy

pytestmark = pytest.mark.xdist_group("proxy-robustness")


def _metrics(proxy) -> str:
    return httpx.get(f"http://127.0.0.1:{proxy.metrics_port}/metrics", timeout=5).text


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}}" if labels else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_broken_policy_reload_keeps_the_running_policy(proxy):
    original = proxy.policy.read_text()
    with proxy.client() as c:
        assert c.get("https://www.bet365.com/").status_code == 403
        assert c.get("https://casino.newly-listed.example/").status_code == 200
    try:
        # Broken: a rule names a category that does not exist.
        proxy.policy.write_text(original.replace("categories: [gambling, phishing]", "categories: [gamblng, phishing]"))
        assert wait_for(lambda: _metric(_metrics(proxy), "esafety_policy_reloads_total", result="failure") >= 1)
        assert "unknown category 'gamblng'" in proxy.log() and f"{proxy.policy}:" in proxy.log()
        with proxy.client() as c:
            assert c.get("https://www.bet365.com/").status_code == 403, "the old policy still filters"
        # A good change is picked up without a restart.
        fixed = original.replace("lists: [lists/gambling.txt]",
                                 "lists: [lists/gambling.txt], domains: [newly-listed.example]")
        proxy.policy.write_text(fixed)
        assert wait_for(lambda: _metric(_metrics(proxy), "esafety_policy_reloads_total", result="success") >= 1)
        with proxy.client() as c:
            assert c.get("https://casino.newly-listed.example/").status_code == 403
    finally:
        proxy.policy.write_text(original)


def test_sighup_reloads(proxy):
    before = _metric(_metrics(proxy), "esafety_policy_reloads_total", result="success")
    os.kill(proxy.proc.pid, signal.SIGHUP)
    assert wait_for(lambda: _metric(_metrics(proxy), "esafety_policy_reloads_total", result="success") > before)


def _raw(proxy, data: bytes, read: bool = True) -> bytes:
    # The proxy may just wait for more of a request it cannot parse: a short read timeout is an answer too.
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=1.5) as s:
        s.sendall(data)
        if not read:
            return b""
        try:
            return s.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return b""


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)),  # TLS on the plain proxy port
    b"SSH-2.0-OpenSSH_9.2\r\n",  # not HTTP at all
    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"A" * 300_000 + b"\r\n\r\n",  # absurd header
    b"GET http://a.example/ HTTP/1.1\r\nContent-Length: -5\r\n\r\n",  # lying length
    b"\x00\xff" * 1000,  # binary noise
    b"CONNECT :::::::443 HTTP/1.1\r\n\r\n",  # malformed authority
], ids=["tls-on-plain-port", "ssh-banner", "300k-header", "negative-length", "binary-noise", "bad-authority"])
def test_hostile_input_is_refused_and_the_proxy_keeps_serving(proxy, garbage):
    reply = _raw(proxy, garbage)
    assert not reply.startswith(b"HTTP/1.1 200"), reply[:200]
    with proxy.client() as c:
        assert c.get("https://www.example.org/still-alive").status_code == 200
    assert proxy.proc.poll() is None


def test_invalid_tls_after_connect_keeps_serving(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"CONNECT www.example.org:443 HTTP/1.1\r\nHost: www.example.org:443\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.sendall(b"\x16\x03\x01\x00\x05hello-not-a-clienthello" + os.urandom(512))
        with contextlib.suppress(OSError):
            s.recv(4096)
    with proxy.client() as c:
        assert c.get("https://www.example.org/after-bad-tls").status_code == 200


def test_huge_body_is_streamed_not_buffered(proxy):
    big = b"<html><body>" + b"x" * (3 * 1024 * 1024) + b"</body></html>"
    proxy.origin.route("/big", big)
    with proxy.client() as c:
        r = c.get("https://www.example.org/big")
    assert r.status_code == 200 and len(r.content) == len(big)


def test_metrics_exported_without_per_user_labels(proxy):
    with proxy.client() as c:
        c.get("https://www.bet365.com/")
        c.get("https://www.example.org/")
    text = _metrics(proxy)
    assert _metric(text, "esafety_proxy_decisions_total", action="block", category="gambling") >= 1
    assert _metric(text, "esafety_proxy_requests_total", scheme="https") >= 2
    assert "esafety_proxy_decision_seconds_bucket" in text
    assert _metric(text, "esafety_policy_entries", category="gambling") > 10
    for forbidden in ("client_ip=", "user=", "username=", "url=", "host="):
        assert forbidden not in text


def test_no_inspect_hosts_pass_through_undecrypted(proxy):
    # nhs.uk is on the no-inspect list: the client sees the origin's own certificate, not the esafety CA's.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"CONNECT www.nhs.uk:443 HTTP/1.1\r\nHost: www.nhs.uk:443\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        with ctx.wrap_socket(s, server_hostname="www.nhs.uk") as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"GET /conditions HTTP/1.1\r\nHost: www.nhs.uk\r\nConnection: close\r\n\r\n")
            body = tls.recv(65536)
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    assert "esafety test origin" in cert.issuer.rfc4514_string(), "the origin's certificate, not a forged one"
    assert body.startswith(b"HTTP/1.1 200")
    rows = wait_for(lambda: [a for a in access_rows(proxy, "www.nhs.uk") if a.method == "CONNECT"])
    assert rows and rows[0].action == "allow"


def _dns_query(name: str) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)


def test_firefox_doh_canary_gets_nxdomain(tmp_path):
    dns_port = free_port()
    p = start_proxy(tmp_path, extra=["--mode", "regular", "--mode", f"dns@{dns_port}"])
    try:
        # The DNS listener may bind just after the HTTP one start_proxy waits for, and UDP drops a
        # query sent before that: ask again, as a resolver does.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1)
            for _attempt in range(10):
                s.sendto(_dns_query("use-application-dns.net"), ("127.0.0.1", dns_port))
                try:
                    reply, _ = s.recvfrom(4096)
                    break
                except TimeoutError:
                    continue
            else:
                pytest.fail("no DNS answer in 10 tries")
        assert reply[:2] == b"\x12\x34"
        assert reply[3] & 0x0F == 3, "NXDOMAIN tells Firefox to keep DoH off"
    finally:
        p.stop()


@pytest.mark.parametrize("as_script", [False, True], ids=["esafety-mitmdump", "mitmdump -s entry.py"])
def test_a_broken_policy_stops_the_start_with_its_file_and_line(tmp_path, as_script):
    shutil.copytree(ROOT / "policies" / "lists", tmp_path / "lists")
    policy = tmp_path / "aup.yaml"
    text = (ROOT / "policies" / "aup.yaml").read_text()
    policy.write_text(text.replace("categories: [gambling, phishing]", "categories: [gambling, casinos]", 1))
    line = text[:text.index("categories: [gambling, phishing]")].count("\n") + 1
    try:
        p = start_proxy(tmp_path, policy=policy, as_script=as_script)
    except RuntimeError as exc:  # exited before it listened
        output = str(exc)
    else:
        # mitmdump acts on a script's error only once its port is open, then exits (a moment
        # esafety-mitmdump does not have: its add-ons are mitmproxy's own, configured first).
        assert as_script, "esafety-mitmdump listened with a policy it could not compile"
        assert p.proc.wait(timeout=20) == 1
        output = p.log()
    assert f"aup.yaml:{line}: unknown category 'casinos'" in output


def test_the_addons_also_run_as_a_mitmdump_script(tmp_path):
    p = start_proxy(tmp_path, as_script=True)
    try:
        with p.client() as c:
            assert c.get("https://www.bet365.com/").status_code == 403
            assert c.get("https://www.example.org/").status_code == 200
        assert wait_for(lambda: len(access_rows(p)) >= 2)
    finally:
        p.stop()


def _breaking(tmp_path, *patches: str, bug: str = "simulated filter bug"):
    """A proxy with a test add-on that, once running, breaks our code as `patches` say (a bug)."""
    breaker = tmp_path / "breaker.py"
    breaker.write_text(
        "from mitmproxy import ctx\n"
        "import proxy_addons.filtering as filtering\n"
        "from proxy_addons.content import ContentScan\n"
        "from proxy_addons.downloads import Downloads\n"
        "from proxy_addons.runtime import Runtime\n"
        "def boom(*a, **k):\n"
        f"    raise RuntimeError({bug!r})\n"
        "class Break:\n"
        "    def running(self):\n"
        "        chain = ctx.master.addons.get('esafety')\n"
        "        rt = chain.part(Runtime)\n"
        + "".join(f"        {patch}\n" for patch in patches)
        + "addons = [Break()]\n"
    )
    return start_proxy(tmp_path, extra=["-s", str(breaker)])


def test_fail_closed_for_pupils_when_deciding_breaks(tmp_path):
    # A policy whose schedule timezone breaks at decision time is impossible to write (the loader checks it),
    # so the test breaks the engine the way a bug would: through a test add-on that corrupts it.
    p = _breaking(tmp_path, "rt.engine.decide = boom", bug="simulated engine bug")
    try:
        with p.client() as c:
            r = c.get("https://www.example.org/anything")
        assert r.status_code == 403, "pupils (and unknown clients) are blocked when the filter itself fails"
        assert "Reference" in r.text
        assert not p.origin.requests_to("www.example.org")
        assert _metric(_metrics(p), "esafety_proxy_errors_total", outcome="blocked") >= 1
        assert "simulated engine bug" in p.log()
    finally:
        p.stop()


def test_a_bug_anywhere_in_filtering_fails_closed_for_pupils_and_open_for_staff(tmp_path):
    p = _breaking(tmp_path, "filtering._hosts = boom")  # after the user is known, before any decision
    try:
        with sessions(p.database_url)() as s:
            s.add(User(username="mr.okafor", policy_group="staff", password_hash=hash_password("a long passphrase")))
            s.commit()
        with p.client() as c:
            r = c.get("http://www.example.org/pupil")
        assert r.status_code == 403 and "could not check this page" in r.text and "Reference" in r.text
        assert not p.origin.requests_to("www.example.org")
        with p.client(auth=("mr.okafor", "a long passphrase")) as c:
            assert c.get("http://www.example.org/staff").status_code == 200, "staff: on_error allow"
        def both_logged() -> dict | None:
            found = {a.path: a for a in access_rows(p, "www.example.org")}
            return found if {"/pupil", "/staff"} <= found.keys() else None

        rows = wait_for(both_logged)
        assert rows, "both requests are in the access log"
        assert (rows["/pupil"].action, rows["/pupil"].rule) == ("block", "fail-closed")
        assert (rows["/staff"].action, rows["/staff"].rule, rows["/staff"].username) == ("allow", "fail-open",
                                                                                         "mr.okafor")
        assert _metric(_metrics(p), "esafety_proxy_errors_total", outcome="blocked") >= 1
        assert _metric(_metrics(p), "esafety_proxy_errors_total", outcome="allowed") >= 1
    finally:
        p.stop()


def test_a_bug_before_the_client_is_known_still_blocks_and_logs(tmp_path):
    p = _breaking(tmp_path, "rt.identity.bound = boom")
    try:
        with p.client() as c:
            r = c.get("http://www.example.org/who")
        assert r.status_code == 403 and "Reference" in r.text
        assert not p.origin.requests_to("www.example.org")
        rows = wait_for(lambda: [a for a in access_rows(p, "www.example.org") if a.path == "/who"])
        assert rows and (rows[0].action, rows[0].policy_group, rows[0].status) == ("block", "unknown", 403)
        assert "simulated filter bug" in p.log()
    finally:
        p.stop()


def test_a_failing_check_neither_lets_an_unscanned_page_through_nor_loses_the_log_line(tmp_path):
    # Two bugs at once, injected the way a bug would strike: the download check raises outright,
    # and the phrase scanner raises inside content scanning.
    p = _breaking(tmp_path, "chain.part(Downloads)._applies = boom", "chain.part(ContentScan).scanner = boom",
                  bug="simulated check bug")
    try:
        p.origin.route("/unscanned", "<p>a page nobody could check</p>")
        with p.client() as c:
            r = c.get("https://www.example.org/unscanned")
        assert r.status_code == 403 and "could not check this page" in r.text, "pupils get no unscanned page"
        assert "a page nobody could check" not in r.text
        rows = wait_for(lambda: [a for a in access_rows(p, "www.example.org") if a.path == "/unscanned"])
        assert rows and (rows[0].action, rows[0].category, rows[0].status) == ("block", "error", 403)
        assert _metric(_metrics(p), "esafety_proxy_errors_total", outcome="blocked") >= 1
        assert "simulated check bug" in p.log()
    finally:
        p.stop()
