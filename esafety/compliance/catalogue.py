"""The device compliance checks, as declarative data (in the manner of Wazuh SCA and osquery policies).

The agent implements each id in agent/checks/; the server uses this table for titles, remediation,
the AUP clause a failure breaches and whether a failure is critical (quarantine, incident). Adding a
check means adding it here and implementing it in the agent; a server meeting an unknown id from a
newer agent stores it but does not roll it up.
"""

from __future__ import annotations

from dataclasses import dataclass

ALL = frozenset({"linux", "windows", "macos"})


@dataclass(frozen=True, slots=True)
class CheckSpec:
    id: str
    title: str
    rationale: str
    remediation: str
    aup_clause: str
    platforms: frozenset[str]
    critical: bool
    interval_seconds: int = 900  # how often the agent runs it; the server's check_interval overrides


CATALOGUE: tuple[CheckSpec, ...] = (
    CheckSpec(
        "os_updates", "Security updates installed",
        "Unpatched systems are the commonest way malware gets onto a school network.",
        "Install the pending operating system and security updates, then restart the device.",
        "A11", ALL, critical=True, interval_seconds=3600),
    CheckSpec(
        "antivirus", "Antivirus running and up to date",
        "The AUP requires devices on the school network to run current antivirus protection.",
        "Turn on antivirus (Microsoft Defender, ClamAV or your own) and let it update its signatures.",
        "A11", ALL, critical=True),
    CheckSpec(
        "disk_encryption", "Disk encrypted",
        "A lost or stolen device must not expose pupils' personal data.",
        "Turn on BitLocker (Windows), FileVault (macOS) or LUKS (Linux) for the system disk.",
        "A11", ALL, critical=False, interval_seconds=3600),
    CheckSpec(
        "screen_lock", "Screen lock configured",
        "An unlocked, unattended device lets someone else act under your account.",
        "Set the screen to lock after at most 15 minutes idle, with a password or PIN to unlock.",
        "A11", ALL, critical=False, interval_seconds=3600),
    CheckSpec(
        "p2p_clients", "No peer-to-peer file-sharing programs",
        "Peer-to-peer clients share copyrighted and harmful material and bypass the web filter.",
        "Quit and uninstall BitTorrent-style programs (qBittorrent, Transmission, uTorrent, Deluge, eMule, ...).",
        "A5", ALL, critical=True),
    CheckSpec(
        "vpn_clients", "No VPN clients or tunnels",
        "VPNs and tunnels carry traffic around the school's filtering and monitoring.",
        "Disconnect and uninstall VPN apps (NordVPN, ProtonVPN, Psiphon, ...) and remove tunnel interfaces.",
        "A3", ALL, critical=False),
    CheckSpec(
        "hotspot", "No personal hotspot or access point",
        "A hotspot lets other devices onto the network unfiltered and unidentified.",
        "Turn off the mobile hotspot / Internet Sharing and stop any access point software (hostapd).",
        "A12", ALL, critical=True),
    CheckSpec(
        "listening_servers", "No servers listening on the network",
        "Personal servers expose the device and can host or relay content outside the filter.",
        "Stop the listed programs or ask IT for a time-boxed exception (e.g. a coding class's dev server).",
        "A12", ALL, critical=False),
    CheckSpec(
        "file_shares", "No network file shares",
        "SMB and NFS shares pass files between devices with no filtering or logging.",
        "Turn off file sharing (Windows sharing, macOS File Sharing, Samba/NFS exports).",
        "A12", ALL, critical=False, interval_seconds=3600),
    CheckSpec(
        "local_admins", "Only approved local administrators",
        "Extra administrator accounts can disable the safeguarding monitor and the antivirus.",
        "Remove administrator rights from accounts that are not on the school's approved list.",
        "A3", ALL, critical=False, interval_seconds=3600),
    CheckSpec(
        "removable_media", "Removable media encrypted",
        "Unencrypted USB drives are the commonest way personal data leaves school.",
        "Use an encrypted drive (BitLocker To Go, FileVault, LUKS) or eject the unencrypted one.",
        "A11", ALL, critical=False),
    CheckSpec(
        "safeguarding_monitor", "Safeguarding monitor running and unmodified",
        "The school's monitoring keeps pupils safe; stopping or altering it is itself a safeguarding concern.",
        "Reinstall or restart the esafety agent; IT and the DSL are told when it is stopped or changed.",
        "A3", ALL, critical=True, interval_seconds=60),
)

BY_ID: dict[str, CheckSpec] = {c.id: c for c in CATALOGUE}
CRITICAL: frozenset[str] = frozenset(c.id for c in CATALOGUE if c.critical)
