"""Checks that read the same things on every platform through psutil: running programs, tunnel
interfaces, listening sockets, and the agent's own integrity. Platform modules add what only the
OS can tell (installed applications, Wi-Fi mode)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from ipaddress import ip_address
from typing import Any

from agent.checks.base import Ctx, Iface, Listener, Result, failed, passed, process_matches

# Interface names that are tunnels on Linux (tun0, wg0), macOS (utun3) and Windows (adapter names).
TUNNEL_PREFIXES = ("tun", "tap", "wg", "utun", "ipsec", "nordlynx", "proton", "mullvad")
TUNNEL_WORDS = ("tap-windows", "wintun", "wireguard", "openvpn", "vpn", "tunnel")
# UDP sockets are mostly clients (DHCP client, mDNS); these ports are servers a device must not run.
UDP_SERVER_PORTS = frozenset({53, 67, 69, 137, 138, 161, 1900})


def p2p_clients(ctx: Ctx, installed: Sequence[str]) -> Result:
    """Fails while a P2P client runs or is installed as an application a user can start.
    Headless packages that are present but not running are listed only (IT tooling installs them)."""
    running = process_matches(ctx.host.processes(), ctx.settings.p2p_names)
    evidence: dict[str, Any] = {"running": running, "installed": sorted(installed)}
    return failed(**evidence) if running or installed else passed(**evidence)


def app_matches(names: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """Application entries (e.g. 'org.qbittorrent.qBittorrent.desktop', 'Transmission.app') naming a client."""
    keys = [w.lower() for w in wanted if len(w) >= 4]
    return sorted({n for n in names if any(k in n.lower() for k in keys)})


def is_tunnel(iface: Iface) -> bool:
    name = iface.name.lower()
    routable = [a for a in iface.addresses if not _link_local(a)]
    # macOS keeps utun0-3 up for its own services with link-local addresses only: not a VPN.
    return iface.up and bool(routable) and (name.startswith(TUNNEL_PREFIXES) or any(w in name for w in TUNNEL_WORDS))


def vpn_clients(ctx: Ctx, installed: Sequence[str] = ()) -> Result:
    running = process_matches(ctx.host.processes(), ctx.settings.vpn_names)
    tunnels = [{"name": i.name, "addresses": list(i.addresses)} for i in ctx.host.interfaces() if is_tunnel(i)]
    evidence: dict[str, Any] = {"running": running, "tunnels": tunnels, "installed": sorted(installed)}
    return failed(**evidence) if running or tunnels or installed else passed(**evidence)


def _link_local(addr: str) -> bool:
    try:
        ip = ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    return ip.is_link_local or ip.is_loopback


def _network_facing(lst: Listener) -> bool:
    try:
        ip = ip_address(lst.ip.split("%", 1)[0])
    except ValueError:
        return True
    if ip.is_loopback:
        return False
    return lst.proto == "tcp" or lst.port in UDP_SERVER_PORTS


def listening_servers(ctx: Ctx, is_os_service: Callable[[Listener], bool] | None = None) -> Result:
    """`is_os_service`: the platform's own listeners (Windows RPC and SMB, macOS Continuity), which
    every device has; flagging them would fail them all."""
    allowed = {n.lower() for n in ctx.settings.listening_allow}
    servers: list[dict[str, Any]] = []
    unattributed: list[dict[str, Any]] = []
    seen: set[tuple[str | None, int, str]] = set()
    os_ignored = 0
    for lst in sorted(ctx.host.listeners(), key=lambda x: (x.port, x.proto, x.ip)):
        if is_os_service is not None and is_os_service(lst):
            os_ignored += 1
            continue
        if not _network_facing(lst) or (lst.process or "").lower() in allowed:
            continue
        key = (lst.process, lst.port, lst.proto)
        if key in seen:  # the same server on 0.0.0.0 and :: is one finding
            continue
        seen.add(key)
        entry = {"process": lst.process, "pid": lst.pid, "address": lst.ip, "port": lst.port, "proto": lst.proto}
        # A socket whose owner we cannot see belongs to another namespace (a container host's
        # plumbing); the agent runs as root on a real device, so it sees every process there.
        (servers if lst.pid else unattributed).append(entry)
    evidence: dict[str, Any] = {"servers": servers, "allowed": sorted(allowed)}
    if unattributed:
        evidence["unattributed"] = unattributed
    if is_os_service is not None:
        evidence["os_services_ignored"] = os_ignored
    return failed(**evidence) if servers else passed(**evidence)


def nfs_exports(ctx: Ctx) -> list[str]:
    """Paths exported in /etc/exports (Linux and macOS), as `nfs:/path`."""
    text = ctx.host.read("/etc/exports") or ""
    lines = [line.strip() for line in text.splitlines()]
    return [f"nfs:{line.split()[0]}" for line in lines if line and not line.startswith("#")]


def safeguarding_monitor(ctx: Ctx) -> Result:
    """The agent is the monitor: it runs (this check is it running), its code is the code it started
    with, the school's pinned build when there is one, and nobody but an administrator can change it."""
    now = ctx.monitor.current()
    evidence: dict[str, Any] = {"sha256": now, "pid": os.getpid()}
    problems = []
    if now != ctx.monitor.sha256:
        problems.append("the agent's code changed while it was running")
    if ctx.settings.monitor_sha256 and now != ctx.settings.monitor_sha256:
        problems.append("the agent is not the school's approved build")
    loose = ctx.monitor.writable_by_others()
    if loose:
        problems.append("the agent's files can be changed by non-administrators")
        evidence["writable"] = loose[:20]
    if problems:
        return failed(problems=problems, **evidence)
    return passed(**evidence)
