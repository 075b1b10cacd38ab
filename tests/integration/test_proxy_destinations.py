"""What the proxy will not reach: its own machine (loopback services, its own port) and link-local
addresses, however the host is spelt; and IP addresses in disguise, which pupils may not use."""

from __future__ import annotations

import base64
import ipaddress
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import psutil
import pytest

from esafety.auth import hash_password
from esafety.store.db import sessions
from esafety.store.models import User
from tests.integration.conftest import access_rows, wait_for
from tests.support.proxy import start_proxy

pytestmark = pytest.mark.xdist_group("proxy-destinations")

SECRET = b"root console: the keys to everything"


class _Console(BaseHTTPRequestHandler):
    """A service that listens on loopback only, trusting that nobody else can reach it."""
    hits = 0

    def do_GET(self) -> None:  # noqa: N802
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(SECRET)))
        self.end_headers()
        self.wfile.write(SECRET)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def console() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Console)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def _staff(proxy, name: str) -> str:
    """Proxy credentials of a new member of staff, whom the policy lets use IP addresses."""
    with sessions(proxy.database_url)() as s:
        s.add(User(username=name, policy_group="staff", password_hash=hash_password("a long passphrase")))
        s.commit()
    return "Basic " + base64.b64encode(f"{name}:a long passphrase".encode()).decode()


@pytest.fixture(scope="module")
def staff(proxy) -> str:
    return _staff(proxy, "mr.ahmed")


def _get(proxy, url: str, auth: str | None = None) -> bytes:
    """An absolute-form GET written as a client may write it (hosts no URL library would pass on)."""
    host = re.match(r"http://([^/]+)", url).group(1)
    head = f"GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    if auth:
        head += f"Proxy-Authorization: {auth}\r\n"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as sock:
        sock.sendall(head.encode() + b"\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


SPELLINGS = ["localhost", "127.0.0.1", "127.1", "2130706433", "0x7f000001", "[::ffff:127.0.0.1]", "[::1]"]


def test_loopback_services_are_out_of_reach_however_the_host_is_spelt(proxy, console, staff):
    for host in SPELLINGS:
        got = _get(proxy, f"http://{host}:{console}/", staff)
        assert got.startswith(b"HTTP/1.1 502"), (host, got[:200])
        assert b"proxy&#x27;s own machine" in got or b"proxy's own machine" in got, host
        assert SECRET not in got
    assert _Console.hits == 0, "the loopback service never saw a request"
    # The proxy's own metrics port too, and the proxy itself (a request that would loop through it).
    assert b"esafety_proxy_requests_total" not in _get(proxy, f"http://localhost:{proxy.metrics_port}/metrics", staff)
    assert _get(proxy, f"http://localhost:{proxy.port}/", staff).startswith(b"HTTP/1.1 502")
    def refused() -> list:
        return [a for a in access_rows(proxy) if a.category == "local_network"]

    assert wait_for(lambda: len(refused()) >= len(SPELLINGS) + 2), "every refusal reaches the access log"
    rows = refused()
    assert {(a.action, a.status, a.username) for a in rows} == {("block", 502, "mr.ahmed")}
    metrics = httpx.get(f"http://127.0.0.1:{proxy.metrics_port}/metrics").text
    assert re.search(r'esafety_proxy_bad_requests_total\{reason="local_destination"\} ([0-9.]+)', metrics)


def test_the_proxy_port_on_the_machines_other_addresses_is_refused(proxy, staff):
    # Listening on every interface, a request to its own LAN address would come back to itself.
    own = [a.address for nics in psutil.net_if_addrs().values() for a in nics
           if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback]
    if not own:
        pytest.skip("this machine has no address besides loopback")
    got = _get(proxy, f"http://{own[0]}:{proxy.port}/", staff)
    assert got.startswith(b"HTTP/1.1 502") and b"own machine" in got


def test_the_local_origins_option_still_reaches_what_it_names(proxy):
    # The test origins listen on 127.0.0.1 too: named in esafety_local_origins, they serve.
    proxy.origin.route("/ok", "<p>fine</p>")
    with proxy.client() as c:
        assert c.get("http://www.example.org/ok").text == "<p>fine</p>"


@pytest.mark.parametrize("host", ["169090600", "10.20.30.40", "0xa.0x14.0x1e.0x28", "012.024.036.050", "10.1314856"])
def test_an_address_in_disguise_is_still_an_ip_literal_for_pupils(proxy, host):
    got = _get(proxy, f"http://{host}/admin")
    assert got.startswith(b"HTTP/1.1 403") and b"IP address instead of a name" in got, host


REBIND = '''
import asyncio, socket
class Rebind:
    """A resolver that answers a harmless address, then 127.0.0.1 (DNS rebinding), for one name."""
    def running(self):
        loop = asyncio.get_running_loop()
        real, calls = loop.getaddrinfo, [0]
        async def getaddrinfo(host, port, *args, **kwargs):
            if host != "rebind.test":
                return await real(host, port, *args, **kwargs)
            calls[0] += 1
            ip = "192.0.2.77" if calls[0] % 2 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        loop.getaddrinfo = getaddrinfo
addons = [Rebind()]
'''


def test_a_name_that_resolves_anew_to_loopback_is_cut_before_the_request_is_sent(tmp_path, console):
    script = tmp_path / "rebind.py"
    script.write_text(REBIND)
    p = start_proxy(tmp_path, extra=["-s", str(script)])
    try:
        before = _Console.hits
        got = _get(p, f"http://rebind.test:{console}/", _staff(p, "ms.khan"))
        assert got.startswith(b"HTTP/1.1 502") and SECRET not in got
        assert _Console.hits == before, "the loopback service never saw the request"
        assert "resolved anew to a forbidden address" in p.log()
    finally:
        p.stop()
