"""deploy/systemd: the units pass `systemd-analyze verify`, every esafety command they start exists
(with the options given), and each keeps the sandbox the deployment notes promise."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from esafety.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
INSTALLED = "/opt/esafety/.venv/bin/esafety"  # where deploy/README.md installs esafety
ESAFETY = str(Path(sys.executable).with_name("esafety"))
SERVICES = ("esafety-proxy", "esafety-dashboard", "esafety-agent", "esafety-sensor", "esafety-prune",
            "esafety-backup", "esafety-radius", "esafety-directory-sync", "esafety-roster-import")
TIMERS = ("esafety-prune", "esafety-backup", "esafety-directory-sync", "esafety-roster-import")
UNPRIVILEGED = ("esafety-proxy", "esafety-dashboard", "esafety-prune", "esafety-backup", "esafety-radius",
                "esafety-directory-sync", "esafety-roster-import")  # run as esafety with no capability at all
# Values for the ${VAR}s the units take from /etc/esafety/esafety.env.
ENV_EXAMPLE = {"ESAFETY_SENSOR_IFACE": "eth1", "ESAFETY_ROSTER_FILE": "/srv/mis/pupils.csv"}

Unit = dict[str, dict[str, list[str]]]


def parse(path: Path) -> Unit:
    """section -> key -> values (systemd allows a key more than once: ReadWritePaths, ExecStartPre)."""
    out: Unit = defaultdict(lambda: defaultdict(list))
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep and section, f"{path.name}: not a key=value line in a section: {raw!r}"
        out[section][key.strip()].append(value.strip())
    return out


def unit(name: str) -> Unit:
    return parse(UNITS / name)


def one(u: Unit, section: str, key: str) -> str:
    values = u[section][key]
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def test_every_unit_is_there() -> None:
    names = {p.name for p in UNITS.iterdir()}
    assert {f"{s}.service" for s in SERVICES} | {f"{t}.timer" for t in TIMERS} <= names


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze (Debian package systemd) absent")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart programs exist: point them at this checkout's venv.
    for p in UNITS.iterdir():
        (tmp_path / p.name).write_text(p.read_text().replace(INSTALLED, ESAFETY))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
                       capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode == 0 and problems == [], "\n".join(problems)


def _commands() -> list[tuple[str, list[str]]]:
    found = []
    for name in SERVICES:
        u = unit(f"{name}.service")
        for key in ("ExecStartPre", "ExecStart", "ExecStartPost"):
            for cmd in u["Service"].get(key, []):
                argv = shlex.split(cmd.lstrip("-+!@:"))
                argv = [ENV_EXAMPLE.get(a[2:-1], a) if a.startswith("${") else a for a in argv]
                found.append((f"{name}.service {key}", argv))
    return found


def test_every_command_started_exists_with_its_options() -> None:
    top = subprocess.run([ESAFETY, "--help"], capture_output=True, text=True, timeout=60)
    assert top.returncode == 0, top.stderr
    parser = build_parser()
    commands = _commands()
    assert len(commands) >= len(SERVICES)
    for where, argv in commands:
        assert argv[0] == INSTALLED, f"{where}: runs {argv[0]}"
        assert argv[1] in top.stdout, f"{where}: `esafety {argv[1]}` is not in `esafety --help`"
        try:
            args = parser.parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"{where}: `esafety {shlex.join(argv[1:])}` does not parse")
        assert callable(args.func), where


def test_sandbox() -> None:
    for name in SERVICES:
        s = unit(f"{name}.service")["Service"]
        for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes")):
            assert s[key] == [value], f"{name}: {key}"
        assert s["ProtectHome"] and s["ProtectHome"][0] in ("yes", "read-only"), name
        assert "CapabilityBoundingSet" in s, f"{name}: no capability bounding set"
        assert any(e.lstrip("-") == "/etc/esafety/esafety.env" for e in s["EnvironmentFile"]), name
    for name in (*UNPRIVILEGED, "esafety-sensor"):
        s = unit(f"{name}.service")["Service"]
        assert s["User"] == ["esafety"], name
        assert "/var/lib/esafety" in s["ReadWritePaths"], name
    for name in UNPRIVILEGED:
        assert unit(f"{name}.service")["Service"]["CapabilityBoundingSet"] == [""], f"{name}: needs no capability"
    sensor = unit("esafety-sensor.service")["Service"]
    for key in ("CapabilityBoundingSet", "AmbientCapabilities"):
        assert set(one({"S": sensor}, "S", key).split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert "AF_PACKET" in one({"S": sensor}, "S", "RestrictAddressFamilies").split()
    agent = unit("esafety-agent.service")["Service"]
    assert agent["User"] == ["root"] and agent["ProtectSystem"] == ["strict"]
    assert "/var/lib/esafety-agent" in agent["ReadWritePaths"]
    assert "--state" in one({"S": agent}, "S", "ExecStart")
    assert not {"CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_NET_ADMIN"} & set(one({"S": agent}, "S",
                                                                               "CapabilityBoundingSet").split())


def test_timers_start_their_services() -> None:
    for name in TIMERS:
        t = unit(f"{name}.timer")
        assert t["Timer"]["OnCalendar"] and t["Timer"]["Persistent"] == ["yes"]
        target = t["Timer"].get("Unit", [f"{name}.service"])[0]
        assert (UNITS / target).exists()
        assert unit(target)["Service"]["Type"] == ["oneshot"]
        assert t["Install"]["WantedBy"] == ["timers.target"]


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft (Debian package nftables) absent")
def test_transparent_mode_nftables_ruleset_parses(tmp_path: Path) -> None:
    """The ruleset in deploy/transparent.md is what people paste: `nft -c` checks it, loading nothing."""
    text = (ROOT / "deploy" / "transparent.md").read_text()
    ruleset = text.split("```nft\n", 1)[1].split("```", 1)[0]
    (tmp_path / "esafety.nft").write_text(ruleset)
    r = subprocess.run(["nft", "-c", "-f", str(tmp_path / "esafety.nft")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "redirect to :8081" in ruleset and "udp dport 443 reject" in ruleset
