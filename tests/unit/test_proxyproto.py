"""The PROXY protocol v1 line haproxy puts before each connection to a worker."""

from __future__ import annotations

import pytest

from proxy_addons.proxyproto import parse_v1


def test_reads_the_client_address_and_the_header_length() -> None:
    data = b"PROXY TCP4 10.1.2.3 127.0.0.1 51000 8080\r\nGET http://a/ HTTP/1.1\r\n"
    assert parse_v1(data) == (("10.1.2.3", 51000), data.index(b"GET"))
    assert parse_v1(b"PROXY TCP6 2001:db8::1 ::1 4000 8080\r\n") == (("2001:db8::1", 4000), 38)


def test_unknown_keeps_the_connection_address() -> None:
    assert parse_v1(b"PROXY UNKNOWN\r\n") == (None, 15)


def test_incomplete_then_invalid() -> None:
    assert parse_v1(b"PROXY TCP4 10.1.") is None
    assert parse_v1(b"PRO") is None
    for bad in (b"GET http://a/ HTTP/1.1\r\n", b"PROXY TCP4 10.1.2.3\r\n", b"PROXY TCP4 nope 127.0.0.1 1 2\r\n",
                b"PROXY TCP4 10.1.2.3 127.0.0.1 70000 2\r\n", b"PROXY " + b"1" * 120):
        with pytest.raises(ValueError):
            parse_v1(bad)
