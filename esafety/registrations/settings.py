"""Registration settings from the environment, beside esafety.config's (which stays untouched).

ESAFETY_CALENDAR          the school calendar (default: calendar.yaml beside the policy file)
ESAFETY_DHCP_LEASES       a dnsmasq or ISC dhcpd leases file to map registered MACs to IPs
ESAFETY_WIFI_SSID         the network name in the approval email (default School-BYOD)
ESAFETY_WIFI_GRACE_HOURS  how long a failed critical check may last before quarantine (default 24)
ESAFETY_WIFI_MAX_DEVICES  devices one account may use at once before it looks shared (default 3)
ESAFETY_WIFI_MAX_IPS      client IPs one account may use within the window (default 6)
ESAFETY_WIFI_SHARING_WINDOW_MINUTES  the window for both (default 15)
ESAFETY_WIFI_MAX_PER_USER live registrations one person may hold (default 3)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from esafety.config import Settings


@dataclass(frozen=True)
class WifiSettings:
    calendar_path: Path
    leases_path: Path | None
    ssid: str
    grace: timedelta
    max_devices: int
    max_ips: int
    sharing_window: timedelta
    max_per_user: int


def wifi_settings(settings: Settings, env: dict[str, str] | None = None) -> WifiSettings:
    e = os.environ if env is None else env
    leases = e.get("ESAFETY_DHCP_LEASES", "").strip()
    return WifiSettings(
        calendar_path=Path(e.get("ESAFETY_CALENDAR", str(settings.policy_path.parent / "calendar.yaml"))),
        leases_path=Path(leases) if leases else None,
        ssid=e.get("ESAFETY_WIFI_SSID", "School-BYOD"),
        grace=timedelta(hours=float(e.get("ESAFETY_WIFI_GRACE_HOURS", "24"))),
        max_devices=int(e.get("ESAFETY_WIFI_MAX_DEVICES", "3")),
        max_ips=int(e.get("ESAFETY_WIFI_MAX_IPS", "6")),
        sharing_window=timedelta(minutes=float(e.get("ESAFETY_WIFI_SHARING_WINDOW_MINUTES", "15"))),
        max_per_user=int(e.get("ESAFETY_WIFI_MAX_PER_USER", "3")),
    )
