"""Who and where this device is: hostname, OS, logged-in users, IP and MAC addresses. Sent with
every report so the proxy can tell whose traffic comes from which address (esafety.identity)."""

from __future__ import annotations

import platform
import socket
from datetime import UTC, datetime
from typing import Any

import psutil

from agent.checks.host import this_platform

_LINK = getattr(psutil, "AF_LINK", -1)


def hostname() -> str:
    return socket.gethostname() or "unknown"


def os_version() -> str:
    if this_platform() == "linux":
        try:
            with open("/etc/os-release", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("PRETTY_NAME="):
                        return line.split("=", 1)[1].strip().strip('"')[:200]
        except OSError:
            pass
    return platform.platform()[:200]


def users() -> list[dict[str, Any]]:
    return [{"name": u.name, "terminal": u.terminal, "host": u.host or None,
             "started": datetime.fromtimestamp(u.started, UTC).isoformat()} for u in psutil.users()][:64]


def addresses() -> list[dict[str, Any]]:
    out = []
    for iface, addrs in psutil.net_if_addrs().items():
        mac = next((a.address for a in addrs if a.family == _LINK and a.address), None)
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                out.append({"ip": a.address.split("%", 1)[0], "mac": mac, "iface": iface[:64]})
    return out[:64]


def macs() -> list[str]:
    return sorted({a["mac"] for a in addresses() if a["mac"]})
