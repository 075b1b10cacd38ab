"""The allow-list of registered MACs for the network: approved and active devices only, so a
quarantined, revoked or expired device is disconnected at the next reload.

Formats:
* dnsmasq: `dhcp-host=MAC,set:registered` lines; pair with `dhcp-ignore=tag:!registered` on the
  BYOD range so unregistered devices get no lease.
* isc-dhcp: `host` declarations; pair with `deny unknown-clients;` in the BYOD pool.
* freeradius-users: MAC authentication bypass entries (`aabbccddeeff Cleartext-Password := ...`).
* csv: mac, username, device name and type, state, dates - for IT, not for network config.
Network-config formats name registrations by id only (no pupil names in router configs).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from esafety.registrations.macaddr import parse_mac
from esafety.registrations.states import ALLOWED_STATES
from esafety.registrations.tables import Registration

HEADER = "# esafety WiFi allow-list: {n} registered device(s). Generated; do not edit by hand.\n"


def allowed(session: Session) -> list[Registration]:
    return list(session.scalars(select(Registration).where(
        Registration.state.in_([s.value for s in ALLOWED_STATES])).order_by(Registration.mac)))


def dnsmasq(regs: list[Registration]) -> str:
    lines = [f"dhcp-host={r.mac},set:registered  # registration {r.id}" for r in regs]
    return HEADER.format(n=len(regs)) + "".join(line + "\n" for line in lines)


def isc_dhcp(regs: list[Registration]) -> str:
    blocks = [f"host esafety-reg-{r.id} {{ hardware ethernet {r.mac}; }}" for r in regs]
    return HEADER.format(n=len(regs)) + "".join(b + "\n" for b in blocks)


def freeradius_users(regs: list[Registration]) -> str:
    out = []
    for r in regs:
        bare = parse_mac(r.mac).bare
        out.append(f'{bare}\tCleartext-Password := "{bare}"\n\tReply-Message := "esafety registration {r.id}"\n')
    return HEADER.format(n=len(regs)) + "\n".join(out)


def _csv_safe(value: str) -> str:
    """Spreadsheets run cells starting with = + - @; a device name must stay text."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def as_csv(regs: list[Registration]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["mac", "username", "device_name", "device_type", "state", "submitted_at", "decided_at",
                "expires_at", "registration_id"])
    for r in regs:
        w.writerow([r.mac, _csv_safe(r.username), _csv_safe(r.device_name), r.device_type, r.state,
                    r.submitted_at.isoformat() if r.submitted_at else "",
                    r.decided_at.isoformat() if r.decided_at else "",
                    r.expires_at.isoformat() if r.expires_at else "", r.id])
    return buf.getvalue()


FORMATS: dict[str, Callable[[list[Registration]], str]] = {
    "dnsmasq": dnsmasq, "isc-dhcp": isc_dhcp, "freeradius-users": freeradius_users, "csv": as_csv,
}


def export(session: Session, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return FORMATS[fmt](allowed(session))
