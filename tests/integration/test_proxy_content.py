"""Downloads, phrase scanning, watched searches, CONNECT ports, identity and the access log, through real mitmdump."""

from __future__ import annotations

import io
import json
import socket
import ssl
import time
import zipfile

import httpx
import pytest
from sqlalchemy import delete

from esafety.auth import hash_password
from esafety.store.db import sessions
from esafety.store.models import IpBinding, User
from tests.integration.conftest import access_rows, incidents, jsonl_lines, wait_for

pytestmark = pytest.mark.xdist_group("proxy-content")

EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48 + b"This program cannot be run"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 64


def _zip_with(name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "hello")
        zf.writestr(name, EXE)
    return buf.getvalue()


@pytest.mark.parametrize(("path", "body", "ctype", "why"), [
    ("/downloads/setup.exe", EXE, "application/octet-stream", "extension"),
    ("/images/cat.jpg", EXE, "image/jpeg", "renamed executable caught by magic bytes"),
    ("/files/homework", EXE, "application/x-msdownload", "content type"),
    ("/files/game.zip", _zip_with("bin/game.exe"), "application/zip", "archive holding an executable"),
    ("/files/film", b"d8:announce35:udp://tracker.example:1337/announce4:info", "application/octet-stream",
     "torrent by content"),
])
def test_pupil_downloads_blocked(proxy, path, body, ctype, why):
    proxy.origin.route(path, body, content_type=ctype)
    with proxy.client() as c:
        r = c.get(f"https://files.example.org{path}")
    assert r.status_code == 403, why
    assert "This download is blocked" in r.text
    assert body not in r.content


def test_harmless_downloads_pass(proxy):
    proxy.origin.route("/images/real.png", PNG, content_type="image/png")
    proxy.origin.route("/files/notes.zip", _zip_with("notes/chapter1.txt"), content_type="application/zip")
    with proxy.client() as c:
        assert c.get("https://files.example.org/images/real.png").content == PNG
        assert c.get("https://files.example.org/files/notes.zip").status_code == 200


def test_phrase_heavy_page_blocked_and_clean_page_passes(proxy):
    bad = "<html><body>" + "<p>Free spins! Online casino deposit bonus, place your bet now.</p>" * 3 + "</body></html>"
    proxy.origin.route("/offers", bad)
    proxy.origin.route("/maths", "<html><body><p>Probability: the chance of a bet winning is 1/6.</p></body></html>")
    with proxy.client() as c:
        r = c.get("https://blog.example.org/offers")
        assert r.status_code == 403
        assert "found content on this page" in r.text
        assert "<dd>Gambling</dd>" in r.text
        ok = c.get("https://blog.example.org/maths")
        assert ok.status_code == 200 and "Probability" in ok.text


@pytest.mark.parametrize("charset", ["x-no-such-charset", "utf-16", "latin-1"])
def test_a_page_is_scanned_whatever_charset_it_claims(proxy, charset):
    """The charset is the page's own claim: an unknown one is read as UTF-8, not a reason to skip."""
    bad = "<html><body>" + "<p>Free spins! Online casino deposit bonus, place your bet now.</p>" * 3 + "</body></html>"
    proxy.origin.route(f"/offers-{charset}", bad.encode("utf-16" if charset == "utf-16" else "latin-1"),
                       content_type=f"text/html; charset={charset}")
    with proxy.client() as c:
        r = c.get(f"https://blog.example.org/offers-{charset}")
    assert r.status_code == 403 and "<dd>Gambling</dd>" in r.text


def test_accented_phrases_match(proxy):
    page = "<html><body>" + "<p>Pornografía gratis: PORNOGRAFÍA, pornografia.</p>" * 1 + "</body></html>"
    proxy.origin.route("/es", page)
    with proxy.client() as c:
        assert c.get("https://blog.example.org/es").status_code == 403


def test_watched_search_creates_incident_for_dsl(proxy):
    with proxy.client() as c:
        r = c.get("https://www.google.co.uk/search?q=how+to+Self+Harm+without+anyone+knowing")
    assert r.status_code == 200, "the search itself is allowed (and made safe)"
    found = wait_for(lambda: incidents(proxy, category="self_harm", source="proxy"), timeout=5)
    assert found, "a watched search term raises a safeguarding incident"
    inc = found[-1]
    assert inc.queue == "dsl"
    assert inc.level >= 4
    assert inc.evidence["query"] == "how to Self Harm without anyone knowing"
    assert "google.co.uk" in inc.evidence["url"]


def test_connect_to_port_22_refused(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"CONNECT ssh.example.org:22 HTTP/1.1\r\nHost: ssh.example.org:22\r\n\r\n")
        reply = b""
        while b"Reference" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
        reply = reply.decode(errors="replace")
    assert reply.startswith("HTTP/1.1 403")
    assert "port 22 is not allowed" in reply
    rows = wait_for(lambda: [a for a in access_rows(proxy, "ssh.example.org") if a.method == "CONNECT"])
    assert rows and rows[0].status == 403


def test_access_log_has_every_request(proxy):
    urls = [f"https://log.example.org/page/{i}" for i in range(20)] + ["https://www.bet365.com/logged"] * 5
    with proxy.client() as c:
        for u in urls:
            c.get(u)

    def in_store() -> int:
        return len(access_rows(proxy, "log.example.org")) + len(
            [a for a in access_rows(proxy, "www.bet365.com") if a.path == "/logged"])

    def in_jsonl() -> list[dict]:
        docs = [json.loads(line) for line in jsonl_lines(proxy)]
        return [d for d in docs if d["host"] == "log.example.org" or d["path"] == "/logged"]

    assert wait_for(lambda: in_store() == len(urls)), "every request is in the store"
    assert wait_for(lambda: len(in_jsonl()) == len(urls)), "and in the JSON-lines log"
    last = in_jsonl()[-1]
    for field in ("ts", "username", "policy_group", "device", "client_ip", "method", "host", "path", "status",
                  "bytes", "action", "category", "rule", "ref"):
        assert field in last
    assert last["host"] == "www.bet365.com" and last["action"] == "block" and last["rule"] == "pupils-commerce"


def _add_user(proxy, name: str, group: str, password: str | None = None) -> None:
    with sessions(proxy.database_url)() as s:
        s.add(User(username=name, policy_group=group, password_hash=hash_password(password) if password else None))
        s.commit()


def test_proxy_authentication_applies_the_users_group(proxy):
    _add_user(proxy, "mrs.jones", "staff", "correct horse battery")
    with proxy.client(auth=("mrs.jones", "correct horse battery")) as c:
        # Staff may read self-harm material (flagged, not blocked); pupils may not.
        assert c.get("https://sanctioned-suicide.net/research").status_code == 200
        assert c.get("https://www.youtube.com/results?search_query=rivers").status_code == 200
    assert proxy.origin.requests_to("www.youtube.com")[-1].headers.get("youtube-restrict") == "Moderate"
    with proxy.client(auth=("mrs.jones", "wrong password")) as c:
        assert c.get("https://sanctioned-suicide.net/research").status_code == 403, "bad credentials: strictest group"
    rows = wait_for(lambda: [a for a in access_rows(proxy, "sanctioned-suicide.net") if a.username == "mrs.jones"])
    assert rows and rows[0].policy_group == "staff"


def test_client_ip_binding_from_agents_applies_the_users_group(proxy):
    _add_user(proxy, "amy.y13", "year13")
    with sessions(proxy.database_url)() as s:
        s.add(IpBinding(ip="127.0.0.1", username="amy.y13", device="LAPTOP-17", source="agent"))
        s.commit()
    try:
        def decided_as_amy() -> bool:
            with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=proxy.ca), timeout=10) as c:
                c.get("https://binding-check.example.org/")
            rows = access_rows(proxy, "binding-check.example.org")
            return bool(rows) and rows[-1].username == "amy.y13"

        assert wait_for(decided_as_amy, timeout=10, interval=0.5), "the identity table is refreshed within seconds"
        row = access_rows(proxy, "binding-check.example.org")[-1]
        assert row.policy_group == "year13" and row.device == "LAPTOP-17"
    finally:
        with sessions(proxy.database_url)() as s:
            s.execute(delete(IpBinding))
            s.commit()
        time.sleep(2.5)  # let the proxy's table forget the binding before other tests run
