"""MAC addresses as people type them: parse, normalise, and explain what is wrong.

Accepted spellings: aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF, aabb.ccdd.eeff and aabbccddeeff.
Stored as lower-case, colon-separated. Group (multicast/broadcast) and all-zero addresses are
never a device. Locally administered addresses (bit 0x02 of the first octet) are what phones and
laptops use for "private" / "random" WiFi addresses; they are flagged and explained, because a
device that changes its address per network, or over time, will drop off the registration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEX = re.compile(r"^[0-9a-f]{12}$")
_SHAPES = (
    re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$"),
    re.compile(r"^[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}$"),
    re.compile(r"^[0-9a-f]{12}$"),
)

PRIVATE_EXPLANATION = (
    "This is a private (randomised) WiFi address: the second hex digit is 2, 6, A or E, which "
    "means the device made it up rather than using its built-in address. Many phones and laptops "
    "do this per network and some change it over time, which would disconnect the device after "
    "approval. Either turn the private address off for the school network (iPhone/iPad: Settings > "
    "Wi-Fi > (i) > Private Wi-Fi Address: Off; Android: Wi-Fi > network > Privacy > Use device MAC; "
    "Windows: Wi-Fi > Hardware properties > Random hardware addresses: Off) and type the new "
    "address, or, if the device keeps this address fixed for the school network (iPhone 'Fixed', "
    "Android per-network), tick the box to confirm it."
)


class MacError(ValueError):
    """The text is not a usable device MAC address; the message says why, for the person who typed it."""


@dataclass(frozen=True)
class Mac:
    value: str  # aa:bb:cc:dd:ee:ff

    @property
    def octets(self) -> tuple[int, ...]:
        return tuple(int(p, 16) for p in self.value.split(":"))

    @property
    def locally_administered(self) -> bool:
        return bool(self.octets[0] & 0x02)

    @property
    def bare(self) -> str:
        """aabbccddeeff, as RADIUS MAC authentication sends it."""
        return self.value.replace(":", "")

    def __str__(self) -> str:
        return self.value


def parse_mac(text: str) -> Mac:
    raw = (text or "").strip().lower()
    if not raw:
        raise MacError("Enter the device's WiFi (MAC) address, e.g. 3c:22:fb:12:34:56.")
    if len(raw) > 20 or not any(s.match(raw) for s in _SHAPES):
        raise MacError("That is not a MAC address: it should be six pairs of hex digits (0-9, a-f), "
                       "e.g. 3c:22:fb:12:34:56.")
    digits = re.sub(r"[^0-9a-f]", "", raw)
    assert _HEX.match(digits)
    value = ":".join(digits[i:i + 2] for i in range(0, 12, 2))
    mac = Mac(value)
    if digits == "0" * 12:
        raise MacError("00:00:00:00:00:00 is not a real device address.")
    if mac.octets[0] & 0x01:
        raise MacError("That is a group (multicast or broadcast) address, not a device's address: "
                       "check the second hex digit (it must be even).")
    return mac
