"""Linux checks: apt/dnf, ClamAV, LUKS, GNOME screen lock, hostapd / `iw`, Samba/NFS, sudo group,
removable media through lsblk."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from agent.checks import common
from agent.checks.base import (
    Check,
    CommandMissing,
    Ctx,
    Result,
    error,
    failed,
    not_applicable,
    passed,
    process_matches,
)

APP_DIRS = ("/usr/share/applications", "/usr/local/share/applications", "/var/lib/flatpak/exports/share/applications",
            "/var/lib/snapd/desktop/applications")
ADMIN_GROUPS = ("sudo", "wheel", "admin")
AV_PROCESSES = ("clamd", "freshclam", "wdavdaemon", "mdatp", "sophosav", "savd", "falcon-sensor", "esets_daemon",
                "bdsecd")
CLAMAV_DBS = ("/var/lib/clamav/daily.cld", "/var/lib/clamav/daily.cvd")
SIGNATURES_MAX_DAYS = 7
APT_LISTS_MAX_DAYS = 14
DESKTOP_SESSIONS = ("gnome-session-binary", "gnome-shell", "plasmashell", "xfce4-session", "cinnamon-session",
                    "mate-session")
_INST = re.compile(r"^Inst (\S+) (?:\[(\S+)\] )?\((\S+) ([^\[]*)\[")

# apt's solver takes seconds; its answer only changes when the package state or lists do.
_apt_cache: dict[tuple[float | None, ...], Result] = {}


def os_updates(ctx: Ctx) -> Result:
    try:
        return _apt(ctx)
    except CommandMissing:
        pass
    try:
        out = ctx.run("dnf", "-q", "updateinfo", "list", "--security", "--available")
    except CommandMissing:
        return error("no supported package manager found (apt-get, dnf)")
    pending = sorted({line.split()[-1] for line in out.splitlines() if line.strip() and not line.startswith("Last")})
    ev = {"manager": "dnf", "security_pending": len(pending), "security_packages": pending[:20]}
    return failed(**ev) if pending else passed(**ev)


def _apt(ctx: Ctx) -> Result:
    stamp = tuple(ctx.host.mtime(p) for p in ("/var/lib/dpkg/status", "/var/cache/apt/pkgcache.bin",
                                               "/var/lib/apt/lists"))
    if stamp in _apt_cache:
        return _apt_cache[stamp]
    out = ctx.run("apt-get", "-s", "-o", "Debug::NoLocking=1", "upgrade")
    result = parse_apt_simulation(out, stamp[2])
    _apt_cache.clear()
    _apt_cache[stamp] = result
    return result


def parse_apt_simulation(out: str, lists_mtime: float | None, now: float | None = None) -> Result:
    """`apt-get -s upgrade`: every `Inst` line is a pending upgrade; from a -security suite, a security one."""
    pending, security = [], []
    for line in out.splitlines():
        m = _INST.match(line)
        if m:
            pending.append(m.group(1))
            if "security" in m.group(4).lower():
                security.append(f"{m.group(1)} {m.group(3)}")
    ev: dict[str, Any] = {"manager": "apt", "pending": len(pending), "security_pending": len(security),
                          "security_packages": security[:20]}
    if lists_mtime is not None:
        age = ((now or time.time()) - lists_mtime) / 86400
        ev["lists_age_days"] = round(age, 1)
        if age > APT_LISTS_MAX_DAYS:
            return failed(problem=f"package lists are {age:.0f} days old: updates are not being checked", **ev)
    return failed(**ev) if security else passed(**ev)


def antivirus(ctx: Ctx) -> Result:
    running = process_matches(ctx.host.processes(), AV_PROCESSES)
    if not running:
        return failed(problem="no antivirus is running", looked_for=list(AV_PROCESSES))
    names = {r["name"] for r in running}
    ev: dict[str, Any] = {"running": sorted(names)}
    if names & {"clamd", "freshclam"}:
        ages = [m for m in (ctx.host.mtime(p) for p in CLAMAV_DBS) if m is not None]
        if not ages:
            return failed(problem="ClamAV has no signature database", **ev)
        days = (time.time() - max(ages)) / 86400
        ev["signatures_age_days"] = round(days, 1)
        if days > SIGNATURES_MAX_DAYS:
            return failed(problem=f"ClamAV signatures are {days:.0f} days old", **ev)
    return passed(**ev)


def disk_encryption(ctx: Ctx) -> Result:
    source, _, fstype = ctx.run("findmnt", "-n", "-o", "SOURCE,FSTYPE", "/").strip().partition(" ")
    fstype = fstype.strip()
    if not source.startswith("/dev/"):
        return not_applicable(f"the root filesystem is {fstype or '?'} on {source or '?'} (a container or live system)")
    tree = json.loads(ctx.run("lsblk", "-J", "-s", "-o", "NAME,TYPE,FSTYPE", source.split("[", 1)[0]))
    layers = _walk(tree.get("blockdevices", []))
    chain = [f"{d['name']}:{d['type']}" for d in layers]
    encrypted = any(d["type"] == "crypt" or d.get("fstype") == "crypto_LUKS" for d in layers)
    ev = {"root": source, "fstype": fstype, "chain": chain}
    return passed(**ev) if encrypted else failed(problem="the system disk is not encrypted (no LUKS layer)", **ev)


def _walk(devices: list[dict[str, Any]], parents: tuple[dict[str, Any], ...] = ()) -> list[dict[str, Any]]:
    out = []
    for d in devices:
        out.append(d)
        out += _walk(d.get("children") or [], (*parents, d))
    return out


def screen_lock(ctx: Ctx) -> Result:
    sessions = process_matches(ctx.host.processes(), DESKTOP_SESSIONS)
    if not sessions:
        return not_applicable("no desktop session is running")
    user = next((s["user"] for s in sessions if s["user"]), None)
    prefix = ["runuser", "-u", user, "--"] if user and user != "root" else []
    try:
        enabled = ctx.run(*prefix, "gsettings", "get", "org.gnome.desktop.screensaver", "lock-enabled").strip()
        delay = ctx.run(*prefix, "gsettings", "get", "org.gnome.desktop.session", "idle-delay").split()[-1]
    except CommandMissing:
        return not_applicable("not a GNOME desktop (no gsettings)", desktop=sessions[0]["name"])
    seconds = int(delay) if delay.isdigit() else 0
    ev = {"user": user, "lock_enabled": enabled == "true", "idle_delay_seconds": seconds}
    if enabled != "true":
        return failed(problem="the screen does not lock", **ev)
    if seconds == 0 or seconds > 900:
        return failed(problem="the screen never goes idle or waits more than 15 minutes", **ev)
    return passed(**ev)


def _desktop_apps(ctx: Ctx, names: tuple[str, ...]) -> list[str]:
    homes = [f"/home/{h}/.local/share/applications" for h in ctx.host.listdir("/home")]
    entries = [e for d in (*APP_DIRS, *homes) for e in ctx.host.listdir(d) if e.endswith(".desktop")]
    return common.app_matches(entries, names)


def p2p_clients(ctx: Ctx) -> Result:
    return common.p2p_clients(ctx, _desktop_apps(ctx, ctx.settings.p2p_names))


def vpn_clients(ctx: Ctx) -> Result:
    return common.vpn_clients(ctx, _desktop_apps(ctx, ctx.settings.vpn_names))


def hotspot(ctx: Ctx) -> Result:
    aps = process_matches(ctx.host.processes(), ("hostapd", "create_ap"))
    wireless = [n for n in ctx.host.listdir("/sys/class/net") if ctx.host.listdir(f"/sys/class/net/{n}/wireless")
                or ctx.host.listdir(f"/sys/class/net/{n}/phy80211")]
    ev: dict[str, Any] = {"access_point_software": aps, "wireless_interfaces": wireless}
    ap_ifaces: list[str] = []
    if wireless:
        try:
            ap_ifaces = parse_iw_dev(ctx.run("iw", "dev"))
        except CommandMissing:
            if not aps:
                return error("cannot read the Wi-Fi mode: `iw` is not installed", **ev)
    ev["ap_interfaces"] = ap_ifaces
    return failed(**ev) if aps or ap_ifaces else passed(**ev)


def parse_iw_dev(out: str) -> list[str]:
    """Interfaces in access-point mode from `iw dev` (an `Interface` line, later its `type AP`)."""
    found, current = [], None
    for line in out.splitlines():
        words = line.split()
        if words[:1] == ["Interface"] and len(words) > 1:
            current = words[1]
        elif words[:2] == ["type", "AP"] and current:
            found.append(current)
    return found


def file_shares(ctx: Ctx) -> Result:
    procs = ctx.host.processes()
    smbd = bool(process_matches(procs, ("smbd",)))
    nfsd = bool(process_matches(procs, ("nfsd", "rpc.nfsd", "rpc.mountd")))
    shares: list[str] = []
    if smbd:
        shares += [f"smb:{s}" for s in parse_smb_conf(ctx.host.read("/etc/samba/smb.conf") or "")]
        shares += [f"smb-usershare:{s}" for s in ctx.host.listdir("/var/lib/samba/usershares")]
    if nfsd:
        shares += common.nfs_exports(ctx)
    ev = {"smbd_running": smbd, "nfsd_running": nfsd, "shares": shares}
    return failed(**ev) if shares else passed(**ev)


def parse_smb_conf(text: str) -> list[str]:
    """Share sections; [global] is settings, and printers/homes are what a print server offers."""
    skip = {"global", "printers", "print$", "homes"}
    names = re.findall(r"(?m)^\s*\[([^\]]+)\]", text)
    return [n for n in names if n.strip().lower() not in skip]


def local_admins(ctx: Ctx) -> Result:
    group_text, passwd_text = ctx.host.read("/etc/group"), ctx.host.read("/etc/passwd")
    if group_text is None or passwd_text is None:
        return error("cannot read /etc/group and /etc/passwd")
    admins = admin_accounts(group_text, passwd_text)
    allowed = set(ctx.settings.admin_allow)
    extra = sorted(a for a in admins if a not in allowed)
    ev = {"administrators": sorted(admins), "not_approved": extra, "groups": list(ADMIN_GROUPS)}
    return failed(**ev) if extra else passed(**ev)


def admin_accounts(group_text: str, passwd_text: str) -> set[str]:
    """uid 0 accounts, members of sudo/wheel/admin, and accounts whose primary group is one of them."""
    gids, admins = set(), set()
    for line in group_text.splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[0] in ADMIN_GROUPS:
            gids.add(parts[2])
            admins |= {m for m in parts[3].split(",") if m}
    for line in passwd_text.splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and (parts[2] == "0" or parts[3] in gids):
            admins.add(parts[0])
    return admins


def removable_media(ctx: Ctx) -> Result:
    tree = json.loads(ctx.run("lsblk", "-J", "-o", "NAME,TYPE,RM,HOTPLUG,TRAN,FSTYPE,MOUNTPOINT"))
    mounted = removable_mounts(tree.get("blockdevices", []))
    bad = [m for m in mounted if not m["encrypted"]]
    ev = {"mounted": mounted}
    if not mounted:
        return passed(note="no removable media mounted", **ev)
    return failed(**ev) if bad else passed(**ev)


def _flag(v: Any) -> bool:
    return v is True or v in ("1", 1, "true")


def removable_mounts(devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mounted filesystems on removable/hot-plugged/USB disks, each with whether a crypt layer is above the disk."""
    found: list[dict[str, Any]] = []

    def visit(d: dict[str, Any], disk: str, crypt: bool) -> None:
        crypt = crypt or d.get("type") == "crypt"
        if d.get("mountpoint"):
            found.append({"device": d["name"], "disk": disk, "mountpoint": d["mountpoint"], "encrypted": crypt,
                          "fstype": d.get("fstype")})
        for c in d.get("children") or []:
            visit(c, disk, crypt)

    for disk in devices:
        if _flag(disk.get("rm")) or _flag(disk.get("hotplug")) or disk.get("tran") == "usb":
            visit(disk, disk["name"], False)
    return found


CHECKS: dict[str, Check] = {
    "os_updates": os_updates,
    "antivirus": antivirus,
    "disk_encryption": disk_encryption,
    "screen_lock": screen_lock,
    "p2p_clients": p2p_clients,
    "vpn_clients": vpn_clients,
    "hotspot": hotspot,
    "listening_servers": common.listening_servers,
    "file_shares": file_shares,
    "local_admins": local_admins,
    "removable_media": removable_media,
    "safeguarding_monitor": common.safeguarding_monitor,
}
