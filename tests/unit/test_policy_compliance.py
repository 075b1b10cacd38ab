"""The policy's `compliance:` section: shipped defaults, durations with units, mistakes with file:line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from esafety.policy.compliance_section import parse_duration
from esafety.policy.loader import check_policy, load_policy
from esafety.policy.schema import Compliance

ROOT = Path(__file__).resolve().parents[2]
AUP = ROOT / "policies" / "aup.yaml"


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    return tmp_path / "policies" / "aup.yaml"


def _replace(path: Path, old: str, new: str) -> int:
    text = path.read_text()
    at = text.index(old)
    path.write_text(text[:at] + new + text[at + len(old):])
    return text[:at].count("\n") + 1


def test_the_shipped_policy_sets_the_agent_timings_and_lists() -> None:
    c = load_policy(AUP).compliance
    assert (c.heartbeat_seconds, c.check_seconds, c.grace_seconds) == (60, 900, 86400)
    assert (c.stale_buffer_seconds, c.stale_limit_seconds) == (120, 3 * 86400)
    assert "transmission-daemon" in c.p2p_names and "openvpn" in c.vpn_names and "sshd" in c.listening_allow
    assert c.monitor_sha256 is None


def test_the_agent_incident_categories_route_to_it_and_the_dsl() -> None:
    from esafety.incidents.model import IncidentReport
    from esafety.incidents.routing import route

    pol = load_policy(AUP)
    queues = {c: route(IncidentReport("agent", c, 2, "x"), pol).queue
              for c in ("device_noncompliance", "agent_tamper", "monitoring_tamper")}
    assert queues == {"device_noncompliance": "it_services", "agent_tamper": "it_services", "monitoring_tamper": "dsl"}
    assert pol.categories["monitoring_tamper"].safeguarding


def test_durations() -> None:
    assert [parse_duration(v) for v in (90, "90s", "15m", "24h", "3d", "1.5h", " 2 m ")] == \
        [90, 90, 900, 86400, 259200, 5400, 120]
    assert [parse_duration(v) for v in ("soon", "10 minutes", True, None, "-5s")] == [None] * 5


def test_a_policy_without_the_section_gets_the_defaults(policy_copy: Path) -> None:
    text = policy_copy.read_text()
    start, end = text.index("compliance:\n"), text.index("retention:\n")
    policy_copy.write_text(text[:start] + text[end:])
    assert load_policy(policy_copy).compliance == Compliance()


@pytest.mark.parametrize(("old", "new", "message"), [
    ("heartbeat: 60s", "heartbeat: often", "'heartbeat' must be a duration like 90s"),
    ("heartbeat: 60s", "heartbeat: 0s", "'heartbeat' must be at least 1 s"),
    ("stale_limit: 3d", "stale_limit: 1m", "stale_limit must be longer than heartbeat + stale_buffer"),
    ("monitor_sha256: null", "monitor_sha256: abc123", "monitor_sha256 is 64 hex digits"),
    ("grace: 24h", "grace_period: 24h", "unknown compliance setting 'grace_period'"),
    ("listening_allow: [sshd,", "listening_allow: [{name: sshd},", "'listening_allow' entries must be strings"),
])
def test_mistakes_are_reported_with_file_and_line(policy_copy: Path, old: str, new: str, message: str) -> None:
    line = _replace(policy_copy, old, new)
    errors = check_policy(policy_copy)
    matching = [e for e in errors if message in e.message]
    assert matching, [str(e) for e in errors]
    assert (matching[0].file, matching[0].line) == (str(policy_copy), line)
