"""The policy's `compliance:` section (endpoint agents), read by the loader with file:line errors.

    compliance:
      heartbeat: 60s          # how often agents report when nothing changed
      check_interval: 15m     # how often agents run the full check catalogue
      check_timeout: 10s      # one check's time limit on the device
      grace: 24h              # a failing critical check is in_grace this long, then noncompliant
      stale_buffer: 2m        # silent for heartbeat + buffer: stale
      stale_limit: 3d         # silent this long: noncompliant
      listening_allow: [sshd, cupsd]   # processes allowed to listen on non-loopback addresses
      admin_allow: [root, Administrator]
      p2p_names: [...]        # process / package names the P2P check looks for
      vpn_names: [...]
      monitor_sha256: null    # the safeguarding monitor's expected hash, when the school pins one

Durations are whole seconds or a number with a unit: 90s, 15m, 24h, 3d.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from esafety.policy.schema import Compliance

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
SECTION = "compliance"
KEYS = ("heartbeat", "check_interval", "check_timeout", "grace", "stale_buffer", "stale_limit", "listening_allow",
        "admin_allow", "p2p_names", "vpn_names", "monitor_sha256")


class _Doc(Protocol):
    def error(self, path: tuple[Any, ...], message: str) -> None: ...


class _Reader(Protocol):
    def str_list(self, obj: dict[str, Any], path: tuple[Any, ...], key: str) -> list[str]: ...


def parse_duration(value: Any) -> int | None:
    """Seconds, or None when `value` is not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return int(float(m.group(1)) * _UNITS[m.group(2)])
    return None


def read_compliance(doc: _Doc, r: _Reader, data: dict[str, Any]) -> Compliance:
    """The section as typed settings; absent keys take the defaults. Errors go to `doc`."""
    base = Compliance()
    raw = data.get(SECTION)
    if raw is None:
        return base
    p: tuple[Any, ...] = (SECTION,)
    if not isinstance(raw, dict):
        doc.error(p, "compliance: is a mapping (heartbeat:, grace:, ...)")
        return base
    for key in raw:
        if key not in KEYS:
            doc.error((*p, key), f"unknown compliance setting '{key}' (one of {', '.join(KEYS)})")

    def duration(key: str, default: int, minimum: int) -> int:
        if key not in raw:
            return default
        seconds = parse_duration(raw[key])
        if seconds is None:
            doc.error((*p, key), f"'{key}' must be a duration like 90s, 15m, 24h or 3d, not {raw[key]!r}")
            return default
        if seconds < minimum:
            doc.error((*p, key), f"'{key}' must be at least {minimum} s")
            return default
        return seconds

    heartbeat = duration("heartbeat", base.heartbeat_seconds, 1)
    buffer = duration("stale_buffer", base.stale_buffer_seconds, 0)
    limit = duration("stale_limit", base.stale_limit_seconds, 1)
    if "stale_limit" in raw and limit <= heartbeat + buffer:
        doc.error((*p, "stale_limit"), "stale_limit must be longer than heartbeat + stale_buffer")
    sha = raw.get("monitor_sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA256.match(sha.lower())):
        doc.error((*p, "monitor_sha256"), "monitor_sha256 is 64 hex digits (or null)")
        sha = None
    return Compliance(
        heartbeat_seconds=heartbeat,
        check_seconds=duration("check_interval", base.check_seconds, 1),
        check_timeout_seconds=duration("check_timeout", base.check_timeout_seconds, 1),
        grace_seconds=duration("grace", base.grace_seconds, 0),
        stale_buffer_seconds=buffer,
        stale_limit_seconds=limit,
        listening_allow=tuple(r.str_list(raw, p, "listening_allow")),
        admin_allow=tuple(r.str_list(raw, p, "admin_allow")),
        p2p_names=tuple(x.lower() for x in r.str_list(raw, p, "p2p_names")),
        vpn_names=tuple(x.lower() for x in r.str_list(raw, p, "vpn_names")),
        monitor_sha256=sha.lower() if isinstance(sha, str) else None,
    )
