"""The filtering proxy end to end: real mitmdump, real HTTP/HTTPS origins, a client trusting the esafety CA."""

from __future__ import annotations

import re
import socket
import ssl

import pytest

from tests.integration.conftest import access_rows, incidents, wait_for

pytestmark = pytest.mark.xdist_group("proxy-filtering")

# One real domain from each shipped starter list: (category title on the block page, URL).
CATEGORY_SAMPLES = [
    ("Gambling", "https://www.bet365.com/"),
    ("Pornography", "https://pornhub.com/videos"),
    ("Drugs and substance abuse", "https://erowid.org/"),
    ("Extremism and radicalisation", "https://www.stormfront.org/forum"),
    ("Self-harm and suicide", "https://sanctioned-suicide.net/"),
    ("Violence", "https://goregrish.com/"),
    ("Weapons", "https://www.gunbroker.com/"),
    ("Malware and hacking", "https://malware.wicar.org/data/"),
    ("Piracy and copyright theft", "https://thepiratebay.org/search"),
    ("Dating", "https://tinder.com/"),
    ("VPN services", "https://nordvpn.com/download/"),
    ("Web proxies and anonymisers", "https://www.croxyproxy.com/"),
    ("DNS over HTTPS", "https://cloudflare-dns.com/"),
    ("Tor", "https://www.torproject.org/download/"),
    ("Peer-to-peer file sharing", "https://www.utorrent.com/"),
    ("Search engines that cannot be made safe", "https://yandex.com/search/?text=x"),
    ("Social networking", "https://www.tiktok.com/"),
    ("IP address instead of a name", "http://10.20.30.40/admin"),
]


def test_allowed_pages_pass_unchanged(proxy):
    body = b"<html><body><p>Photosynthesis converts light energy into chemical energy.</p></body></html>"
    proxy.origin.route("/science", body)
    with proxy.client() as c:
        for url in ("http://www.example.org/science", "https://www.example.org/science"):
            r = c.get(url)
            assert r.status_code == 200
            assert r.content == body
            assert "x-esafety-decision" not in r.headers


@pytest.mark.parametrize(("title", "url"), CATEGORY_SAMPLES, ids=[t for t, _ in CATEGORY_SAMPLES])
def test_each_category_blocks_with_the_page(proxy, title, url):
    with proxy.client() as c:
        r = c.get(url)
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "This page is blocked" in page
    assert f"<dd>{title}</dd>" in page
    assert "Acceptable Use Policy" in page
    ref = re.search(r'<strong id="ref">([0-9A-F]{10})</strong>', page)
    assert ref, "block page shows a reference id"
    assert "Ask for a review" in page and f"ref={ref.group(1)}" in page
    host = url.split("/")[2]
    assert not proxy.origin.requests_to(host), "a blocked request never reaches the origin"
    rows = wait_for(lambda: [a for a in access_rows(proxy, host) if a.ref == ref.group(1)])
    assert rows and rows[0].action == "block" and rows[0].status == 403


def test_subdomains_match_whole_labels_only(proxy):
    with proxy.client() as c:
        assert c.get("https://sports.bet365.com/").status_code == 403
        assert c.get("https://notbet365.com/").status_code == 200
        assert c.get("https://bet365.com.example.org/").status_code == 200


def test_block_page_escapes_attacker_controlled_url(proxy):
    with proxy.client() as c:
        r = c.get('https://www.bet365.com/"><script>alert(1)</script>?x=<img src=x onerror=alert(2)>')
    assert r.status_code == 403
    assert "<script>alert(1)</script>" not in r.text
    assert "<img src=x" not in r.text
    assert "&lt;script&gt;" in r.text or "%3Cscript%3E" in r.text


@pytest.mark.parametrize(("url", "param", "value"), [
    ("https://www.google.co.uk/search?q=volcanoes", "safe", "active"),
    ("https://www.google.com/search?q=volcanoes&safe=off", "safe", "active"),
    ("https://www.bing.com/search?q=volcanoes&adlt=off", "adlt", "strict"),
    ("https://duckduckgo.com/?q=volcanoes", "kp", "1"),
])
def test_safe_search_rewrite_reaches_origin(proxy, url, param, value):
    host = url.split("/")[2]
    with proxy.client() as c:
        assert c.get(url).status_code == 200
    seen = proxy.origin.requests_to(host)[-1]
    assert f"{param}={value}" in seen.path
    assert f"{param}=off" not in seen.path
    assert "q=volcanoes" in seen.path


def test_youtube_restrict_header_for_pupils(proxy):
    with proxy.client() as c:
        assert c.get("https://www.youtube.com/results?search_query=volcanoes").status_code == 200
    seen = proxy.origin.requests_to("www.youtube.com")[-1]
    assert seen.headers.get("youtube-restrict") == "Strict"


def test_doh_refused_by_host_and_by_shape(proxy):
    query = bytes.fromhex("abcd01000001000000000000076578616d706c6503636f6d0000010001")
    with proxy.client() as c:
        assert c.get("https://dns.google/dns-query?dns=q80BAAABAAAAAAAAB2V4YW1wbGUDY29tAAABAAE").status_code == 403
        # An unknown host answering DoH is still refused by the request's shape.
        r = c.post("https://doh.unlisted-resolver.example/resolve", content=query,
                   headers={"Content-Type": "application/dns-message"})
        assert r.status_code == 403
        assert "DNS over HTTPS" in r.text
    assert not proxy.origin.requests_to("doh.unlisted-resolver.example")


def test_vpn_attempts_raise_one_incident_per_burst_for_it_services(proxy):
    def attempts() -> int:
        return sum(i.count for i in incidents(proxy, category="vpn"))

    before = attempts()
    with proxy.client() as c:
        for _ in range(3):
            assert c.get("https://www.expressvpn.com/vpn-download").status_code == 403
    assert wait_for(lambda: attempts() == before + 3), "every attempt is counted"
    found = incidents(proxy, category="vpn")
    assert len(found) == 1, "a burst from one client is one incident with a count"
    assert found[0].queue == "it_services"
    assert found[0].source == "proxy"
    assert found[0].client_ip == "127.0.0.1"


def test_web_proxy_script_url_blocked_on_any_host(proxy):
    with proxy.client() as c:
        r = c.get("https://innocent-looking.example.net/browse.php?u=https%3A%2F%2Fwww.bet365.com%2F&b=4")
    assert r.status_code == 403
    assert "Web proxies and anonymisers" in r.text


def _raw(proxy, request: bytes, tunnel_to: str | None = None) -> bytes:
    """One request as the client writes it (a Host header of its choosing), straight or in a CONNECT tunnel."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=15)
    try:
        if tunnel_to:
            sock.sendall(f"CONNECT {tunnel_to}:443 HTTP/1.1\r\nHost: {tunnel_to}:443\r\n\r\n".encode())
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            sock = ssl.create_default_context(cafile=proxy.ca).wrap_socket(sock, server_hostname=tunnel_to)
        sock.sendall(request)  # with Connection: close, so the answer ends where the stream does
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data
    finally:
        sock.close()


def test_a_spoofed_host_header_neither_reaches_a_blocked_site_nor_hides_one(proxy):
    proxy.origin.route("/spoof", "<p>the page</p>")
    # Absolute-form: the proxy connects where the request line says, whatever Host claims.
    got = _raw(proxy, b"GET http://www.bet365.com/spoof HTTP/1.1\r\nHost: www.example.org\r\nConnection: close\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 403") and b"Gambling" in got
    assert not proxy.origin.requests_to("www.bet365.com") and not [
        s for s in proxy.origin.requests_to("www.example.org") if s.path == "/spoof"]
    # ... and the origin is told the host that was decided on (RFC 9112 3.2.2), not the one claimed.
    got = _raw(proxy, b"GET http://www.example.org/spoof HTTP/1.1\r\nHost: www.bet365.com\r\nConnection: close\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"<p>the page</p>")
    assert [s.path for s in proxy.origin.requests_to("www.example.org")] .count("/spoof") == 1
    assert not proxy.origin.requests_to("www.bet365.com")
    # In a tunnel (domain fronting): the tunnel's host and the Host header are both decided on.
    got = _raw(proxy, b"GET /spoof HTTP/1.1\r\nHost: www.bet365.com\r\nConnection: close\r\n\r\n", "www.example.org")
    assert got.startswith(b"HTTP/1.1 403") and b"Gambling" in got
    assert [s.path for s in proxy.origin.requests_to("www.example.org")].count("/spoof") == 1
    def spoofed() -> list:
        return [a for a in access_rows(proxy, "www.bet365.com") if a.path == "/spoof"]

    assert wait_for(lambda: len(spoofed()) == 2)
    assert {a.action for a in spoofed()} == {"block"}
