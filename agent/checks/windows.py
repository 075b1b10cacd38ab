"""Windows checks: Windows Update, Security Center, BitLocker, screen saver / inactivity policy,
installed programs, hosted network / Mobile Hotspot, `net share`, `net localgroup`, removable volumes.

The agent runs as a service (LocalSystem), so HKCU is SYSTEM's hive: per-user settings are read from
each signed-in user's hive under HKU. `net` and `manage-bde` print localised text; the parsers lean on
structure (the dashed rule, the last line, registry value names) and read English only for the few
status words `manage-bde` and `netsh` have no other way to give.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any

from agent.checks import common
from agent.checks.base import Check, Ctx, Listener, Result, failed, not_applicable, passed

POWERSHELL = ("powershell", "-NoProfile", "-NonInteractive", "-Command")

# The searcher runs offline: it answers from Windows Update's last scan in well under a second, where
# an online search takes minutes; the age of that scan is checked instead, as apt's lists are on Linux.
# LastSearchSuccessDate is in UTC; 's' is the sortable yyyy-MM-ddTHH:mm:ss form in every locale.
UPDATES_PS = (
    "$s = New-Object -ComObject Microsoft.Update.Session; $q = $s.CreateUpdateSearcher(); $q.Online = $false; "
    "$u = @($q.Search(\"IsInstalled=0 and Type='Software'\").Updates | Select-Object Title,MsrcSeverity); "
    "$d = (New-Object -ComObject Microsoft.Update.AutoUpdate).Results.LastSearchSuccessDate; "
    "@{LastSearchSuccessDate = $(if ($d) { $d.ToString('s') + 'Z' } else { $null }); "
    "Updates = $u} | ConvertTo-Json -Depth 3"
)
ANTIVIRUS_PS = ("Get-CimInstance -Namespace root/SecurityCenter2 -ClassName AntivirusProduct | "
                "Select-Object displayName,productState | ConvertTo-Json")
REMOVABLE_PS = ("Get-Volume | Where-Object DriveType -eq 'Removable' | "
                "Select-Object DriveLetter,FileSystemLabel,FileSystem,Size | ConvertTo-Json")

UPDATE_BLOCKING_SEVERITIES = ("Critical", "Important")
UPDATE_SCAN_MAX_DAYS = 14
SCREEN_LOCK_MAX_SECONDS = 900
UNINSTALL_KEYS = (r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall",
                  r"HKLM\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall")
USER_UNINSTALL = r"Software\Microsoft\Windows\CurrentVersion\Uninstall"
MACHINE_POLICY = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System"
DESKTOP_KEY = r"Control Panel\Desktop"
DESKTOP_POLICY_KEY = r"Software\Policies\Microsoft\Windows\Control Panel\Desktop"
# Local (S-1-5-21-...) and Entra ID (S-1-12-1-...) accounts; not services, not the _Classes hives.
_USER_SID = re.compile(r"^HKEY_USERS\\(S-1-(?:5-21|12-1)(?:-\d+)+)$")
_REG_VALUE = re.compile(r"^ {4}(.*?) {4}(REG_[A-Z_]+)(?: {4}(.*))?$")
# Internet Connection Sharing (which Mobile Hotspot uses) always gives the shared side this address.
ICS_ADDRESS = "192.168.137.1"
HOTSPOT_IFACE_WORDS = ("local area connection*", "wi-fi direct", "mobile hotspot")
# Default administrative shares: drive roots (C$), ADMIN$, IPC$ and the printer-driver share.
_DEFAULT_SHARE = re.compile(r"^(?:[A-Za-z]\$|ADMIN\$|IPC\$|print\$)$", re.IGNORECASE)


def powershell(ctx: Ctx, script: str) -> str:
    return ctx.run(*POWERSHELL, script)


def _json(text: str) -> Any:
    """ConvertTo-Json prints nothing for no objects and a bare object (not a list) for one."""
    text = text.strip()
    return json.loads(text) if text else None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


# --- os_updates ------------------------------------------------------------------------------------

def parse_windows_updates(text: str) -> tuple[datetime | None, list[dict[str, Any]]]:
    """(last successful scan, pending updates as {title, severity}) from UPDATES_PS; also accepts a bare
    list of updates (the searcher's output without the wrapper)."""
    data = _json(text)
    last = None
    if isinstance(data, dict) and "Updates" in data:
        stamp = data.get("LastSearchSuccessDate")
        if isinstance(stamp, str) and stamp:
            last = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        data = data["Updates"]
    updates = [{"title": u.get("Title"), "severity": u.get("MsrcSeverity")} for u in _as_list(data)]
    return last, updates


def updates_result(last: datetime | None, updates: list[dict[str, Any]], now: datetime | None = None) -> Result:
    blocking = [u for u in updates if u["severity"] in UPDATE_BLOCKING_SEVERITIES]
    ev: dict[str, Any] = {"manager": "windows-update", "pending": len(updates), "security_pending": len(blocking),
                          "security_updates": [f"{u['title']} ({u['severity']})" for u in blocking][:20]}
    if last is not None:
        age = ((now or datetime.now(UTC)) - last).total_seconds() / 86400
        ev["last_scan_age_days"] = round(age, 1)
        if age > UPDATE_SCAN_MAX_DAYS:
            return failed(problem=f"Windows Update last found updates {age:.0f} days ago: it is not checking", **ev)
    return failed(**ev) if blocking else passed(**ev)


def os_updates(ctx: Ctx) -> Result:
    return updates_result(*parse_windows_updates(powershell(ctx, UPDATES_PS)))


# --- antivirus -------------------------------------------------------------------------------------

def decode_product_state(state: int) -> dict[str, bool]:
    """Security Center's productState: the second nibble-pair says on/off, the low one signature age."""
    return {"enabled": (state >> 12) & 0xF == 1, "up_to_date": (state >> 4) & 0xF == 0}


def parse_av_products(text: str) -> list[dict[str, Any]]:
    out = []
    for p in _as_list(_json(text)):
        state = int(p.get("productState") or 0)
        out.append({"name": p.get("displayName"), "state": state, **decode_product_state(state)})
    return out


def antivirus(ctx: Ctx) -> Result:
    products = parse_av_products(powershell(ctx, ANTIVIRUS_PS))
    ev: dict[str, Any] = {"products": products}
    if not products:
        return failed(problem="Security Center knows no antivirus product", **ev)
    if any(p["enabled"] and p["up_to_date"] for p in products):
        return passed(**ev)
    if any(p["enabled"] for p in products):
        return failed(problem="the antivirus signatures are out of date", **ev)
    return failed(problem="no antivirus is turned on", **ev)


# --- BitLocker -------------------------------------------------------------------------------------

def parse_manage_bde(text: str) -> dict[str, str]:
    """The `Name:   value` lines of `manage-bde -status X:` (Key Protectors' list lines are skipped)."""
    fields = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition(":")
        if sep and value.strip() and "  " not in name and not name.startswith(("Volume", "Copyright")):
            fields[name.strip()] = value.strip()
    return fields


def bitlocker_protected(fields: dict[str, str]) -> bool:
    """Protection On over an encrypted volume. Fully Encrypted with protection off is *suspended*
    BitLocker: the key sits in the clear on the disk, so it does not count."""
    conversion = fields.get("Conversion Status", "")
    return fields.get("Protection Status") == "Protection On" and conversion in (
        "Fully Encrypted", "Used Space Only Encrypted")


def disk_encryption(ctx: Ctx) -> Result:
    fields = parse_manage_bde(ctx.run("manage-bde", "-status", "C:"))
    ev = {"volume": "C:", "protection": fields.get("Protection Status"),
          "conversion": fields.get("Conversion Status"), "method": fields.get("Encryption Method")}
    if bitlocker_protected(fields):
        return passed(**ev)
    return failed(problem="BitLocker is not protecting the system drive", **ev)


# --- registry helpers --------------------------------------------------------------------------------

def parse_reg_query(text: str) -> dict[str, dict[str, str]]:
    """`reg query` (with or without /s, /v): {key path: {value name: data}}; REG_DWORD data as decimal."""
    keys: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if line.startswith("HKEY_"):
            current = keys.setdefault(line.strip(), {})
            continue
        m = _REG_VALUE.match(line)
        if m and current is not None:
            name, kind, data = m.group(1), m.group(2), (m.group(3) or "").strip()
            if kind in ("REG_DWORD", "REG_QWORD") and data.startswith("0x"):
                data = str(int(data, 16))
            current[name] = data
    return keys


def _reg_values(ctx: Ctx, key: str, *extra: str) -> dict[str, str]:
    """A key's values; {} when the key or value does not exist (`reg query` exits 1)."""
    merged: dict[str, str] = {}
    for values in parse_reg_query(ctx.run("reg", "query", key, *extra, ok_codes=(0, 1))).values():
        merged.update(values)
    return merged


def parse_user_sids(text: str) -> list[str]:
    """Signed-in users' SIDs from `reg query HKU` (their hives are loaded while they are signed in)."""
    return [m.group(1) for m in (_USER_SID.match(line.strip()) for line in text.splitlines()) if m]


def user_sids(ctx: Ctx) -> list[str]:
    return parse_user_sids(ctx.run("reg", "query", "HKU"))


# --- screen lock -------------------------------------------------------------------------------------

def _int(value: str | None) -> int:
    return int(value) if value and value.strip().isdigit() else 0


def screen_saver_locks(values: dict[str, str]) -> tuple[bool, int]:
    """(locks with a password, after how many seconds) from a Control Panel\\Desktop key's values."""
    locks = values.get("ScreenSaveActive") == "1" and values.get("ScreenSaverIsSecure") == "1"
    return locks, _int(values.get("ScreenSaveTimeOut"))


def screen_lock(ctx: Ctx) -> Result:
    # "Interactive logon: Machine inactivity limit" locks every session, whatever each user sets.
    machine = _int(_reg_values(ctx, MACHINE_POLICY, "/v", "InactivityTimeoutSecs").get("InactivityTimeoutSecs"))
    ev: dict[str, Any] = {"machine_inactivity_limit_seconds": machine}
    if 0 < machine <= SCREEN_LOCK_MAX_SECONDS:
        return passed(source="machine policy", **ev)
    sids = user_sids(ctx)
    if not sids:
        return not_applicable("nobody is signed in", **ev)
    users, bad = [], []
    for sid in sids:
        values = _reg_values(ctx, rf"HKU\{sid}\{DESKTOP_KEY}")
        values.update(_reg_values(ctx, rf"HKU\{sid}\{DESKTOP_POLICY_KEY}"))  # group policy wins
        locks, seconds = screen_saver_locks(values)
        entry = {"sid": sid, "screen_saver_locks": locks, "timeout_seconds": seconds}
        users.append(entry)
        if not locks or not 0 < seconds <= SCREEN_LOCK_MAX_SECONDS:
            bad.append(sid)
    ev["users"] = users
    if bad:
        return failed(problem="the screen does not lock with a password within 15 minutes", **ev)
    return passed(source="screen saver", **ev)


# --- installed programs --------------------------------------------------------------------------------

def parse_display_names(text: str) -> list[str]:
    """DisplayName of every program from `reg query <Uninstall> /s /v DisplayName`."""
    return [v["DisplayName"] for v in parse_reg_query(text).values() if v.get("DisplayName")]


def installed_programs(ctx: Ctx) -> list[str]:
    # Per-user installs (uTorrent, many VPN apps) live in the user's own hive, not HKLM.
    keys = [*UNINSTALL_KEYS, *(rf"HKU\{sid}\{USER_UNINSTALL}" for sid in user_sids(ctx))]
    names: set[str] = set()
    for key in keys:
        names.update(parse_display_names(ctx.run("reg", "query", key, "/s", "/v", "DisplayName", ok_codes=(0, 1))))
    return sorted(names)


def program_matches(programs: list[str], wanted: tuple[str, ...]) -> list[str]:
    # uTorrent registers itself as "µTorrent" (micro sign, or Greek mu on some builds).
    by_plain = {p.replace("\u00b5", "u").replace("\u03bc", "u"): p for p in programs}
    return sorted(by_plain[m] for m in common.app_matches(list(by_plain), wanted))


def p2p_clients(ctx: Ctx) -> Result:
    return common.p2p_clients(ctx, program_matches(installed_programs(ctx), ctx.settings.p2p_names))


def vpn_clients(ctx: Ctx) -> Result:
    return common.vpn_clients(ctx, program_matches(installed_programs(ctx), ctx.settings.vpn_names))


# --- hotspot -------------------------------------------------------------------------------------------

def parse_hosted_network(text: str) -> str | None:
    """The `Status` of `netsh wlan show hostednetwork` (None when Wi-Fi/wlansvc is absent)."""
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == "Status":
            return value.strip()
    return None


def _routable_v4(addr: str) -> bool:
    try:
        ip = ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    return ip.version == 4 and not ip.is_link_local and not ip.is_loopback


def hotspot(ctx: Ctx) -> Result:
    # netsh exits 1 when the WLAN service is not running (no Wi-Fi): then nothing can be hosted.
    status = parse_hosted_network(ctx.run("netsh", "wlan", "show", "hostednetwork", ok_codes=(0, 1)))
    sharing = []
    for i in ctx.host.interfaces():
        routable = [a for a in i.addresses if _routable_v4(a)]
        virtual_wifi = any(w in i.name.lower() for w in HOTSPOT_IFACE_WORDS)
        if i.up and (ICS_ADDRESS in i.addresses or (virtual_wifi and routable)):
            sharing.append({"name": i.name, "addresses": list(i.addresses)})
    ev: dict[str, Any] = {"hosted_network": status, "sharing_interfaces": sharing}
    return failed(**ev) if status == "Started" or sharing else passed(**ev)


# --- file shares ---------------------------------------------------------------------------------------

def _net_body(text: str) -> list[str]:
    """The rows of a `net` listing: after the dashed rule, without the closing "completed
    successfully" line (localised, but always last)."""
    lines = text.splitlines()
    rule = next((i for i, line in enumerate(lines) if line.startswith("-----")), None)
    if rule is None:
        return []
    rows = [line for line in lines[rule + 1:] if line.strip()]
    return rows[:-1]


def parse_net_share(text: str) -> list[dict[str, str]]:
    """`net share` rows as {name, path}. Names longer than the column wrap the path onto the next,
    indented, line."""
    shares: list[dict[str, str]] = []
    for row in _net_body(text):
        if row[0].isspace():
            if shares and not shares[-1]["path"]:
                shares[-1]["path"] = row.strip().split("  ")[0]
            continue
        if len(row) > 13 and row[12] == " ":
            name, rest = row[:12].rstrip(), row[13:].strip()
        else:
            name, rest = row.rstrip(), ""
        path = rest.split("  ")[0] if re.match(r"^(?:[A-Za-z]:\\|\\\\)", rest) else ""
        shares.append({"name": name, "path": path})
    return shares


def user_shares(shares: list[dict[str, str]]) -> list[dict[str, str]]:
    return [s for s in shares if not _DEFAULT_SHARE.match(s["name"])]


def file_shares(ctx: Ctx) -> Result:
    shares = parse_net_share(ctx.run("net", "share"))
    mine = user_shares(shares)
    ev = {"shares": [f"{s['name']}={s['path']}" for s in mine],
          "default_shares": sorted(s["name"] for s in shares if s not in mine)}
    return failed(**ev) if mine else passed(**ev)


# --- local administrators --------------------------------------------------------------------------------

def parse_localgroup(text: str) -> list[str]:
    """Members listed by `net localgroup <group>` (as printed, DOMAIN\\ prefixes kept)."""
    return [row.strip() for row in _net_body(text)]


def local_admins(ctx: Ctx) -> Result:
    members = parse_localgroup(ctx.run("net", "localgroup", "Administrators"))
    # Windows account names are case-insensitive; an entry may be allowed as "SCHOOL\it-admin" or "it-admin".
    allowed = {a.lower() for a in ctx.settings.admin_allow}
    extra = sorted(m for m in members if m.lower() not in allowed and m.rsplit("\\", 1)[-1].lower() not in allowed)
    ev = {"administrators": sorted(members), "not_approved": extra, "groups": ["Administrators"]}
    return failed(**ev) if extra else passed(**ev)


# --- removable media ---------------------------------------------------------------------------------------

def parse_removable_volumes(text: str) -> list[dict[str, Any]]:
    """Removable volumes that have a drive letter (without one, nobody can open the files)."""
    out = []
    for v in _as_list(_json(text)):
        letter = v.get("DriveLetter")
        if isinstance(letter, str) and letter.strip("\x00 "):
            out.append({"drive": f"{letter.strip()}:", "label": v.get("FileSystemLabel") or "",
                        "filesystem": v.get("FileSystem")})
    return out


def removable_media(ctx: Ctx) -> Result:
    volumes = parse_removable_volumes(powershell(ctx, REMOVABLE_PS))
    for v in volumes:
        fields = parse_manage_bde(ctx.run("manage-bde", "-status", v["drive"]))
        v["encrypted"] = bitlocker_protected(fields)
        v["protection"] = fields.get("Protection Status")
    ev = {"mounted": volumes}
    if not volumes:
        return passed(note="no removable media mounted", **ev)
    return failed(**ev) if any(not v["encrypted"] for v in volumes) else passed(**ev)


# --- listening servers --------------------------------------------------------------------------------------

RPC_DYNAMIC = 49152
# Windows' own listeners on every install: RPC endpoint mapper and dynamic RPC, NetBIOS name/datagram/session,
# SMB and WS-Discovery (file sharing itself is judged by file_shares), Connected Devices Platform, Delivery
# Optimization. Remote Desktop (svchost on 3389) is not among them.
_OS_PORTS = {"system": {137, 138, 139, 445, 5357}, "svchost.exe": {135, 5040, 7680}}
_RPC_HOSTS = {"svchost.exe", "lsass.exe", "wininit.exe", "services.exe", "spoolsv.exe"}


def is_windows_service(lst: Listener) -> bool:
    name = (lst.process or "").lower()
    return lst.port in _OS_PORTS.get(name, ()) or (name in _RPC_HOSTS and lst.port >= RPC_DYNAMIC)


def listening_servers(ctx: Ctx) -> Result:
    return common.listening_servers(ctx, is_windows_service)


CHECKS: dict[str, Check] = {
    "os_updates": os_updates,
    "antivirus": antivirus,
    "disk_encryption": disk_encryption,
    "screen_lock": screen_lock,
    "p2p_clients": p2p_clients,
    "vpn_clients": vpn_clients,
    "hotspot": hotspot,
    "listening_servers": listening_servers,
    "file_shares": file_shares,
    "local_admins": local_admins,
    "removable_media": removable_media,
    "safeguarding_monitor": common.safeguarding_monitor,
}
