"""Transparent mode for real: a client host of its own (a network namespace) whose web traffic
nftables redirects to mitmdump in transparent mode, as a school gateway does (deploy/transparent.md).

In transparent mode the client chooses both the address it dials and the Host it names. The proxy
decides on the name, so it must also connect to the name: dialling a blocked site's address with
an allowed site's name must not reach the blocked site (squid's host-header forgery check).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import free_port
from tests.integration.conftest import access_rows, wait_for
from tests.support import origin as origin_mod
from tests.support.netns import ClientHost, client_host
from tests.support.proxy import ProxyUnderTest, start_proxy

pytestmark = [
    pytest.mark.xdist_group("proxy-transparent"),
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"),
                       reason="transparent mode needs root, nft and ip (network namespaces)"),
]

FORGED = "www.example.org"  # an allowed name, claimed while dialling another site's address


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClientHost, ProxyUnderTest, origin_mod.Origin]]:
    tmp = tmp_path_factory.mktemp("transparent")
    port = free_port()
    with client_host() as ch:
        # The site the client really dials, on this machine's end of the pair; its web ports (the
        # gateway's 80 and 443) are the ones redirected to the proxy.
        (tmp / "dialled").mkdir()
        dialled, servers = origin_mod.start(tmp / "dialled", host=ch.host_ip)
        ch.redirect((dialled.http_port, dialled.https_port), port)
        proxy = start_proxy(tmp, listen_host=ch.host_ip, port=port, redirect=False, extra=["--mode", "transparent"])
        try:
            yield ch, proxy, dialled
        finally:
            proxy.stop()
            for s in servers:
                s.shutdown()


def _request(ch: ClientHost, port: int, host: str, path: str, tls: bool = False) -> str:
    """What the client host receives for one request it sends to the dialled address itself."""
    return ch.run(f"""
import socket, ssl
s = socket.create_connection(({ch.host_ip!r}, {port}), timeout=10)
if {tls!r}:
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    try:
        s = ctx.wrap_socket(s, server_hostname={host!r})
    except (ConnectionError, ssl.SSLError):
        raise SystemExit(print("no TLS session"))
s.sendall(b"GET {path} HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n")
data = b""
while True:
    try:
        chunk = s.recv(65536)
    except (ConnectionError, ssl.SSLError):
        break
    if not chunk:
        break
    data += chunk
print(data.decode("latin-1"))
""")


def test_a_forged_host_header_does_not_reach_the_dialled_address(setup):
    ch, proxy, dialled = setup
    dialled.route("/forged", "<p>the site the pupil really wanted</p>")
    got = _request(ch, dialled.http_port, FORGED, "/forged")
    assert "the site the pupil really wanted" not in got
    assert not [s for s in dialled.seen if s.path == "/forged"], "the dialled address saw the request"
    # The proxy went to the name it decided on (unresolvable here, so 502) and logged that name.
    assert got.startswith("HTTP/1.1 502")
    rows = wait_for(lambda: [a for a in access_rows(proxy, FORGED) if a.path == "/forged"])
    assert rows and rows[0].client_ip == ch.client_ip


def test_a_forged_sni_and_host_in_tls_do_not_reach_the_dialled_address(setup):
    ch, _proxy, dialled = setup
    dialled.route("/forged-tls", "<p>the site the pupil really wanted</p>")
    got = _request(ch, dialled.https_port, FORGED, "/forged-tls", tls=True)
    assert "the site the pupil really wanted" not in got
    assert not [s for s in dialled.seen if s.path == "/forged-tls"]


def test_a_blocked_name_is_blocked_whatever_address_was_dialled(setup):
    ch, _proxy, dialled = setup
    got = _request(ch, dialled.http_port, "www.bet365.com", "/")
    assert got.startswith("HTTP/1.1 403") and "Gambling" in got
    assert not dialled.requests_to("www.bet365.com")


def test_a_forged_no_inspect_sni_does_not_reach_the_dialled_address(setup):
    # Undecrypted (a no-inspect host, banking and health): the SNI is all the proxy sees, so the
    # tunnel goes to the name in it, not to whatever address was dialled.
    ch, _proxy, dialled = setup
    dialled.route("/passthrough", "<p>the site the pupil really wanted</p>")
    got = _request(ch, dialled.https_port, "www.samaritans.org", "/passthrough", tls=True)
    assert got.strip() == "no TLS session", "www.samaritans.org cannot be reached from here"
    assert not [s for s in dialled.seen if s.path == "/passthrough"]
