"""macOS checks: softwareupdate, XProtect (or a third-party antivirus), FileVault, screen lock,
/Applications, Internet Sharing, File Sharing, the admin group, external volumes through diskutil.

The agent runs as root from launchd; settings that belong to the signed-in user (screen lock, screen
saver) are read as that user, found as the owner of `loginwindow`.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from agent.checks import common
from agent.checks.base import Check, Ctx, Listener, Result, failed, not_applicable, passed, process_matches

SOFTWAREUPDATE_PREFS = "/Library/Preferences/com.apple.SoftwareUpdate"
NAT_PREFS = "/Library/Preferences/SystemConfiguration/com.apple.nat"
UPDATE_SCAN_MAX_DAYS = 14
XPROTECT_MAX_DAYS = 30
XPROTECT_ITEMS = ("XProtectPlistConfigData", "XProtectPayloads", "XProtect")
# Third-party antivirus / EDR daemons (Defender, Sophos, CrowdStrike, SentinelOne, ESET, Bitdefender,
# Malwarebytes, Avast/AVG, Norton): one running stands in for XProtect's freshness.
AV_PROCESSES = ("wdavdaemon", "SophosScanD", "SophosAntiVirus", "falcond", "com.crowdstrike.falcon.Agent",
                "SentinelAgent", "esets_daemon", "BDLDaemon", "RTProtectionDaemon", "com.avast.daemon",
                "NortonDaemon")
SCREEN_LOCK_MAX_SECONDS = 900
# Internet Sharing puts the shared side on a bridge (bridge100 and up); bridge0 is Thunderbolt Bridge.
SHARING_BRIDGE = re.compile(r"^bridge1\d\d$")
SMB_PORTS = (445, 548)  # launchd holds these for smbd / AFP while File Sharing is on
_PART_ROW = re.compile(r"^\s*\d+:\s+(.+?)\s+[*+]?[\d.]+ [KMGT]?B\s+(disk\d+(?:s\d+)?)\s*$")


def _days_since(stamp: datetime, now: datetime | None) -> float:
    return ((now or datetime.now(UTC)) - stamp).total_seconds() / 86400


# --- os_updates ------------------------------------------------------------------------------------

def parse_softwareupdate(text: str) -> list[dict[str, Any]]:
    """Pending updates from `softwareupdate -l`: each `* Label:` line and the `Title: ..., Version: ...,
    Recommended: YES` line under it. "No new software available." gives []."""
    updates: list[dict[str, Any]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("* Label:"):
            updates.append({"label": stripped.removeprefix("* Label:").strip(), "title": "", "version": "",
                            "recommended": False, "restart": False})
        elif stripped.startswith("Title:") and updates:
            fields = dict(_kv(part) for part in stripped.split(", ") if ":" in part)
            updates[-1].update(title=fields.get("Title", ""), version=fields.get("Version", ""),
                               recommended=fields.get("Recommended") == "YES",
                               restart=fields.get("Action") == "restart")
    return updates


def _kv(part: str) -> tuple[str, str]:
    key, _, value = part.partition(":")
    return key.strip(), value.strip().rstrip(",")


def is_security_update(update: dict[str, Any], os_major: str) -> bool:
    """The rule: anything Apple calls a security update (Security Update YYYY-NNN, Rapid Security
    Response, Background Security Improvement) is one; so is a recommended macOS update *within the
    installed major version* (every point release carries security fixes). A new major version
    (Sonoma -> Sequoia) is an upgrade, not a pending fix: Apple patches the previous majors."""
    text = f"{update['label']} {update['title']}"
    if "security" in text.lower():
        return True
    if update["recommended"] and "macOS" in text:
        return update["version"].split(".")[0] == os_major
    return False


def parse_defaults_date(text: str) -> datetime | None:
    """`defaults read` of a date: `2023-12-01 08:12:33 +0000`."""
    text = text.strip()
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S %z")
    except ValueError:
        return None


def updates_result(updates: list[dict[str, Any]], os_version: str, last_scan: datetime | None,
                   now: datetime | None = None) -> Result:
    major = os_version.split(".")[0]
    security = [u for u in updates if is_security_update(u, major)]
    ev: dict[str, Any] = {"manager": "softwareupdate", "os_version": os_version, "pending": len(updates),
                          "security_pending": len(security), "security_updates": [u["label"] for u in security][:20],
                          "other_updates": [u["label"] for u in updates if u not in security][:20]}
    if last_scan is not None:
        age = _days_since(last_scan, now)
        ev["last_scan_age_days"] = round(age, 1)
        if age > UPDATE_SCAN_MAX_DAYS:
            return failed(problem=f"Software Update last checked {age:.0f} days ago: it is not checking", **ev)
    return failed(**ev) if security else passed(**ev)


def os_updates(ctx: Ctx) -> Result:
    # --no-scan lists what the daily background scan found (an online scan takes longer than a check
    # may); the scan's own date is checked instead.
    updates = parse_softwareupdate(ctx.run("softwareupdate", "-l", "--no-scan"))
    version = ctx.run("sw_vers", "-productVersion").strip()
    last = parse_defaults_date(ctx.run("defaults", "read", SOFTWAREUPDATE_PREFS, "LastSuccessfulDate",
                                       ok_codes=(0, 1)))
    return updates_result(updates, version, last)


# --- antivirus -------------------------------------------------------------------------------------

def parse_xprotect_installs(text: str) -> datetime | None:
    """Newest XProtect install date from `system_profiler SPInstallHistoryDataType -json`."""
    items = json.loads(text).get("SPInstallHistoryDataType", [])
    dates = [datetime.strptime(i["install_date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
             for i in items if i.get("_name") in XPROTECT_ITEMS and i.get("install_date")]
    return max(dates, default=None)


def xprotect_result(newest: datetime | None, now: datetime | None = None) -> Result:
    if newest is None:
        return failed(problem="XProtect has never been updated and no other antivirus is running",
                      looked_for=list(AV_PROCESSES))
    age = _days_since(newest, now)
    ev = {"engine": "XProtect", "last_update": newest.isoformat(), "signatures_age_days": round(age, 1)}
    if age > XPROTECT_MAX_DAYS:
        return failed(problem=f"XProtect last updated {age:.0f} days ago (automatic security updates off?)", **ev)
    return passed(**ev)


def antivirus(ctx: Ctx) -> Result:
    running = process_matches(ctx.host.processes(), AV_PROCESSES)
    if running:
        return passed(running=sorted({r["name"] for r in running}))
    return xprotect_result(parse_xprotect_installs(ctx.run("system_profiler", "SPInstallHistoryDataType", "-json")))


# --- FileVault ---------------------------------------------------------------------------------------

def disk_encryption(ctx: Ctx) -> Result:
    out = ctx.run("fdesetup", "status")
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    ev: dict[str, Any] = {"filevault": lines[0] if lines else ""}
    progress = next((line for line in lines if "in progress" in line), None)
    if progress:
        ev["progress"] = progress
    # Still encrypting counts: APFS protects new data at once and the rest converges in the background.
    if "FileVault is On." in lines and not (progress and progress.startswith("Decryption")):
        return passed(**ev)
    if progress and progress.startswith("Decryption"):
        return failed(problem="FileVault is being turned off", **ev)
    return failed(problem="FileVault is off", **ev)


# --- screen lock -------------------------------------------------------------------------------------

def console_user(ctx: Ctx) -> str | None:
    users = [p.user for p in ctx.host.processes() if p.name == "loginwindow" and p.user and p.user != "root"]
    return users[0] if users else None


def parse_screen_lock(text: str) -> int | None:
    """Seconds between screen saver/sleep and the password prompt from `sysadminctl -screenLock status`
    (it logs to stderr: "... screenLock delay is 300 seconds", "screenLock delay is immediate",
    "screenLock is off"); None when off."""
    if "screenLock is off" in text:
        return None
    if "screenLock delay is immediate" in text:
        return 0
    m = re.search(r"screenLock delay is (\d+) seconds", text)
    return int(m.group(1)) if m else None


def parse_pmset_displaysleep(text: str) -> int:
    """Minutes until the display sleeps from `pmset -g` (0 = never)."""
    m = re.search(r"(?m)^\s*displaysleep\s+(\d+)", text)
    return int(m.group(1)) if m else 0


def lock_after(delay: int | None, screensaver_idle: int, displaysleep_min: int) -> int | None:
    """Seconds idle before a password is needed: the first of screen saver / display sleep, plus the
    delay; None when the screen never locks."""
    starts = [s for s in (screensaver_idle, displaysleep_min * 60) if s > 0]
    if delay is None or not starts:
        return None
    return min(starts) + delay


def screen_lock(ctx: Ctx) -> Result:
    user = console_user(ctx)
    if user is None:
        return not_applicable("nobody is logged in at the console")
    as_user = ("sudo", "-n", "-u", user, "--")
    delay = parse_screen_lock(ctx.run(*as_user, "sysadminctl", "-screenLock", "status"))
    idle_out = ctx.run(*as_user, "defaults", "-currentHost", "read", "com.apple.screensaver", "idleTime",
                       ok_codes=(0, 1)).strip()
    idle = int(idle_out) if idle_out.isdigit() else 0
    display = parse_pmset_displaysleep(ctx.run("pmset", "-g"))
    after = lock_after(delay, idle, display)
    ev = {"user": user, "password_delay_seconds": delay, "screensaver_idle_seconds": idle,
          "display_sleep_minutes": display, "locks_after_seconds": after}
    if delay is None:
        return failed(problem="no password is asked after the screen saver or sleep", **ev)
    if after is None or after > SCREEN_LOCK_MAX_SECONDS:
        return failed(problem="the screen never goes idle or waits more than 15 minutes", **ev)
    return passed(**ev)


# --- installed applications ----------------------------------------------------------------------------

def applications(ctx: Ctx) -> list[str]:
    dirs = ["/Applications", *(f"/Users/{u}/Applications" for u in ctx.host.listdir("/Users") if u != "Shared")]
    return [a for d in dirs for a in ctx.host.listdir(d) if a.endswith(".app")]


def p2p_clients(ctx: Ctx) -> Result:
    return common.p2p_clients(ctx, common.app_matches(applications(ctx), ctx.settings.p2p_names))


def vpn_clients(ctx: Ctx) -> Result:
    return common.vpn_clients(ctx, common.app_matches(applications(ctx), ctx.settings.vpn_names))


# --- hotspot -------------------------------------------------------------------------------------------

def parse_nat_enabled(text: str) -> bool:
    """Internet Sharing's switch: the *top-level* `Enabled = 1;` of the NAT dictionary (the nested
    AirPort/PrimaryInterface dictionaries have their own Enabled keys, indented deeper)."""
    return re.search(r"(?m)^ {4}Enabled = 1;", text) is not None


def hotspot(ctx: Ctx) -> Result:
    # `defaults read` exits 1 when Internet Sharing was never configured.
    enabled = parse_nat_enabled(ctx.run("defaults", "read", NAT_PREFS, "NAT", ok_codes=(0, 1)))
    bridges = [{"name": i.name, "addresses": list(i.addresses)} for i in ctx.host.interfaces()
               if SHARING_BRIDGE.match(i.name) and i.up and i.addresses]
    ev = {"internet_sharing": enabled, "sharing_interfaces": bridges}
    return failed(**ev) if enabled or bridges else passed(**ev)


# --- file shares ---------------------------------------------------------------------------------------

def parse_sharing_list(text: str) -> list[dict[str, Any]]:
    """Share points from `sharing -l`: each record's `name:`/`path:` and, inside each protocol's
    `afp: {`, `smb: {` block, whether it is `shared: 1`. "No share point records." gives []."""
    records: list[dict[str, Any]] = []
    block: str | None = None
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        value = value.strip()
        if line.strip() == "}":
            block = None
        elif sep and value == "{":
            block = key
        elif block is None and key == "name" and sep:
            records.append({"name": value, "path": "", "shared_over": []})
        elif block is None and key == "path" and records:
            records[-1]["path"] = value
        elif block and key == "shared" and value == "1" and records:
            records[-1]["shared_over"].append(block)
    return records


def file_shares(ctx: Ctx) -> Result:
    procs = ctx.host.processes()
    smb = bool(process_matches(procs, ("smbd",))) or any(
        lst.port in SMB_PORTS and lst.proto == "tcp" for lst in ctx.host.listeners())
    nfsd = bool(process_matches(procs, ("nfsd",)))
    shares: list[str] = []
    if smb:
        # Share points outlive File Sharing being turned off; they only share while the server is on.
        shares += [f"{'+'.join(r['shared_over'])}:{r['name']}={r['path']}"
                   for r in parse_sharing_list(ctx.run("sharing", "-l")) if r["shared_over"]]
    if nfsd:
        shares += common.nfs_exports(ctx)
    ev = {"smb_running": smb, "nfsd_running": nfsd, "shares": shares}
    return failed(**ev) if shares else passed(**ev)


# --- local administrators --------------------------------------------------------------------------------

def parse_group_membership(text: str) -> list[str]:
    """`dscl . -read /Groups/admin GroupMembership`: "GroupMembership: root sam" (the names may wrap
    onto the next line, indented)."""
    _, _, rest = text.partition("GroupMembership:")
    return rest.split()


def local_admins(ctx: Ctx) -> Result:
    admins = parse_group_membership(ctx.run("dscl", ".", "-read", "/Groups/admin", "GroupMembership"))
    allowed = set(ctx.settings.admin_allow)
    extra = sorted(a for a in admins if a not in allowed)
    ev = {"administrators": sorted(admins), "not_approved": extra, "groups": ["admin"]}
    return failed(**ev) if extra else passed(**ev)


# --- removable media ---------------------------------------------------------------------------------------

def parse_diskutil_list(text: str) -> list[dict[str, str]]:
    """Partition rows of `diskutil list`: {type+name, identifier}; the whole-disk row (scheme) is skipped."""
    rows = []
    for line in text.splitlines():
        m = _PART_ROW.match(line)
        if m and "s" in m.group(2)[4:]:
            rows.append({"desc": m.group(1), "id": m.group(2)})
    return rows


def parse_diskutil_info(text: str) -> dict[str, str]:
    info = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def volume_state(info: dict[str, str]) -> dict[str, Any]:
    encrypted = info.get("FileVault", "").startswith("Yes") or info.get("Encrypted", "").startswith("Yes")
    return {"device": info.get("Device Identifier"), "name": info.get("Volume Name"),
            "mountpoint": info.get("Mount Point") if info.get("Mounted") == "Yes" else None,
            "filesystem": info.get("Type (Bundle)"), "encrypted": encrypted}


def _volumes(ctx: Ctx, rows: list[dict[str, str]]) -> list[str]:
    ids = []
    for row in rows:
        container = re.search(r"Container (disk\d+)", row["desc"])
        if container:  # an APFS container's volumes are on its synthesized disk
            ids += [r["id"] for r in parse_diskutil_list(ctx.run("diskutil", "list", container.group(1)))
                    if "APFS Volume" in r["desc"]]
        elif not row["desc"].startswith("EFI"):
            ids.append(row["id"])
    return ids


def removable_media(ctx: Ctx) -> Result:
    rows = parse_diskutil_list(ctx.run("diskutil", "list", "external", "physical"))
    volumes = [volume_state(parse_diskutil_info(ctx.run("diskutil", "info", v))) for v in _volumes(ctx, rows)]
    mounted = [v for v in volumes if v["mountpoint"]]
    ev = {"mounted": mounted}
    if not mounted:
        return passed(note="no removable media mounted", **ev)
    return failed(**ev) if any(not v["encrypted"] for v in mounted) else passed(**ev)


# --- listening servers --------------------------------------------------------------------------------------

# Continuity/Handoff (rapportd), the AirPlay receiver (ControlCenter, AirPlayXPCHelper) and iCloud
# identity services listen on every Mac; launchd's on-demand sockets (ssh, smb, screen sharing) are
# servers a user turned on and stay reported.
MACOS_SERVICES = frozenset({"rapportd", "controlcenter", "airplayxpchelper", "identityservicesd", "sharingd"})


def is_macos_service(lst: Listener) -> bool:
    return (lst.process or "").lower() in MACOS_SERVICES


def listening_servers(ctx: Ctx) -> Result:
    return common.listening_servers(ctx, is_macos_service)


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
