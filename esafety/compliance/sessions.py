"""Agent sessions -> the client-IP table the proxy reads (ip_bindings, source "agent").

Each report says who is signed in and which addresses the device has. The person bound to the
device's addresses is the console user (not a remote SSH session) whose name matches an esafety
account, else the device's assigned owner; nobody known means no binding, and the proxy falls
back to its other sources. Bindings expire after heartbeat + stale_buffer (esafety.identity skips
expired rows), so a device that goes silent, or a user who signs out, drops out on its own.

Addresses: the one the report came from (what the proxy sees when there is no NAT between), and
the device's own unicast addresses except loopback and link-local ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from ipaddress import ip_address

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from esafety.compliance.tables import AgentSession, Device
from esafety.compliance.wire import ReportIn, UserIn
from esafety.store.models import IpBinding, User

SOURCE = "agent"
_REMOTE_TERMINALS = ("pts/", "ssh", "rdp-tcp")


def plain_name(name: str) -> str:
    r"""DOMAIN\\user, user@domain -> user (lower case): accounts are matched case-insensitively."""
    name = name.strip().rsplit("\\", 1)[-1]
    return name.split("@", 1)[0].strip().lower()


def _console(u: UserIn) -> bool:
    remote_host = (u.host or "").strip() not in ("", "localhost", "127.0.0.1", "::1") and not (u.host or "").startswith(
        ":")
    remote_term = (u.terminal or "").lower().startswith(_REMOTE_TERMINALS) and bool(u.host)
    return not (remote_host or remote_term)


def choose_user(users: Iterable[UserIn], known: dict[str, str]) -> str | None:
    """The account to bind: the most recently started console session of a known account, else
    any known account's session. `known` maps lower-case names to the account's username."""
    ranked = sorted(users, key=lambda u: (_console(u), u.started.timestamp() if u.started else 0.0), reverse=True)
    for u in ranked:
        account = known.get(plain_name(u.name))
        if account:
            return account
    return None


def usable_ip(ip: str, reported_from: str | None) -> bool:
    if ip == reported_from:
        return True
    a = ip_address(ip)
    return not (a.is_loopback or a.is_link_local or a.is_multicast or a.is_unspecified)


def known_accounts(session: Session, names: Iterable[str]) -> dict[str, str]:
    wanted = sorted({plain_name(n) for n in names if n})
    if not wanted:
        return {}
    rows = session.scalars(select(User.username).where(func.lower(User.username).in_(wanted),
                                                       User.active.is_(True)))
    return {u.lower(): u for u in rows}


def record(session: Session, device: Device, report: ReportIn, client_ip: str | None, ttl: timedelta,
           now: datetime) -> str | None:
    """Update the device's sessions and its identity bindings; returns the username bound (or None)."""
    names = [u.name for u in report.users] + ([device.owner] if device.owner else [])
    known = known_accounts(session, names)
    user = choose_user(report.users, known) or (known.get(device.owner.lower()) if device.owner else None)
    macs = {a.ip: a.mac for a in report.addresses}
    ips = sorted({a.ip for a in report.addresses if usable_ip(a.ip, client_ip)} | ({client_ip} if client_ip else set()))
    existing = {(s.username, s.ip): s for s in session.scalars(
        select(AgentSession).where(AgentSession.device_id == device.id))}
    for ip in ips:
        row = existing.get((user or "", ip))
        if row is None:
            session.add(AgentSession(device_id=device.id, username=user or "", ip=ip, mac=macs.get(ip), first_seen=now,
                                     last_seen=now))
        else:
            row.last_seen, row.mac = now, macs.get(ip) or row.mac
    # Addresses this device held until now (or all of them, when nobody known is signed in): their
    # bindings go at once rather than at expiry. Only addresses this device had sessions on, in case
    # two devices share a hostname.
    keep = set(ips) if user else set()
    gone = sorted({ip for (_name, ip) in existing} - keep)
    if gone:
        session.execute(delete(IpBinding).where(IpBinding.ip.in_(gone), IpBinding.source == SOURCE,
                                                IpBinding.device == device.hostname[:120]))
    if user:
        bindings = {b.ip: b for b in session.scalars(select(IpBinding).where(IpBinding.ip.in_(ips)))}
        for ip in ips:
            b = bindings.get(ip)
            if b is None:
                session.add(IpBinding(ip=ip, username=user, device=device.hostname[:120], source=SOURCE,
                                      updated_at=now, expires_at=now + ttl))
            elif b.source != "static":  # an agent knows better than a DHCP lease; a static entry is IT's word
                b.username, b.device, b.source, b.updated_at, b.expires_at = (user, device.hostname[:120], SOURCE,
                                                                              now, now + ttl)
    session.flush()
    return user


def expire(session: Session, now: datetime, keep: timedelta = timedelta(days=30)) -> tuple[int, int]:
    """Drop expired agent bindings (so a WiFi lease may take the address again) and old sessions."""
    b = session.execute(delete(IpBinding).where(IpBinding.source == SOURCE, IpBinding.expires_at < now))
    s = session.execute(delete(AgentSession).where(AgentSession.last_seen < now - keep))
    return int(b.rowcount or 0), int(s.rowcount or 0)  # type: ignore[attr-defined]
