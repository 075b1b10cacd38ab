"""Signed tokens that carry a client IP from the proxy to the captive-portal sign-in page.

The dashboard sees a browser's own address only when the browser reaches it directly (behind the
proxy, or NAT, it sees another), so the proxy vouches for the address it saw: it redirects an
unidentified browser to `/portal?t=TOKEN`, and a sign-in with that token binds the token's IP.

A token is base64url (no padding) of

    version (1 byte) | issued-at (4 bytes, big-endian Unix seconds) | ip (ASCII) | MAC (16 bytes)

MAC = HMAC-SHA256(key, "esafety-portal\\0" + everything before it), cut to 128 bits. The IP is kept
as the exact text the proxy saw (not re-formatted: "::ffff:10.0.0.5" must come back as it went, as
that is the key of the proxy's client-IP table). An IPv4 token is ~40 characters.

The key is 32 random bytes in `{home}/portal.key` (mode 0600), made on first use; the proxy and the
dashboard on one machine share it. Several machines share one by pointing ESAFETY_PORTAL_KEY_FILE
at a copy of the same file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import struct
import time
from collections.abc import Mapping
from pathlib import Path

KEY_BYTES = 32
KEY_FILE = "portal.key"
KEY_ENV = "ESAFETY_PORTAL_KEY_FILE"
VERSION = 1
MAX_AGE = 600.0  # seconds: a link is used at once, or the next page the pupil opens makes a new one
_CONTEXT = b"esafety-portal\0"  # the key signs nothing else, but keep its uses apart anyway
_HEAD = struct.Struct(">BI")
_MAC_BYTES = 16
_MAX_IP = 45  # the longest IPv6 text form (IPv4-mapped)
_CLOCK_SKEW = 60.0  # proxy and dashboard on different machines: a token "from the future" by this much is fine


class PortalKeyError(Exception):
    """The key file exists but is not a key (wrong length, unreadable)."""


def key_file(home: Path, env: Mapping[str, str] | None = None) -> Path:
    """ESAFETY_PORTAL_KEY_FILE if set, else {home}/portal.key."""
    e = os.environ if env is None else env
    return Path(e[KEY_ENV]) if e.get(KEY_ENV) else home / KEY_FILE


def load_key(home: Path, path: Path | None = None) -> bytes:
    """The portal key, made on first use. Two processes starting together agree on one key: the
    file is created with O_EXCL, so exactly one of them writes it and the other reads it."""
    path = path or key_file(home)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it between our read and our create
        return _read(path)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def _read(path: Path) -> bytes:
    # A creator writes its 32 bytes just after O_EXCL: wait briefly for them rather than fail.
    for _ in range(50):
        data = path.read_bytes()
        if len(data) >= KEY_BYTES:
            break
        time.sleep(0.02)
    if len(data) != KEY_BYTES:
        raise PortalKeyError(f"{path} holds {len(data)} bytes, not a {KEY_BYTES}-byte portal key; "
                             "delete it to make a new one (open sign-in links stop working)")
    return data


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, _CONTEXT + body, hashlib.sha256).digest()[:_MAC_BYTES]


def issue_token(key: bytes, client_ip: str, now: float) -> str:
    """A URL-safe token vouching that the proxy saw `client_ip` at `now`. ValueError if it is not an IP."""
    ip = client_ip.encode("ascii", "strict") if client_ip.isascii() else b""
    if not ip or len(ip) > _MAX_IP or not is_ip(client_ip):
        raise ValueError(f"not a client IP address: {client_ip!r}")
    body = _HEAD.pack(VERSION, int(now)) + ip
    return base64.urlsafe_b64encode(body + _mac(key, body)).rstrip(b"=").decode("ascii")


def verify_token(key: bytes, token: str, now: float, max_age: float = MAX_AGE) -> str | None:
    """The client IP the token vouches for, or None: a bad MAC, expired, malformed. Never raises."""
    try:
        if not isinstance(token, str) or not token.isascii() or len(token) > 128:
            return None
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, binascii.Error):
        return None
    if len(raw) < _HEAD.size + 1 + _MAC_BYTES:
        return None
    body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(key, body)):  # constant time: no byte-by-byte oracle
        return None
    version, issued = _HEAD.unpack_from(body)
    if version != VERSION or not -_CLOCK_SKEW <= now - issued <= max_age:
        return None
    ip = body[_HEAD.size:].decode("ascii", "replace")
    return ip if is_ip(ip) else None


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
