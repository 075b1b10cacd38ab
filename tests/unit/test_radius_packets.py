"""The RADIUS accounting codec (esafety/identity/radius.py) against real implementations:
packets radclient (FreeRADIUS) sends, replies radclient accepts or refuses, pyrad's packets
and pyrad's check of our replies; and datagrams built to break it."""

from __future__ import annotations

import io
import random
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from pyrad.dictionary import Dictionary
from pyrad.packet import AccountingResponse, AcctPacket

from esafety.identity.radius_packets import (
    ACCT_SESSION_ID,
    ACCT_STATUS_TYPE,
    FRAMED_IP_ADDRESS,
    START,
    STOP,
    USER_NAME,
    AccountingRequest,
    Rejected,
    account_name,
    decode,
    encode_request,
    encode_response,
)

SECRET = b"testing123"
# What `radclient 127.0.0.1:PORT acct testing123` sent (captured off the wire) for:
#   User-Name = "jsmith", Acct-Status-Type = Start, Framed-IP-Address = 10.1.2.3, Acct-Session-Id = "abc"
RADCLIENT_START = bytes.fromhex("042f002d7e9c50a362e4be0f064b626819fb3ddf"  # code, id, length, authenticator
                                "01086a736d697468" "28060000000108060a010203" "2c05616263")

PYRAD_DICTIONARY = """\
ATTRIBUTE User-Name 1 string
ATTRIBUTE NAS-IP-Address 4 ipaddr
ATTRIBUTE Framed-IP-Address 8 ipaddr
ATTRIBUTE Calling-Station-Id 31 string
ATTRIBUTE NAS-Identifier 32 string
ATTRIBUTE Acct-Status-Type 40 integer
ATTRIBUTE Acct-Session-Id 44 string
ATTRIBUTE Acct-Interim-Interval 85 integer
ATTRIBUTE Framed-IPv6-Address 168 ipv6addr
VALUE Acct-Status-Type Start 1
VALUE Acct-Status-Type Stop 2
VALUE Acct-Status-Type Interim-Update 3
"""


def radclient() -> str:
    path = shutil.which("radclient")
    assert path, "radclient is missing: apt-get install freeradius-utils (scripts/install-system-deps.sh)"
    return path


@contextmanager
def udp_peer(answer: Callable[[bytes], bytes | None]) -> Iterator[tuple[int, list[bytes]]]:
    """A UDP socket on a free port that records what arrives and replies with answer(datagram)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    got: list[bytes] = []
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            got.append(data)
            reply = answer(data)
            if reply is not None:
                sock.sendto(reply, addr)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield sock.getsockname()[1], got
    finally:
        done.set()
        t.join()
        sock.close()


def send_with_radclient(port: int, lines: str, secret: str = "testing123") -> subprocess.CompletedProcess[str]:
    return subprocess.run([radclient(), "-x", "-t", "1", "-r", "1", f"127.0.0.1:{port}", "acct", secret],
                          input=lines, capture_output=True, text=True, timeout=30)


def ok(req: AccountingRequest | Rejected) -> AccountingRequest:
    assert isinstance(req, AccountingRequest), req
    return req


def test_a_packet_radclient_sent_decodes_and_its_authenticator_checks_out() -> None:
    req = ok(decode(RADCLIENT_START, SECRET))
    assert (req.identifier, req.status, req.status_name) == (0x2F, START, "start")
    assert (req.user_name, req.framed_ip, req.session_id) == ("jsmith", "10.1.2.3", "abc")
    assert req.nas_ip is None and req.interim_interval is None
    assert decode(RADCLIENT_START, b"testing124") == Rejected(
        "bad_authenticator", "Request Authenticator does not match (wrong shared secret?)")


def test_every_attribute_radclient_sends_live() -> None:
    lines = ('User-Name = "SCHOOL\\\\jsmith"\nAcct-Status-Type = Interim-Update\nFramed-IP-Address = 10.20.0.7\n'
             'Framed-IPv6-Address = 2001:db8::7\nAcct-Session-Id = "5F3A-0001"\nNAS-IP-Address = 10.0.0.2\n'
             'NAS-Identifier = "ap-library"\nCalling-Station-Id = "3C-22-FB-12-34-56"\nAcct-Interim-Interval = 300\n')
    with udp_peer(lambda _d: None) as (port, got):
        send_with_radclient(port, lines)
    assert got, "radclient sent nothing"
    req = ok(decode(got[0], SECRET))
    assert req.status_name == "interim_update" and req.user_name == "SCHOOL\\jsmith"
    assert req.addresses == ("10.20.0.7", "2001:db8::7") and req.session_id == "5F3A-0001"
    assert (req.nas_ip, req.nas_identifier, req.calling_station_id) == ("10.0.0.2", "ap-library", "3C-22-FB-12-34-56")
    assert req.interim_interval == 300


def test_radclient_accepts_our_accounting_response_and_refuses_a_wrongly_signed_one() -> None:
    lines = 'User-Name = "amy"\nAcct-Status-Type = Stop\nFramed-IP-Address = 10.1.1.1\nAcct-Session-Id = "s1"\n'
    with udp_peer(lambda d: encode_response(ok(decode(d, SECRET)), SECRET)) as (port, _):
        r = send_with_radclient(port, lines)
    assert r.returncode == 0 and "Received Accounting-Response" in r.stdout, r.stdout + r.stderr
    with udp_peer(lambda d: encode_response(ok(decode(d, SECRET)), b"not-the-secret")) as (port, _):
        r = send_with_radclient(port, lines)
    assert r.returncode != 0 and "Received Accounting-Response" not in r.stdout


def test_pyrad_packets_decode_and_pyrad_verifies_our_response() -> None:
    d = Dictionary(io.StringIO(PYRAD_DICTIONARY))
    p = AcctPacket(id=201, secret=SECRET, dict=d)
    p["User-Name"] = "jsmith@school.internal"
    p["Acct-Status-Type"] = "Start"
    p["Framed-IP-Address"] = "10.9.9.9"
    p["Acct-Session-Id"] = "abc-1"
    p["NAS-Identifier"] = "wlc1"
    p["Acct-Interim-Interval"] = 600
    raw = p.RequestPacket()
    req = ok(decode(raw, SECRET))
    assert (req.identifier, req.user_name, req.framed_ip, req.nas_identifier, req.interim_interval) == (
        201, "jsmith@school.internal", "10.9.9.9", "wlc1", 600)
    reply_raw = encode_response(req, SECRET)
    reply = AcctPacket(packet=reply_raw, secret=SECRET, dict=d)
    assert reply.code == AccountingResponse and p.VerifyReply(reply, reply_raw)
    wrong = AcctPacket(packet=encode_response(req, b"other"), secret=SECRET, dict=d)
    assert not p.VerifyReply(wrong)
    # ... and pyrad, as a server would, accepts a request we build.
    ours = AcctPacket(packet=encode_request(7, [(ACCT_STATUS_TYPE, START.to_bytes(4, "big")),
                                                (USER_NAME, b"amy")], SECRET), secret=SECRET, dict=d)
    assert ours.VerifyAcctRequest()


def _good(*extra: tuple[int, bytes]) -> list[tuple[int, bytes]]:
    return [(ACCT_STATUS_TYPE, START.to_bytes(4, "big")), (USER_NAME, b"amy"),
            (FRAMED_IP_ADDRESS, bytes([10, 0, 0, 9])), (ACCT_SESSION_ID, b"s-9"), *extra]


def _resign(packet: bytes) -> bytes:
    """The same octets with a Request Authenticator computed over them (a NAS that knows the secret)."""
    import hashlib

    digest = hashlib.md5(packet[:4] + bytes(16) + packet[20:] + SECRET).digest()
    return packet[:4] + digest + packet[20:]


@pytest.mark.parametrize(("packet", "reason"), [
    (b"", "0 octets, shorter than a RADIUS header (20)"),
    (bytes(19), "19 octets, shorter than a RADIUS header (20)"),
    (bytes([1, 1, 0, 20]) + bytes(16), "code 1 is not Accounting-Request (4)"),
    (bytes([5, 1, 0, 20]) + bytes(16), "code 5 is not Accounting-Request (4)"),
    (bytes([4, 1, 0, 19]) + bytes(16), "Length field 19 is outside 20..4096"),
    (bytes([4, 1, 0x10, 0x01]) + bytes(4097), "Length field 4097 is outside 20..4096"),
    (bytes([4, 1, 0, 40]) + bytes(16), "truncated: Length says 40 octets, the datagram has 20"),
    (bytes([4, 1, 0, 21]) + bytes(16) + b"\x01", "truncated attribute header at octet 20"),
    (bytes([4, 1, 0, 24]) + bytes(16) + b"\x01\x00\x00\x00", "attribute 1 at octet 20 has length 0, 4 octets left"),
    (bytes([4, 1, 0, 24]) + bytes(16) + b"\x01\x01\x00\x00", "attribute 1 at octet 20 has length 1, 4 octets left"),
    (bytes([4, 1, 0, 24]) + bytes(16) + b"\x01\x09abcdefg", "attribute 1 at octet 20 has length 9, 4 octets left"),
])
def test_broken_framing_is_rejected_with_its_reason(packet: bytes, reason: str) -> None:
    assert decode(packet, SECRET) == Rejected("malformed", reason)


@pytest.mark.parametrize(("attributes", "reason"), [
    ([(USER_NAME, b"amy")], "no Acct-Status-Type"),
    ([(ACCT_STATUS_TYPE, b"\x00\x01")], "Acct-Status-Type is 2 octets, not 4"),
    (_good((FRAMED_IP_ADDRESS, b"\x0a\x00\x00")), None),  # a repeat: the first one counts
    ([(ACCT_STATUS_TYPE, START.to_bytes(4, "big")), (FRAMED_IP_ADDRESS, b"\x0a\x00\x00")],
     "Framed-IP-Address is 3 octets, not 4"),
    ([(ACCT_STATUS_TYPE, START.to_bytes(4, "big")), (168, bytes(15))], "Framed-IPv6-Address is 15 octets, not 16"),
    ([(ACCT_STATUS_TYPE, START.to_bytes(4, "big")), (USER_NAME, b"\xff\xfe")], "User-Name is not UTF-8 text"),
    ([(ACCT_STATUS_TYPE, START.to_bytes(4, "big")), (USER_NAME, b"amy\x00.y9")], "User-Name contains a NUL"),
])
def test_signed_but_unusable_attributes_are_rejected(attributes: list[tuple[int, bytes]], reason: str | None) -> None:
    got = decode(encode_request(3, attributes, SECRET), SECRET)
    if reason is None:
        assert ok(got).framed_ip == "10.0.0.9"
    else:
        assert got == Rejected("malformed", reason)


def test_padding_past_the_length_field_is_ignored_and_unknown_attributes_skipped() -> None:
    raw = encode_request(9, _good((26, b"\x00\x00\x01\x37\x01\x03x"), (80, bytes(16))), SECRET)
    req = ok(decode(raw + b"\x00" * 30, SECRET))
    assert (req.user_name, req.framed_ip, req.session_id) == ("amy", "10.0.0.9", "s-9")


def test_framed_ip_instructions_are_not_addresses() -> None:
    for special in ([255, 255, 255, 254], [255, 255, 255, 255], [0, 0, 0, 0]):
        attrs = [(ACCT_STATUS_TYPE, START.to_bytes(4, "big")), (FRAMED_IP_ADDRESS, bytes(special))]
        assert ok(decode(encode_request(1, attrs, SECRET), SECRET)).addresses == ()


def test_the_response_authenticator_covers_the_request_authenticator() -> None:
    a = ok(decode(encode_request(4, _good(), SECRET), SECRET))
    b = ok(decode(encode_request(4, _good((ACCT_SESSION_ID, b"other")), SECRET), SECRET))
    assert a.authenticator != b.authenticator
    ra, rb = encode_response(a, SECRET), encode_response(b, SECRET)
    assert ra[:4] == rb[:4] == bytes([5, 4, 0, 20]) and ra[4:] != rb[4:]


def test_random_damage_never_raises() -> None:
    rng = random.Random(2866)
    base = encode_request(77, _good((31, b"3c-22-fb-12-34-56"), (85, (300).to_bytes(4, "big"))), SECRET)
    outcomes: set[str] = set()
    for _ in range(4000):
        p = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            p[rng.randrange(len(p))] = rng.randrange(256)
        cut = bytes(p[:rng.randint(0, len(p))]) if rng.random() < 0.3 else bytes(p)
        for candidate in (cut, _resign(cut) if len(cut) >= 20 else cut):
            got = decode(candidate, SECRET)
            outcomes.add(got.result if isinstance(got, Rejected) else "decoded")
    assert {"malformed", "bad_authenticator", "decoded"} <= outcomes


@pytest.mark.parametrize(("name", "account"), [
    ("jsmith", "jsmith"), ("JSmith@School.Internal", "jsmith"), ("SCHOOL\\jsmith", "jsmith"),
    (" amy.y9 ", "amy.y9"), ("host/PC1.school.internal", None), ("HOST/pc1", None), ("PC1$", None),
    ("SCHOOL\\PC1$", None), ("@school.internal", None), ("", None),
])
def test_802_1x_identities_name_the_users_table_account(name: str, account: str | None) -> None:
    assert account_name(name) == account


def test_stop_and_status_names() -> None:
    req = ok(decode(encode_request(1, [(ACCT_STATUS_TYPE, STOP.to_bytes(4, "big"))], SECRET), SECRET))
    assert req.status_name == "stop"
    other = ok(decode(encode_request(1, [(ACCT_STATUS_TYPE, (9).to_bytes(4, "big"))], SECRET), SECRET))
    assert other.status_name == "other"
