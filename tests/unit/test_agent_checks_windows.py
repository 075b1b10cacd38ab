"""The Windows checks, run for real over outputs recorded from a compliant staff laptop and a
non-compliant pupil laptop (tests/fixtures/agent/windows/)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest

from agent.checks import windows as w
from agent.checks.base import Listener, Settings
from agent.checks.runner import Outcome, run_checks
from esafety.compliance.catalogue import CATALOGUE
from tests.support.agent_host import RecordedHost, machine_dir, recorded_ctx

SETTINGS = Settings(admin_allow=("Administrator", "SCHOOL\\Domain Admins", "it-support"))


def run(tmp_path: Path, machine: str, missing: Iterable[str] = (), timeouts: Iterable[str] = ()) -> dict[str, Outcome]:
    host = RecordedHost.load("windows", machine, missing=missing, timeouts=timeouts)
    return {o.id: o for o in run_checks(recorded_ctx(host, tmp_path, SETTINGS))}


def fixture(machine: str, name: str) -> str:
    return (machine_dir("windows", machine) / name).read_text()


def test_every_catalogue_check_is_implemented() -> None:
    assert set(w.CHECKS) == {c.id for c in CATALOGUE if "windows" in c.platforms}


def test_compliant_laptop_passes_everything(tmp_path: Path) -> None:
    out = run(tmp_path, "compliant")
    assert {i: o.status for i, o in out.items()} == {c.id: "pass" for c in CATALOGUE}
    ev = {i: o.evidence for i, o in out.items()}
    assert ev["os_updates"]["pending"] == 2 and ev["os_updates"]["security_pending"] == 0  # definitions, a driver
    assert ev["os_updates"]["last_scan_age_days"] == pytest.approx(1.0, abs=0.1)
    assert ev["antivirus"]["products"] == [{"name": "Windows Defender", "state": 397568, "enabled": True,
                                            "up_to_date": True}]
    assert ev["disk_encryption"]["protection"] == "Protection On"
    assert ev["disk_encryption"]["conversion"] == "Fully Encrypted"
    assert ev["screen_lock"] == {"machine_inactivity_limit_seconds": 600, "source": "machine policy"}
    assert ev["hotspot"]["hosted_network"] == "Not available"
    assert ev["file_shares"]["default_shares"] == ["ADMIN$", "C$", "IPC$"]
    assert ev["local_admins"]["administrators"] == ["Administrator", "SCHOOL\\Domain Admins", "SCHOOL\\it-support"]
    assert ev["removable_media"]["mounted"][0]["drive"] == "E:" and ev["removable_media"]["mounted"][0]["encrypted"]
    # RPC, SMB, NetBIOS, Delivery Optimization: Windows' own listeners are not the user's servers
    assert ev["listening_servers"]["servers"] == [] and ev["listening_servers"]["os_services_ignored"] == 13


def test_pupil_laptop_fails_with_the_evidence(tmp_path: Path) -> None:
    out = run(tmp_path, "noncompliant")
    statuses = {i: o.status for i, o in out.items()}
    assert statuses == {**{c.id: "fail" for c in CATALOGUE}, "safeguarding_monitor": "pass"}
    ev = {i: o.evidence for i, o in out.items()}

    assert ev["os_updates"]["security_pending"] == 2 and ev["os_updates"]["pending"] == 3
    assert any("KB5046633" in u and "(Critical)" in u for u in ev["os_updates"]["security_updates"])

    assert ev["antivirus"]["problem"] == "the antivirus signatures are out of date"
    assert [(p["name"], p["enabled"], p["up_to_date"]) for p in ev["antivirus"]["products"]] == [
        ("Windows Defender", False, True), ("Avast Antivirus", True, False)]

    assert ev["disk_encryption"]["protection"] == "Protection Off"

    user = ev["screen_lock"]["users"][0]
    assert user["sid"].startswith("S-1-5-21-") and user["screen_saver_locks"] is False  # no password on resume
    assert ev["screen_lock"]["machine_inactivity_limit_seconds"] == 0

    assert ev["p2p_clients"]["installed"] == ["qBittorrent", "\u00b5Torrent"]  # uTorrent from the user's own hive
    assert [r["name"] for r in ev["p2p_clients"]["running"]] == ["qbittorrent.exe"]

    assert ev["vpn_clients"]["installed"] == ["NordVPN"]
    assert ev["vpn_clients"]["tunnels"] == [{"name": "NordLynx", "addresses": ["10.5.0.2"]}]

    assert [i["name"] for i in ev["hotspot"]["sharing_interfaces"]] == ["Local Area Connection* 10"]

    assert ev["file_shares"]["shares"] == ["Minecraft Worlds=C:\\Users\\sam\\AppData\\Roaming\\.minecraft\\saves",
                                           "Users=C:\\Users"]
    assert ev["local_admins"]["not_approved"] == ["sam"]

    servers = {(s["process"], s["port"]) for s in ev["listening_servers"]["servers"]}
    assert servers == {("svchost.exe", 3389), ("qbittorrent.exe", 8999), ("javaw.exe", 25565)}

    media = {m["drive"]: m["encrypted"] for m in ev["removable_media"]["mounted"]}
    assert media == {"E:": False, "F:": True}  # the volume without a drive letter is not listed


def test_a_missing_program_is_an_error_naming_it(tmp_path: Path) -> None:
    out = run(tmp_path, "compliant", missing={"manage-bde"})
    for cid in ("disk_encryption", "removable_media"):
        assert out[cid].status == "error"
        assert "manage-bde" in out[cid].evidence["error"]
    assert all(o.status == "pass" for i, o in out.items() if i not in ("disk_encryption", "removable_media"))


def test_a_command_that_times_out_is_an_error_and_the_others_report(tmp_path: Path) -> None:
    out = run(tmp_path, "noncompliant", timeouts={"powershell"})
    hung = {"os_updates", "antivirus", "removable_media"}
    for cid in hung:
        assert out[cid].status == "error" and "took longer" in out[cid].evidence["error"]
    assert {i: o.status for i, o in out.items() if i not in hung} == {
        **{c.id: "fail" for c in CATALOGUE if c.id not in hung}, "safeguarding_monitor": "pass"}


def test_a_recorded_timeout_in_the_fixture(tmp_path: Path) -> None:
    machine = tmp_path / "machine"
    shutil.copytree(machine_dir("windows", "compliant"), machine)
    spec = json.loads((machine / "host.json").read_text())
    for c in spec["commands"]:
        if c["argv"][:2] == ["net", "share"]:
            c["timeout"] = True
    (machine / "host.json").write_text(json.dumps(spec))
    out = {o.id: o for o in run_checks(recorded_ctx(RecordedHost(machine), tmp_path, SETTINGS))}
    assert out["file_shares"].status == "error" and "net share" in out["file_shares"].evidence["error"]
    assert out["local_admins"].status == "pass"


# --- parsers, on the recorded text and on the cases the machines do not show ---

def test_product_state_decoding() -> None:
    assert w.decode_product_state(397568) == {"enabled": True, "up_to_date": True}  # Defender on, current
    assert w.decode_product_state(393472) == {"enabled": False, "up_to_date": True}  # Defender passive
    assert w.decode_product_state(397584) == {"enabled": True, "up_to_date": False}  # on, signatures old
    assert w.parse_av_products("") == []


def test_updates_json_shapes() -> None:
    last, updates = w.parse_windows_updates(fixture("compliant", "updates.json").replace(
        "{{days_ago:1:%Y-%m-%dT%H:%M:%SZ}}", "2026-11-30T08:00:00Z"))
    assert last is not None and last.isoformat() == "2026-11-30T08:00:00+00:00"
    assert [u["severity"] for u in updates] == [None, None]
    # the searcher's own output: one update is a bare object, none is no output at all
    assert w.parse_windows_updates('{"Title": "KB1", "MsrcSeverity": "Important"}') == (
        None, [{"title": "KB1", "severity": "Important"}])
    assert w.parse_windows_updates("") == (None, [])


def test_a_stale_update_scan_fails() -> None:
    from datetime import UTC, datetime, timedelta
    now = datetime(2026, 12, 1, tzinfo=UTC)
    res = w.updates_result(now - timedelta(days=40), [], now)
    assert res.status == "fail" and "not checking" in res.evidence["problem"]


def test_suspended_bitlocker_does_not_count() -> None:
    text = fixture("compliant", "manage-bde_C.txt").replace("Protection On", "Protection Off")
    fields = w.parse_manage_bde(text)
    assert fields["Conversion Status"] == "Fully Encrypted" and not w.bitlocker_protected(fields)
    assert w.bitlocker_protected(w.parse_manage_bde(fixture("compliant", "manage-bde_E.txt")))


def test_reg_query_parsing() -> None:
    keys = w.parse_reg_query(fixture("compliant", "reg_inactivity.txt"))
    assert keys == {"HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System":
                    {"InactivityTimeoutSecs": "600"}}
    desktop = next(iter(w.parse_reg_query(fixture("noncompliant", "reg_desktop.txt")).values()))
    assert desktop["ScreenSaveTimeOut"] == "900" and desktop["Pattern Upgrade"] == "TRUE"
    assert desktop["(Default)"] == "" and desktop["CaretTimeout"] == "5000"
    assert w.screen_saver_locks(desktop) == (False, 900)
    assert w.screen_saver_locks({**desktop, "ScreenSaverIsSecure": "1"}) == (True, 900)
    assert w.parse_reg_query(fixture("noncompliant", "reg_desktop_policy.txt")) == {}


def test_signed_in_users_from_hku() -> None:
    assert w.parse_user_sids(fixture("compliant", "reg_hku.txt")) == ["S-1-5-21-3623811015-3361044348-30300820-1013"]
    assert w.parse_user_sids("HKEY_USERS\\S-1-12-1-1234-5678-91011-1213\n") == ["S-1-12-1-1234-5678-91011-1213"]


def test_uninstall_display_names() -> None:
    names = w.parse_display_names(fixture("noncompliant", "reg_uninstall.txt"))
    assert "qBittorrent" in names and "NordVPN" in names and "7-Zip 23.01 (x64)" in names
    assert w.program_matches(["\u03bcTorrent", "Microsoft Edge"], ("utorrent",)) == ["\u03bcTorrent"]


def test_net_share_and_localgroup() -> None:
    shares = w.parse_net_share(fixture("noncompliant", "net_share.txt"))
    assert [s["name"] for s in shares] == ["C$", "IPC$", "ADMIN$", "Minecraft Worlds", "Users"]
    assert shares[1]["path"] == ""
    assert [s["name"] for s in w.user_shares([*shares, {"name": "hidden$", "path": "D:\\x"},
                                              {"name": "print$", "path": ""}])] == [
        "Minecraft Worlds", "Users", "hidden$"]
    assert w.parse_localgroup(fixture("noncompliant", "net_localgroup_administrators.txt")) == [
        "Administrator", "SCHOOL\\Domain Admins", "sam"]


def test_hosted_network_status() -> None:
    started = fixture("compliant", "netsh_hostednetwork.txt").replace("Not available", "Started")
    assert w.parse_hosted_network(started) == "Started"
    assert w.parse_hosted_network("The Wireless AutoConfig Service (wlansvc) is not running.\n") is None


def test_removable_volumes_json() -> None:
    vols = w.parse_removable_volumes(fixture("noncompliant", "removable_volumes.json"))
    assert [v["drive"] for v in vols] == ["E:", "F:"]
    assert w.parse_removable_volumes("") == []


def test_windows_service_listeners() -> None:
    assert w.is_windows_service(Listener("0.0.0.0", 135, "tcp", 964, "svchost.exe"))
    assert w.is_windows_service(Listener("0.0.0.0", 49670, "tcp", 812, "services.exe"))
    assert not w.is_windows_service(Listener("0.0.0.0", 3389, "tcp", 1310, "svchost.exe"))  # Remote Desktop
    assert not w.is_windows_service(Listener("0.0.0.0", 49670, "tcp", 77, "python.exe"))
