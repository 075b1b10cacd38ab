"""The macOS checks, run for real over outputs recorded from a compliant staff MacBook and a
non-compliant pupil MacBook (tests/fixtures/agent/macos/)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.checks import macos as m
from agent.checks.base import Settings
from agent.checks.runner import Outcome, run_checks
from esafety.compliance.catalogue import CATALOGUE
from tests.support.agent_host import RecordedHost, machine_dir, recorded_ctx

SETTINGS = Settings(admin_allow=("root", "itadmin"))


def run(tmp_path: Path, machine: str | Path, missing: Iterable[str] = ()) -> dict[str, Outcome]:
    folder = machine if isinstance(machine, Path) else machine_dir("macos", machine)
    host = RecordedHost(folder, missing=missing)
    return {o.id: o for o in run_checks(recorded_ctx(host, tmp_path, SETTINGS))}


def fixture(machine: str, name: str) -> str:
    return (machine_dir("macos", machine) / name).read_text()


def edited_machine(tmp_path: Path, machine: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of a recorded machine with host.json changed by `edit(spec)`."""
    folder = tmp_path / f"{machine}-edited"
    shutil.copytree(machine_dir("macos", machine), folder)
    spec = json.loads((folder / "host.json").read_text())
    edit(spec)
    (folder / "host.json").write_text(json.dumps(spec))
    return folder


def test_every_catalogue_check_is_implemented() -> None:
    assert set(m.CHECKS) == {c.id for c in CATALOGUE if "macos" in c.platforms}


def test_compliant_macbook_passes_everything(tmp_path: Path) -> None:
    out = run(tmp_path, "compliant")
    assert {i: o.status for i, o in out.items()} == {c.id: "pass" for c in CATALOGUE}
    ev = {i: o.evidence for i, o in out.items()}
    # Sequoia is offered to a Sonoma Mac: an upgrade, not a missing security fix
    assert ev["os_updates"]["os_version"] == "14.7.1"
    assert ev["os_updates"]["other_updates"] == ["macOS Sequoia 15.1-24B83"]
    assert ev["os_updates"]["security_pending"] == 0
    assert ev["antivirus"]["engine"] == "XProtect" and 4.9 < ev["antivirus"]["signatures_age_days"] < 5.1
    assert ev["disk_encryption"] == {"filevault": "FileVault is On."}
    assert ev["screen_lock"] == {"user": "jsmith", "password_delay_seconds": 5, "screensaver_idle_seconds": 300,
                                 "display_sleep_minutes": 10, "locks_after_seconds": 305}
    assert ev["hotspot"] == {"internet_sharing": False, "sharing_interfaces": []}
    assert ev["file_shares"]["smb_running"] is False
    assert ev["local_admins"]["administrators"] == ["itadmin", "root"]
    assert ev["removable_media"]["mounted"] == [{"device": "disk5s1", "name": "STAFF-SECURE",
                                                 "mountpoint": "/Volumes/STAFF-SECURE", "filesystem": "apfs",
                                                 "encrypted": True}]
    # rapportd and the AirPlay receiver listen on every Mac; macOS's own utun0-3 are not VPNs
    assert ev["listening_servers"]["servers"] == [] and ev["listening_servers"]["os_services_ignored"] == 6
    assert ev["vpn_clients"]["tunnels"] == []


def test_pupil_macbook_fails_with_the_evidence(tmp_path: Path) -> None:
    out = run(tmp_path, "noncompliant")
    assert {i: o.status for i, o in out.items()} == {**{c.id: "fail" for c in CATALOGUE},
                                                     "safeguarding_monitor": "pass"}
    ev = {i: o.evidence for i, o in out.items()}
    assert ev["os_updates"]["security_updates"] == ["macOS Sonoma 14.7.1-23H222"]
    assert ev["os_updates"]["pending"] == 3
    assert "94 days" in ev["antivirus"]["problem"]
    assert ev["disk_encryption"]["problem"] == "FileVault is off"
    assert ev["screen_lock"]["user"] == "sam" and ev["screen_lock"]["password_delay_seconds"] is None
    assert ev["p2p_clients"]["installed"] == ["Transmission.app", "qBittorrent.app"]
    assert [r["name"] for r in ev["p2p_clients"]["running"]] == ["Transmission"]
    assert ev["vpn_clients"]["installed"] == ["ProtonVPN.app"]
    assert [t["name"] for t in ev["vpn_clients"]["tunnels"]] == ["utun4"]
    assert ev["hotspot"]["internet_sharing"] is True
    assert [i["name"] for i in ev["hotspot"]["sharing_interfaces"]] == ["bridge100"]
    assert ev["file_shares"]["smb_running"] is True
    assert ev["file_shares"]["shares"] == ["smb:Sam's Public Folder=/Users/sam/Public", "smb:Games=/Users/sam/Games"]
    assert ev["local_admins"]["not_approved"] == ["sam"]
    assert {(s["process"], s["port"]) for s in ev["listening_servers"]["servers"]} == {
        ("launchd", 445), ("Python", 8000), ("Transmission", 51413)}
    assert ev["removable_media"]["mounted"] == [{"device": "disk4s1", "name": "USBSTICK",
                                                 "mountpoint": "/Volumes/USBSTICK", "filesystem": "msdos",
                                                 "encrypted": False}]


def test_a_missing_program_is_an_error_naming_it(tmp_path: Path) -> None:
    out = run(tmp_path, "compliant", missing={"fdesetup", "diskutil"})
    assert out["disk_encryption"].status == "error" and "fdesetup" in out["disk_encryption"].evidence["error"]
    assert out["removable_media"].status == "error" and "diskutil" in out["removable_media"].evidence["error"]
    assert all(o.status == "pass" for i, o in out.items() if i not in ("disk_encryption", "removable_media"))


def test_a_command_that_times_out_is_an_error_and_the_others_report(tmp_path: Path) -> None:
    def hang(spec: dict[str, Any]) -> None:
        for c in spec["commands"]:
            if c["argv"][0] == "system_profiler":
                c["timeout"] = True

    out = run(tmp_path, edited_machine(tmp_path, "noncompliant", hang))
    assert out["antivirus"].status == "error"
    assert "system_profiler SPInstallHistoryDataType -json" in out["antivirus"].evidence["error"]
    assert {i: o.status for i, o in out.items() if i != "antivirus"} == {
        **{c.id: "fail" for c in CATALOGUE if c.id != "antivirus"}, "safeguarding_monitor": "pass"}


def test_a_third_party_antivirus_stands_in_for_xprotect(tmp_path: Path) -> None:
    def defender(spec: dict[str, Any]) -> None:
        spec["processes"].append({"pid": 511, "name": "wdavdaemon", "user": "root",
                                  "exe": "/Library/Application Support/Microsoft/Defender/wdavdaemon"})

    # system_profiler is not even asked: its 94-day-old XProtect would fail
    out = run(tmp_path, edited_machine(tmp_path, "noncompliant", defender), missing={"system_profiler"})
    assert out["antivirus"].status == "pass" and out["antivirus"].evidence == {"running": ["wdavdaemon"]}


def test_nobody_logged_in_has_no_screen_to_lock(tmp_path: Path) -> None:
    def logged_out(spec: dict[str, Any]) -> None:
        spec["processes"] = [p for p in spec["processes"] if p["name"] != "loginwindow"]

    out = run(tmp_path, edited_machine(tmp_path, "compliant", logged_out))
    assert out["screen_lock"].status == "not_applicable"


# --- parsers and rules ---

def test_softwareupdate_parsing_and_the_security_rule() -> None:
    updates = m.parse_softwareupdate(fixture("noncompliant", "softwareupdate_l.txt"))
    assert [(u["label"], u["version"], u["recommended"], u["restart"]) for u in updates] == [
        ("macOS Sonoma 14.7.1-23H222", "14.7.1", True, True),
        ("Safari18.1SonomaAuto-18.1", "18.1", True, False),
        ("Command Line Tools for Xcode-16.1", "16.1", True, False)]
    nothing = "Software Update Tool\n\nFinding available software\nNo new software available.\n"
    assert m.parse_softwareupdate(nothing) == []
    rsr = {"label": "macOS Ventura 13.4.1 (a)-22F770820d", "title": "Rapid Security Response macOS Ventura 13.4.1 (a)",
           "version": "13.4.1 (a)", "recommended": True, "restart": True}
    assert m.is_security_update(rsr, "13")
    legacy = {"label": "Security Update 2023-004 Monterey-12.6.8", "title": "Security Update 2023-004 Monterey",
              "version": "12.6.8", "recommended": False, "restart": True}
    assert m.is_security_update(legacy, "12")
    assert not m.is_security_update(updates[0], "15")  # a Sonoma update on Sequoia would be a downgrade offer


def test_a_stale_update_scan_fails() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    res = m.updates_result([], "14.7.1", now - timedelta(days=30), now)
    assert res.status == "fail" and "30 days" in res.evidence["problem"]
    assert m.parse_defaults_date("2026-11-30 08:12:33 +0000") == datetime(2026, 11, 30, 8, 12, 33, tzinfo=UTC)
    assert m.parse_defaults_date("The domain/default pair of (x, y) does not exist") is None


def test_xprotect_dates() -> None:
    text = fixture("compliant", "install_history.json").replace("{{days_ago:5:%Y-%m-%dT%H:%M:%SZ}}",
                                                                "2026-11-26T10:00:00Z")
    text = text.replace("{{days_ago:26:%Y-%m-%dT%H:%M:%SZ}}", "2026-11-05T10:00:00Z")
    assert m.parse_xprotect_installs(text) == datetime(2026, 11, 26, 10, tzinfo=UTC)
    assert m.parse_xprotect_installs('{"SPInstallHistoryDataType": []}') is None
    assert m.xprotect_result(None).status == "fail"


def test_filevault_while_converting(tmp_path: Path) -> None:
    folder = edited_machine(tmp_path, "compliant", lambda spec: None)
    status = folder / "fdesetup_status.txt"
    status.write_text("FileVault is On.\nEncryption in progress: Percent completed = 41.7\n")
    out = run(tmp_path, folder)
    assert out["disk_encryption"].status == "pass"
    assert out["disk_encryption"].evidence["progress"] == "Encryption in progress: Percent completed = 41.7"
    status.write_text("FileVault is On.\nDecryption in progress: Percent completed = 12.0\n")
    out = run(tmp_path, folder)
    assert out["disk_encryption"].status == "fail"
    assert out["disk_encryption"].evidence["problem"] == "FileVault is being turned off"


def test_screen_lock_parsing() -> None:
    assert m.parse_screen_lock(fixture("compliant", "sysadminctl_screenlock.txt")) == 5
    assert m.parse_screen_lock("2026-12-01 09:14:21.123 sysadminctl[1:2] screenLock delay is immediate\n") == 0
    assert m.parse_screen_lock(fixture("noncompliant", "sysadminctl_screenlock.txt")) is None
    assert m.parse_pmset_displaysleep(fixture("compliant", "pmset_g.txt")) == 10
    assert m.lock_after(0, 0, 20) == 1200  # the display sleeps after 20 minutes: too late
    assert m.lock_after(60, 0, 0) is None  # nothing ever starts the lock


def test_internet_sharing_switch_is_the_top_level_enabled() -> None:
    nat = fixture("noncompliant", "nat.txt")
    assert m.parse_nat_enabled(nat)
    assert not m.parse_nat_enabled(nat.replace("    Enabled = 1;", "    Enabled = 0;"))  # only AirPort/Primary left
    assert not m.parse_nat_enabled(fixture("compliant", "nat.txt"))


def test_sharing_list() -> None:
    records = m.parse_sharing_list(fixture("noncompliant", "sharing_l.txt"))
    assert [(r["name"], r["path"], r["shared_over"]) for r in records] == [
        ("Sam's Public Folder", "/Users/sam/Public", ["smb"]), ("Games", "/Users/sam/Games", ["smb"]),
        ("Old Projects", "/Users/sam/Documents/Old Projects", [])]
    assert m.parse_sharing_list(fixture("compliant", "sharing_l.txt")) == []


def test_diskutil_parsing() -> None:
    rows = m.parse_diskutil_list(fixture("compliant", "diskutil_list_external.txt"))
    assert rows == [{"desc": "EFI EFI", "id": "disk4s1"}, {"desc": "Apple_APFS Container disk5", "id": "disk4s2"}]
    assert m.parse_diskutil_list(fixture("compliant", "diskutil_list_disk5.txt")) == [
        {"desc": "APFS Volume STAFF-SECURE", "id": "disk5s1"}]
    assert m.parse_diskutil_list("") == []
    info = m.parse_diskutil_info(fixture("noncompliant", "diskutil_info_disk4s1.txt"))
    assert info["Mount Point"] == "/Volumes/USBSTICK" and info["Protocol"] == "USB"
    unmounted = m.volume_state({**info, "Mounted": "No", "Mount Point": ""})
    assert unmounted["mountpoint"] is None


def test_admin_group_membership() -> None:
    assert m.parse_group_membership(fixture("noncompliant", "dscl_admin.txt")) == ["root", "itadmin", "sam"]
    assert m.parse_group_membership("GroupMembership:\n root alice\n") == ["root", "alice"]
