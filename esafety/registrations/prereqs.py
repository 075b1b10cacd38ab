"""Device prerequisites from the endpoint agent: patched, antivirus, no P2P, no hotspot.

Registrations depend only on this small interface: a `ComplianceSource` answers, for a MAC
address, the agent's latest result per check, or None when the device runs no agent. The real one
is esafety.compliance.source.RollupCompliance (patched -> os_updates, antivirus -> antivirus,
no_p2p -> p2p_clients, no_hotspot -> hotspot), the dashboard's `app.state.registration_compliance`
by default; tests and schools importing MDM results may set another (StaticCompliance below).

Without an agent, approval rests on the person's AUP acceptance and IT's judgement. With one,
approval and activation need every critical check to pass, and a later failure quarantines the
device after a grace period (esafety/registrations/sweep.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

CRITICAL_CHECKS: tuple[str, ...] = ("patched", "antivirus", "no_p2p", "no_hotspot")

# What to tell the person, per failed check. The AUP clause is quoted alongside.
FIXES: dict[str, str] = {
    "patched": "Install the latest operating system and security updates, then restart the device.",
    "antivirus": "Turn on antivirus protection (e.g. Microsoft Defender, or your own antivirus) and keep it updated.",
    "no_p2p": "Uninstall peer-to-peer (file-sharing / torrent) programs such as BitTorrent, uTorrent or eMule.",
    "no_hotspot": "Turn off the personal hotspot / mobile tethering while on the school site.",
}
TITLES: dict[str, str] = {"patched": "Security updates", "antivirus": "Antivirus", "no_p2p": "No P2P programs",
                          "no_hotspot": "No hotspot"}


@dataclass(frozen=True)
class DeviceCompliance:
    checks: dict[str, bool] = field(default_factory=dict)  # check name -> passed
    reported_at: datetime | None = None

    def failed(self) -> list[str]:
        """Critical checks that failed, or that the agent did not report (unknown counts as failed)."""
        return [c for c in CRITICAL_CHECKS if not self.checks.get(c, False)]


class ComplianceSource(Protocol):
    def for_mac(self, session: Session, mac: str) -> DeviceCompliance | None:
        """The agent's latest checks for the device with this MAC, or None if it runs no agent."""
        ...


class NoAgentData:
    """The default until esafety/compliance is wired in: no device is known to run the agent."""

    def for_mac(self, session: Session, mac: str) -> DeviceCompliance | None:
        return None


class StaticCompliance:
    """A fixed table (MAC -> checks): for tests, and for schools importing results from an MDM."""

    def __init__(self, table: dict[str, DeviceCompliance] | None = None):
        self.table: dict[str, DeviceCompliance] = dict(table or {})

    def set(self, mac: str, compliance: DeviceCompliance | None) -> None:
        if compliance is None:
            self.table.pop(mac.lower(), None)
        else:
            self.table[mac.lower()] = compliance

    def for_mac(self, session: Session, mac: str) -> DeviceCompliance | None:
        return self.table.get(mac.lower())


def failed_checks(source: ComplianceSource, session: Session, mac: str) -> list[str] | None:
    """None: no agent data; []: all critical checks pass; else the failed checks."""
    data = source.for_mac(session, mac)
    return None if data is None else data.failed()
