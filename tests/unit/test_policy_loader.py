"""The policy loader: the shipped AUP loads; every kind of mistake is reported with file:line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from esafety.policy.loader import PolicyInvalid, check_policy, load_policy
from esafety.policy.schema import Action

ROOT = Path(__file__).resolve().parents[2]
AUP = ROOT / "policies" / "aup.yaml"


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    """A copy of the shipped policy beside its lists, to break one line at a time."""
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    return tmp_path / "policies" / "aup.yaml"


def _replace(path: Path, old: str, new: str) -> int:
    """Replace the first occurrence of `old`; returns its 1-based line number."""
    text = path.read_text()
    at = text.index(old)
    path.write_text(text[:at] + new + text[at + len(old):])
    return text[:at].count("\n") + 1


def test_shipped_policy_loads_with_every_rule_quoting_a_clause():
    policy = load_policy(AUP)
    assert policy.default_group == "unknown"
    assert policy.rules and all(rule.clause in policy.clauses for rule in policy.rules)
    assert all(cat.clause in policy.clauses for cat in policy.categories.values())
    # The Safer Internet Centre's "appropriate filtering" categories are all present.
    for cat in ("csam", "terrorism", "discrimination", "drugs", "extremism", "gambling", "malware", "phishing",
                "pornography", "piracy", "self_harm", "violence", "weapons", "vpn", "web_proxies", "doh", "tor",
                "p2p", "games", "social_networking", "webmail_chat", "dating"):
        assert cat in policy.categories, cat


def test_year_groups_inherit_through_key_stages():
    policy = load_policy(AUP)
    assert policy.groups["year7"].lineage == {"year7", "ks3", "pupils"}
    assert policy.groups["year12"].lineage == {"year12", "sixth_form", "pupils"}
    assert policy.groups["staff"].on_error is Action.ALLOW
    assert policy.groups["unknown"].on_error is Action.BLOCK


@pytest.mark.parametrize(("old", "new", "message"), [
    ("categories: [gambling, phishing]", "categories: [gambling, casinos]", "unknown category 'casinos'"),
    ("'/nph-proxy\\.cgi/'", "'/nph-(proxy\\.cgi/'", "bad regex"),
    ('times: ["08:45-12:30"', 'times: ["12:30-08:45"', "bad time range '12:30-08:45'"),
    ('times: ["08:45-12:30"', 'times: ["8.45 to 12.30"', "bad time range '8.45 to 12.30'"),
    ("groups: [pupils, unknown, guests]\n    categories: [pornography",
     "groups: [pupils, unknwon, guests]\n    categories: [pornography", "unknown group 'unknwon'"),
    ("lists: [lists/vpn.txt]", "lists: [lists/vpns.txt]", "unknown list file 'lists/vpns.txt'"),
    ("action: block, clause: A6}", "action: block, clause: A99}", "unknown AUP clause 'A99'"),
    ("action: block, clause: A6}", "action: deny, clause: A6}", "action must be allow, block, flag or warn"),
    ("when: lessons, action: block", "when: lesons, action: block", "unknown schedule 'lesons'"),
    ("exceptions:\n  pupils:", "exception:\n  pupils:", "unknown section 'exception'"),
    ("digest_hour: 16", "digest_hour: 4pm", "'digest_hour' must be int"),
    ("ack_minutes: {5: 15,", "ack_minutes: {5: soon,", "ack_minutes maps a level 1-5"),
    ("{categories: [credential_sharing], queue: it_services}", "{categories: [credential_sharing], queue: helpdesk}",
     "queue must be one of"),
])
def test_each_mistake_is_reported_with_file_and_line(policy_copy: Path, old: str, new: str, message: str):
    line = _replace(policy_copy, old, new)
    errors = check_policy(policy_copy)
    assert errors, "the broken policy was accepted"
    matching = [e for e in errors if message in e.message]
    assert matching, [str(e) for e in errors]
    assert matching[0].file == str(policy_copy)
    assert matching[0].line == line
    assert str(matching[0]).startswith(f"{policy_copy}:{line}: ")


def test_all_errors_are_reported_in_one_run(policy_copy: Path):
    _replace(policy_copy, "lists: [lists/vpn.txt]", "lists: [lists/nope.txt]")
    _replace(policy_copy, "when: lessons, action: block", "when: never, action: block")
    with pytest.raises(PolicyInvalid) as exc:
        load_policy(policy_copy)
    messages = " | ".join(e.message for e in exc.value.errors)
    assert "lists/nope.txt" in messages and "unknown schedule 'never'" in messages


def test_yaml_syntax_error_names_the_line(policy_copy: Path):
    line = _replace(policy_copy, "school: Example Academy", "school: [Example Academy")
    errors = check_policy(policy_copy)
    assert len(errors) == 1 and "YAML syntax" in errors[0].message
    assert errors[0].line >= line


def test_missing_file_is_an_error_not_a_crash(tmp_path: Path):
    errors = check_policy(tmp_path / "absent.yaml")
    assert errors and "cannot read policy" in errors[0].message


def test_builtin_categories_are_required(policy_copy: Path):
    _replace(policy_copy, "  ip_literal: {", "  ip_literals: {")
    errors = check_policy(policy_copy)
    assert any("category 'ip_literal' must be defined" in e.message for e in errors)
