"""Sensor configuration: where it is found, what it accepts, and errors that name file and line."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from agent.sensor.config import SensorConfigInvalid, load_sensor_config
from esafety.config import PROJECT_ROOT
from esafety.policy.loader import load_policy

AUP = PROJECT_ROOT / "policies" / "aup.yaml"


def test_shipped_sensor_yaml_is_valid_against_the_shipped_policy():
    cfg = load_sensor_config(policy_path=AUP, policy=load_policy(AUP))
    assert cfg.source.endswith("policies/sensor.yaml")
    assert cfg.action("tor").category == "tor"
    assert ipaddress.ip_address("1.1.1.1").packed in cfg.doh_ips
    assert "dns.google" in cfg.doh_names


def test_defaults_without_any_file():
    cfg = load_sensor_config()
    assert cfg.source == "<defaults>"
    assert cfg.max_flows > 0 and cfg.action("openvpn").category == "vpn"


def test_errors_name_file_and_line(tmp_path: Path):
    f = tmp_path / "sensor.yaml"
    f.write_text("flows:\n  max_flows: lots\nclient_networks: [10.0.0.0/8, nonsense]\n"
                 "protocols:\n  openvpn: {level: 9}\n  telnet: {category: vpn}\n"
                 "tor:\n  relays: [1.2.3.4, not-an-ip]\nbogus: 1\n")
    with pytest.raises(SensorConfigInvalid) as exc:
        load_sensor_config(f)
    errors = exc.value.errors
    assert f"{f}:2: 'max_flows' must be a whole number from 16 to 50000000" in errors
    assert any(e.startswith(f"{f}:3:") and "nonsense" in e for e in errors)
    assert any(e.startswith(f"{f}:5:") and "'level'" in e for e in errors)
    assert any(e.startswith(f"{f}:6:") and "unknown protocol 'telnet'" in e for e in errors)
    assert any(e.startswith(f"{f}:8:") and "not-an-ip" in e for e in errors)
    assert any(e.startswith(f"{f}:9:") and "unknown key 'bogus'" in e for e in errors)


def test_yaml_syntax_error(tmp_path: Path):
    f = tmp_path / "s.yaml"
    f.write_text("flows:\n  max_flows: [\n")
    with pytest.raises(SensorConfigInvalid) as exc:
        load_sensor_config(f)
    assert exc.value.errors[0].startswith(f"{f}:")


def test_category_must_exist_in_policy(tmp_path: Path):
    f = tmp_path / "s.yaml"
    f.write_text("protocols:\n  quic:\n    category: no_such_category\n")
    with pytest.raises(SensorConfigInvalid) as exc:
        load_sensor_config(f, policy=load_policy(AUP))
    assert exc.value.errors == [f"{f}:3: 'quic' maps to category 'no_such_category', which the policy does not define"]


def test_inline_section_in_policy_and_list_files(tmp_path: Path):
    (tmp_path / "relays.txt").write_text("# from the consensus\n198.51.100.1\n198.51.100.2  # exit\n\n")
    policy = tmp_path / "aup.yaml"
    policy.write_text("school: X\nsensor:\n  tor:\n    relays_file: relays.txt\n  flows: {max_flows: 1000}\n")
    cfg = load_sensor_config(policy_path=policy)
    assert cfg.max_flows == 1000
    assert cfg.tor_relays == {ipaddress.ip_address("198.51.100.1").packed, ipaddress.ip_address("198.51.100.2").packed}


def test_policy_points_to_a_sensor_file(tmp_path: Path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "net.yaml").write_text("min_confidence: 0.9\n")
    policy = tmp_path / "aup.yaml"
    policy.write_text("school: X\nsensor: rules/net.yaml\n")
    assert load_sensor_config(policy_path=policy).min_confidence == 0.9


def test_missing_list_file_is_an_error(tmp_path: Path):
    f = tmp_path / "s.yaml"
    f.write_text("doh:\n  resolver_ips_file: nowhere.txt\n")
    with pytest.raises(SensorConfigInvalid, match="nowhere.txt"):
        load_sensor_config(f)


def test_cli_check(tmp_path: Path):
    bad = tmp_path / "s.yaml"
    bad.write_text("nat: {expected_hops: -1}\n")
    r = subprocess.run([sys.executable, "-m", "esafety.cli", "sensor", "check", str(bad)], capture_output=True,
                       text=True, cwd=PROJECT_ROOT, timeout=60)
    assert r.returncode == 1
    assert f"{bad}:1: 'expected_hops' must be a whole number from 0 to 30" in r.stderr
    r = subprocess.run([sys.executable, "-m", "esafety.cli", "sensor", "check"], capture_output=True, text=True,
                       cwd=PROJECT_ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("sensor.yaml: ok")
