"""MAC addresses as people type them; private (locally administered) ones detected and explained;
DHCP leases files parsed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from esafety.registrations.leases import current, parse_dnsmasq, parse_isc
from esafety.registrations.macaddr import MacError, parse_mac


@pytest.mark.parametrize("text", ["3C:22:FB:12:34:56", "3c-22-fb-12-34-56", "3c22.fb12.3456", "3c22fb123456",
                                  " 3c:22:fb:12:34:56 "])
def test_spellings_normalise(text: str) -> None:
    mac = parse_mac(text)
    assert mac.value == "3c:22:fb:12:34:56" and not mac.locally_administered and mac.bare == "3c22fb123456"


@pytest.mark.parametrize("text,why", [
    ("", "Enter"), ("3c:22:fb:12:34", "six pairs"), ("3c:22:fb:12:34:5g", "six pairs"),
    ("3c:22-fb:12:34:56", "six pairs"), ("00:00:00:00:00:00", "not a real"), ("ff:ff:ff:ff:ff:ff", "group"),
    ("01:00:5e:00:00:01", "group"), ("3c:22:fb:12:34:56:78", "six pairs"), ("<script>", "six pairs"),
])
def test_bad_addresses_are_explained(text: str, why: str) -> None:
    with pytest.raises(MacError, match=why):
        parse_mac(text)


@pytest.mark.parametrize("first", ["02", "06", "0a", "0e", "da", "f6"])
def test_locally_administered_bit_marks_private_addresses(first: str) -> None:
    assert parse_mac(f"{first}:11:22:33:44:55").locally_administered


def test_dnsmasq_leases() -> None:
    text = ("1900000000 3c:22:fb:12:34:56 10.20.0.15 sams-iphone 01:3c:22:fb:12:34:56\n"
            "0 aa:bb:cc:dd:ee:f0 10.20.0.16 * *\n"
            "duid 00:01:00:01:2c:aa\n"
            "garbage line\n"
            "1000 3c:22:fb:12:34:57 10.20.0.17 old *\n")
    leases = parse_dnsmasq(text)
    assert [(x.mac, x.ip) for x in leases] == [("3c:22:fb:12:34:56", "10.20.0.15"), ("aa:bb:cc:dd:ee:f0", "10.20.0.16"),
                                              ("3c:22:fb:12:34:57", "10.20.0.17")]
    assert leases[1].expires is None and leases[0].hostname == "sams-iphone"
    live = current(leases, datetime(2026, 11, 22, tzinfo=UTC))
    assert set(live) == {"3c:22:fb:12:34:56", "aa:bb:cc:dd:ee:f0"}  # the 1970 lease has expired


def test_isc_leases_later_blocks_win_and_freed_leases_drop() -> None:
    text = """
lease 10.20.0.15 {
  starts 4 2026/11/19 10:00:00;
  ends 4 2030/11/19 22:00:00;
  binding state active;
  next binding state free;
  hardware ethernet 3c:22:fb:12:34:56;
  client-hostname "sams-iphone";
}
lease 10.20.0.16 {
  ends never;
  binding state active;
  hardware ethernet aa:bb:cc:dd:ee:f0;
}
lease 10.20.0.16 {
  ends 4 2026/11/19 11:00:00;
  binding state free;
  hardware ethernet aa:bb:cc:dd:ee:f0;
}
"""
    leases = parse_isc(text)
    assert [(x.mac, x.ip, x.hostname) for x in leases] == [("3c:22:fb:12:34:56", "10.20.0.15", "sams-iphone")]
    assert leases[0].expires == datetime(2030, 11, 19, 22, tzinfo=UTC)
