"""From DHCP leases to identity: which IP a registered device has now, so the proxy (which sees
only client IPs) applies its owner's policy group.

The simplest source that every school DHCP server can give: its leases file, read periodically.
* dnsmasq (`/var/lib/misc/dnsmasq.leases`): `EXPIRY MAC IP HOSTNAME CLIENT-ID` per line.
* ISC dhcpd (`/var/lib/dhcp/dhcpd.leases`): `lease IP { ends ...; hardware ethernet MAC; }`
  blocks, later blocks superseding earlier ones.
Point ESAFETY_DHCP_LEASES at the file (mounted read-only if the DHCP server is elsewhere), or run
`esafety registrations sync-leases FILE` from the DHCP server's hook or cron.

`sync` rewrites the `ip_bindings` rows with source "wifi" to match active registrations and their
current leases (expiring with the lease), activates approved devices the first time they hold a
lease (if their agent's critical checks pass), and never overwrites agent or static bindings,
which know who is signed in and so are more specific.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from esafety.registrations.lifecycle import SYSTEM_ACTOR, transition
from esafety.registrations.macaddr import MacError, parse_mac
from esafety.registrations.prereqs import ComplianceSource, failed_checks
from esafety.registrations.states import Action, State
from esafety.registrations.tables import Registration
from esafety.store.models import IpBinding

SOURCE = "wifi"
_ISC_BLOCK = re.compile(r"lease\s+([0-9a-fA-F:.]+)\s*\{(.*?)\}", re.S)
_ISC_ENDS = re.compile(r"\bends\s+(?:\d\s+(\d{4}/\d{2}/\d{2}\s+\d{2}:\d{2}:\d{2})|never)\s*;")
_ISC_MAC = re.compile(r"hardware\s+ethernet\s+([0-9a-fA-F:]+)\s*;")
_ISC_STATE = re.compile(r"^\s*binding\s+state\s+(\w+)\s*;", re.M)
_ISC_HOST = re.compile(r"client-hostname\s+\"([^\"]*)\"\s*;")


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    expires: datetime | None  # None: never
    hostname: str = ""


@dataclass
class SyncResult:
    bound: int = 0
    removed: int = 0
    activated: list[int] = field(default_factory=list)
    held_back: list[int] = field(default_factory=list)  # approved, seen, but failing critical checks


def _mac(text: str) -> str | None:
    try:
        return parse_mac(text).value
    except MacError:
        return None


def parse_dnsmasq(text: str) -> list[Lease]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[0] == "duid" or not parts[0].isdigit():
            continue
        mac = _mac(parts[1])
        if mac is None:
            continue
        expiry = int(parts[0])
        out.append(Lease(mac, parts[2], datetime.fromtimestamp(expiry, UTC) if expiry else None,
                         parts[3] if len(parts) > 3 and parts[3] != "*" else ""))
    return out


def parse_isc(text: str) -> list[Lease]:
    latest: dict[str, Lease] = {}
    for ip, body in _ISC_BLOCK.findall(text):
        state = _ISC_STATE.search(body)
        mac_m = _ISC_MAC.search(body)
        mac = _mac(mac_m.group(1)) if mac_m else None
        if mac is None:
            continue
        if state and state.group(1) != "active":
            latest.pop(ip, None)
            continue
        ends = _ISC_ENDS.search(body)
        expires = (datetime.strptime(ends.group(1), "%Y/%m/%d %H:%M:%S").replace(tzinfo=UTC)
                   if ends and ends.group(1) else None)
        host = _ISC_HOST.search(body)
        latest[ip] = Lease(mac, ip, expires, host.group(1) if host else "")
    return list(latest.values())


def read_leases(path: Path) -> list[Lease]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return parse_isc(text) if _ISC_BLOCK.search(text) else parse_dnsmasq(text)


def current(leases: list[Lease], now: datetime) -> dict[str, Lease]:
    """MAC -> its newest unexpired lease."""
    by_mac: dict[str, Lease] = {}
    for lease in leases:
        if lease.expires is not None and lease.expires <= now:
            continue
        prev = by_mac.get(lease.mac)
        if prev is None or (prev.expires is not None and (lease.expires is None or lease.expires > prev.expires)):
            by_mac[lease.mac] = lease
    return by_mac


def sync(session: Session, leases: list[Lease], compliance: ComplianceSource,
         now: datetime | None = None) -> SyncResult:
    """Bring the wifi rows of ip_bindings in line with the leases. The caller commits."""
    now = now or datetime.now(UTC)
    live = current(leases, now)
    result = SyncResult()
    regs = list(session.scalars(select(Registration).where(
        Registration.state.in_((State.APPROVED.value, State.ACTIVE.value)),
        Registration.live_mac.in_(list(live)) if live else Registration.id < 0)
        .order_by(Registration.id).execution_options(populate_existing=True)))
    wanted: dict[str, tuple[str, str, datetime | None]] = {}
    for reg in regs:
        lease = live[reg.mac]
        if reg.state == State.APPROVED.value:
            failed = failed_checks(compliance, session, reg.mac)
            if failed:
                reg.failed_checks = ",".join(failed)
                result.held_back.append(reg.id)
                continue
            transition(session, reg, Action.ACTIVATE, SYSTEM_ACTOR, f"first seen on the network at {lease.ip}", now=now)
            result.activated.append(reg.id)
        wanted[lease.ip] = (reg.username, reg.device_name, lease.expires)
    existing = {b.ip: b for b in session.scalars(select(IpBinding))}
    stale = [ip for ip, b in existing.items() if b.source == SOURCE and ip not in wanted]
    if stale:
        session.execute(delete(IpBinding).where(IpBinding.ip.in_(stale), IpBinding.source == SOURCE))
        result.removed = len(stale)
    for ip, (username, device, expires) in wanted.items():
        b = existing.get(ip)
        if b is None:
            session.add(IpBinding(ip=ip, username=username, device=device, source=SOURCE, updated_at=now,
                                  expires_at=expires))
        elif b.source == SOURCE:
            b.username, b.device, b.expires_at, b.updated_at = username, device, expires, now
        else:
            continue  # an agent or static binding knows better
        result.bound += 1
    session.flush()
    return result


def unbind(session: Session, username: str, device: str | None = None) -> int:
    """Drop a person's wifi bindings at once (revocation, quarantine) rather than at the next sync."""
    q = delete(IpBinding).where(IpBinding.source == SOURCE, IpBinding.username == username)
    if device is not None:
        q = q.where(IpBinding.device == device)
    return int(session.execute(q).rowcount or 0)  # type: ignore[attr-defined]
