"""RADIUS accounting packets (RFC 2866): decoded and encoded here, with no dictionary files.

    decode() -> AccountingRequest | Rejected   (the Request Authenticator checked with the secret)
    encode_request(), encode_response()
    account_name(): the User-Name an 802.1X sign-in carries -> the username the store holds
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

ACCOUNTING_REQUEST, ACCOUNTING_RESPONSE = 4, 5
HEADER, MAX_PACKET = 20, 4096  # RFC 2865 section 3

# Attribute types (RFC 2865, 2866, 3162) read here.
USER_NAME, NAS_IP_ADDRESS, FRAMED_IP_ADDRESS = 1, 4, 8
CALLING_STATION_ID, NAS_IDENTIFIER = 31, 32
ACCT_STATUS_TYPE, ACCT_SESSION_ID, ACCT_INTERIM_INTERVAL = 40, 44, 85
FRAMED_IPV6_ADDRESS = 168

START, STOP, INTERIM_UPDATE, ACCOUNTING_ON, ACCOUNTING_OFF = 1, 2, 3, 7, 8
STATUS_NAMES = {START: "start", STOP: "stop", INTERIM_UPDATE: "interim_update", ACCOUNTING_ON: "accounting_on",
                ACCOUNTING_OFF: "accounting_off"}
_INTEGERS = {ACCT_STATUS_TYPE: "Acct-Status-Type", ACCT_INTERIM_INTERVAL: "Acct-Interim-Interval"}
_IPV4 = {NAS_IP_ADDRESS: "NAS-IP-Address", FRAMED_IP_ADDRESS: "Framed-IP-Address"}
_TEXT = {USER_NAME: "User-Name", CALLING_STATION_ID: "Calling-Station-Id", NAS_IDENTIFIER: "NAS-Identifier",
         ACCT_SESSION_ID: "Acct-Session-Id"}
# Framed-IP-Address values that are instructions to the NAS, not an address (RFC 2865 5.8).
_NOT_AN_ADDRESS = {"255.255.255.255", "255.255.255.254", "0.0.0.0"}


# -- codec -----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AccountingRequest:
    """One Accounting-Request whose authenticator checked out, with the attributes used here."""

    identifier: int
    authenticator: bytes
    status: int  # Acct-Status-Type
    user_name: str | None = None
    nas_ip: str | None = None
    nas_identifier: str | None = None
    framed_ip: str | None = None
    framed_ipv6: str | None = None
    calling_station_id: str | None = None
    session_id: str | None = None
    interim_interval: int | None = None  # seconds

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, "other")

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(a for a in (self.framed_ip, self.framed_ipv6) if a)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A datagram that is not a usable Accounting-Request: never answered."""

    result: str  # malformed | bad_authenticator
    reason: str


def _authenticator(header: bytes, auth: bytes, attributes: bytes, secret: bytes) -> bytes:
    return hashlib.md5(header + auth + attributes + secret, usedforsecurity=False).digest()


def encode_request(identifier: int, attributes: Sequence[tuple[int, bytes]], secret: bytes) -> bytes:
    """An Accounting-Request with its Request Authenticator (for tests and tools)."""
    body = b"".join(bytes((t, len(v) + 2)) + v for t, v in attributes)
    header = bytes((ACCOUNTING_REQUEST, identifier)) + (HEADER + len(body)).to_bytes(2, "big")
    return header + _authenticator(header, bytes(16), body, secret) + body


def encode_response(request: AccountingRequest, secret: bytes) -> bytes:
    """Accounting-Response (no attributes): MD5(Code+ID+Length+RequestAuth+Attributes+Secret)."""
    header = bytes((ACCOUNTING_RESPONSE, request.identifier)) + HEADER.to_bytes(2, "big")
    return header + _authenticator(header, request.authenticator, b"", secret)


def decode(data: bytes, secret: bytes) -> AccountingRequest | Rejected:
    """Check a datagram is an Accounting-Request signed with `secret` and read it. Never raises."""
    if len(data) < HEADER:
        return Rejected("malformed", f"{len(data)} octets, shorter than a RADIUS header ({HEADER})")
    code, identifier, length = data[0], data[1], int.from_bytes(data[2:4], "big")
    if code != ACCOUNTING_REQUEST:
        return Rejected("malformed", f"code {code} is not Accounting-Request ({ACCOUNTING_REQUEST})")
    if not HEADER <= length <= MAX_PACKET:
        return Rejected("malformed", f"Length field {length} is outside {HEADER}..{MAX_PACKET}")
    if length > len(data):
        return Rejected("malformed", f"truncated: Length says {length} octets, the datagram has {len(data)}")
    packet = data[:length]  # octets past Length are padding (RFC 2865 section 3)
    attributes: list[tuple[int, bytes]] = []
    i = HEADER
    while i < length:
        if i + 2 > length:
            return Rejected("malformed", f"truncated attribute header at octet {i}")
        kind, size = packet[i], packet[i + 1]
        if size < 2 or i + size > length:
            return Rejected("malformed", f"attribute {kind} at octet {i} has length {size}, "
                                         f"{length - i} octets left")
        attributes.append((kind, packet[i + 2:i + size]))
        i += size
    expected = _authenticator(packet[:4], bytes(16), packet[HEADER:], secret)
    if not hmac.compare_digest(expected, packet[4:HEADER]):
        return Rejected("bad_authenticator", "Request Authenticator does not match (wrong shared secret?)")
    return _typed(identifier, packet[4:HEADER], attributes)


def _typed(identifier: int, authenticator: bytes, attributes: list[tuple[int, bytes]]) -> AccountingRequest | Rejected:
    ints: dict[int, int] = {}
    addresses: dict[int, str] = {}
    texts: dict[int, str] = {}
    for kind, raw in attributes:
        if kind in ints or kind in addresses or kind in texts:
            continue  # the first of a repeated attribute counts, as in FreeRADIUS's own lookups
        if kind in _INTEGERS or kind in _IPV4:
            if len(raw) != 4:
                return Rejected("malformed", f"{(_INTEGERS | _IPV4)[kind]} is {len(raw)} octets, not 4")
            if kind in _INTEGERS:
                ints[kind] = int.from_bytes(raw, "big")
            else:
                addresses[kind] = str(ipaddress.IPv4Address(raw))
        elif kind == FRAMED_IPV6_ADDRESS:
            if len(raw) != 16:
                return Rejected("malformed", f"Framed-IPv6-Address is {len(raw)} octets, not 16")
            addresses[kind] = str(ipaddress.IPv6Address(raw))
        elif kind in _TEXT:
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError:
                return Rejected("malformed", f"{_TEXT[kind]} is not UTF-8 text")
            if "\x00" in value:
                return Rejected("malformed", f"{_TEXT[kind]} contains a NUL")
            texts[kind] = value.strip()
    if ACCT_STATUS_TYPE not in ints:
        return Rejected("malformed", "no Acct-Status-Type")
    framed = addresses.get(FRAMED_IP_ADDRESS)
    return AccountingRequest(
        identifier=identifier, authenticator=authenticator, status=ints[ACCT_STATUS_TYPE],
        user_name=texts.get(USER_NAME) or None, nas_ip=addresses.get(NAS_IP_ADDRESS),
        nas_identifier=texts.get(NAS_IDENTIFIER) or None,
        framed_ip=None if framed in _NOT_AN_ADDRESS else framed, framed_ipv6=addresses.get(FRAMED_IPV6_ADDRESS),
        calling_station_id=texts.get(CALLING_STATION_ID) or None, session_id=texts.get(ACCT_SESSION_ID) or None,
        interim_interval=ints.get(ACCT_INTERIM_INTERVAL) or None)


def account_name(user_name: str) -> str | None:
    r"""The users-table name an 802.1X identity stands for, lower case; None for a machine sign-in.

    jsmith@school.internal, SCHOOL\jsmith, JSmith -> jsmith; host/PC1.school.internal, PC1$ -> None."""
    name = user_name.strip()
    if name.lower().startswith("host/") or name.endswith("$"):
        return None
    name = name.rsplit("\\", 1)[-1].split("@", 1)[0].strip().lower()
    return name or None
