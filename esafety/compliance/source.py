"""The agents' results as WiFi registrations' `ComplianceSource` (esafety/registrations/prereqs.py).

A registration's MAC is looked up among the addresses enrolled devices reported; the newest
active device holding it answers. Its four prerequisites map to catalogue checks: a check passes
when its latest result is pass or not_applicable, or an active exception excuses it; fail and
error do not pass (registration needs positive evidence), and a check never reported counts as
failed (DeviceCompliance.failed). Results are the last reported, however old: a device that is
merely switched off is not quarantined for it; silence is a matter for the tamper incidents.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from esafety.compliance.state import active_exceptions
from esafety.compliance.tables import Device, DeviceCheck, DeviceMac
from esafety.registrations.macaddr import MacError, parse_mac
from esafety.registrations.prereqs import DeviceCompliance

# Registration prerequisite -> the agent's check (notes/agent-contract.md).
PREREQUISITES: dict[str, str] = {"patched": "os_updates", "antivirus": "antivirus", "no_p2p": "p2p_clients",
                                 "no_hotspot": "hotspot"}
PASSING = ("pass", "not_applicable")


class RollupCompliance:
    """`app.state.registration_compliance` in the dashboard."""

    def for_mac(self, session: Session, mac: str) -> DeviceCompliance | None:
        try:
            mac = parse_mac(mac).value
        except MacError:
            return None
        device = session.scalar(select(Device).join(DeviceMac, DeviceMac.device_id == Device.id)
                                .where(DeviceMac.mac == mac, Device.retired_at.is_(None))
                                .order_by(Device.last_seen.desc().nulls_last(), Device.enrolled_at.desc()).limit(1))
        if device is None:
            return None
        wanted = list(PREREQUISITES.values())
        status = dict(session.execute(select(DeviceCheck.check_id, DeviceCheck.status).where(
            DeviceCheck.device_id == device.id, DeviceCheck.check_id.in_(wanted))).all())
        excused = active_exceptions(session, [device.id], datetime.now(UTC)).get(device.id, frozenset())
        checks = {name: check in status and (status[check] in PASSING or check in excused)
                  for name, check in PREREQUISITES.items()}
        return DeviceCompliance(checks, device.last_seen)
