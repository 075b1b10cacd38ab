"""Captive-portal tokens: the proxy vouches for a client IP; the dashboard trusts only its own key's tokens."""

from __future__ import annotations

import base64
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from esafety.identity.portal import KEY_ENV, PortalKeyError, issue_token, key_file, load_key, verify_token

KEY = bytes(range(32))
NOW = 1_800_000_000.0


def test_round_trip_gives_back_the_ip_and_is_url_safe_and_short() -> None:
    token = issue_token(KEY, "10.20.30.40", NOW)
    assert verify_token(KEY, token, NOW + 5) == "10.20.30.40"
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert len(token) <= 48


@pytest.mark.parametrize("ip", ["2001:db8::17", "::ffff:10.0.0.5", "fe80::1%eth0", "::1"])
def test_ipv6_comes_back_exactly_as_the_proxy_saw_it(ip: str) -> None:
    # The proxy's client-IP table is keyed by the text mitmproxy reports; a re-formatted address
    # (::ffff:a00:5) would bind an address nobody connects from.
    assert verify_token(KEY, issue_token(KEY, ip, NOW), NOW) == ip


def test_every_tampered_byte_is_refused() -> None:
    token = issue_token(KEY, "10.0.0.7", NOW)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        forged = base64.urlsafe_b64encode(bytes(bad)).rstrip(b"=").decode()
        assert verify_token(KEY, forged, NOW) is None, f"byte {i} flipped and still accepted"


def test_another_ip_spliced_in_is_refused() -> None:
    mine = base64.urlsafe_b64decode(issue_token(KEY, "10.0.0.7", NOW) + "===")
    spliced = mine[:5] + b"10.0.0.8" + mine[-16:]
    assert verify_token(KEY, base64.urlsafe_b64encode(spliced).decode(), NOW) is None


def test_expired_and_future_tokens_are_refused() -> None:
    token = issue_token(KEY, "10.0.0.7", NOW)
    assert verify_token(KEY, token, NOW + 599) == "10.0.0.7"
    assert verify_token(KEY, token, NOW + 601) is None
    assert verify_token(KEY, token, NOW + 30, max_age=20) is None
    assert verify_token(KEY, token, NOW - 30) == "10.0.0.7"  # a little clock skew between machines
    assert verify_token(KEY, token, NOW - 3600) is None


def test_a_token_from_another_key_is_refused() -> None:
    token = issue_token(os.urandom(32), "10.0.0.7", NOW)
    assert verify_token(KEY, token, NOW) is None


@pytest.mark.parametrize("token", ["", "x", "====", "!!!!", "é" * 40, "A" * 60, "A" * 5000,
                                   base64.urlsafe_b64encode(b"\x01" * 21).decode()])
def test_malformed_tokens_are_refused_without_raising(token: str) -> None:
    assert verify_token(KEY, token, NOW) is None


def test_a_validly_signed_non_ip_or_other_version_is_refused() -> None:
    import hashlib
    import hmac
    import struct

    def sign(body: bytes) -> str:
        mac = hmac.new(KEY, b"esafety-portal\0" + body, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode()

    assert verify_token(KEY, sign(struct.pack(">BI", 1, int(NOW)) + b"10.0.0.7"), NOW) == "10.0.0.7"  # the format
    assert verify_token(KEY, sign(struct.pack(">BI", 1, int(NOW)) + b"not-an-ip"), NOW) is None
    assert verify_token(KEY, sign(struct.pack(">BI", 2, int(NOW)) + b"10.0.0.7"), NOW) is None


@pytest.mark.parametrize("ip", ["", "not-an-ip", "10.0.0.256", "é"])
def test_issuing_for_a_non_ip_is_an_error(ip: str) -> None:
    with pytest.raises(ValueError):
        issue_token(KEY, ip, NOW)


def test_key_is_made_once_private_and_then_reused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    key = load_key(home)
    assert len(key) == 32
    path = home / "portal.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(home) == key
    assert load_key(tmp_path / "other") != key


def test_key_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared" / "portal.key"
    assert key_file(tmp_path, {KEY_ENV: str(shared)}) == shared
    assert key_file(tmp_path, {}) == tmp_path / "portal.key"
    monkeypatch.setenv(KEY_ENV, str(shared))
    assert load_key(tmp_path / "a") == load_key(tmp_path / "b") == shared.read_bytes()


def test_a_broken_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "portal.key").write_bytes(b"short")
    with pytest.raises(PortalKeyError, match="5 bytes"):
        load_key(tmp_path)


def _load(home: str, q: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    q.put(load_key(Path(home)))


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_load, args=(str(tmp_path), q)) for _ in range(6)]
    for p in procs:
        p.start()
    keys = {q.get(timeout=20) for _ in procs}
    for p in procs:
        p.join(timeout=20)
    assert len(keys) == 1
    assert keys == {(tmp_path / "portal.key").read_bytes()}
