"""The policy's identity: section: typed settings, and every mistake reported with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from esafety.policy.loader import PolicyInvalid, load_policy
from tests.support.policy import policy_with


def _errors(tmp: Path, section: str) -> list[str]:
    with pytest.raises(PolicyInvalid) as exc:
        load_policy(policy_with(tmp, section))
    return [f"{Path(e.file).name}:{e.line}: {e.message}" for e in exc.value.errors]


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_a_full_section_reads_into_typed_settings(tmp_path: Path) -> None:
    policy = load_policy(policy_with(tmp_path, """
        identity:
          unidentified: challenge
          roster: {year_groups: {7: year7, 8: year8, 0: pupils}, max_retire_share: 0.1}
          directory:
            url: ldaps://dc1.school.internal
            bind_dn: "CN=svc,DC=school,DC=internal"
            bind_password_file: secrets/bind.secret
            user_bases: ["OU=Pupils,DC=school,DC=internal"]
            groups: [{dn: "CN=Year 7,OU=Groups,DC=school,DC=internal", group: year7}]
            page_size: 200
            timeout: 5s
          proxy_auth: {basic: directory, negotiate: true, keytab: /etc/esafety/proxy.keytab, realms: [SCHOOL.INTERNAL],
                       cache: 10m}
          portal: {session: 6h, bypass: [ConnectivityCheck.gstatic.com]}
          radius: {listen: "0.0.0.0:1813", secret_file: radius.secret, clients: [10.0.0.0/24, 192.0.2.7]}
    """))
    ident = policy.identity
    assert ident.unidentified == "challenge"
    assert ident.roster.year_groups == {7: "year7", 8: "year8", 0: "pupils"} and ident.roster.max_retire_share == 0.1
    d = ident.directory
    assert d is not None and d.url == "ldaps://dc1.school.internal" and d.page_size == 200 and d.timeout_seconds == 5
    assert d.bind_password_file == str(tmp_path / "secrets" / "bind.secret"), "relative to the policy's folder"
    assert [(g.dn, g.group) for g in d.groups] == [("CN=Year 7,OU=Groups,DC=school,DC=internal", "year7")]
    a = ident.proxy_auth
    assert (a.basic, a.negotiate, a.keytab, a.realms, a.cache_seconds) == (
        "directory", True, "/etc/esafety/proxy.keytab", ("SCHOOL.INTERNAL",), 600)
    assert ident.portal.session_seconds == 6 * 3600 and ident.portal.bypass == ("connectivitycheck.gstatic.com",)
    assert ident.radius.clients == ("10.0.0.0/24", "192.0.2.7")


def test_without_a_mapping_year_n_goes_to_the_group_year_n(tmp_path: Path) -> None:
    years = load_policy(policy_with(tmp_path, "identity: {unidentified: default}")).identity.roster.year_groups
    assert years == {y: f"year{y}" for y in range(7, 14)}


def test_each_mistake_names_its_line(tmp_path: Path) -> None:
    section = """
        identity:
          unidentified: sometimes
          roster: {year_groups: {7: year77, X: year8}}
          directory:
            url: http://dc1.school.internal
            groups: [{dn: "CN=Staff", group: teachers}]
          proxy_auth: {basic: directory, negotiate: true, cache: soon}
          radius: {listen: "1813", clients: [10.0.0.0/33]}
          portal: {sesion: 8h}
    """
    errors = _errors(tmp_path, section)
    path = tmp_path / "aup.yaml"
    expected = {
        _line_of(path, "unidentified: sometimes"): "'unidentified' must be one of default, challenge, portal",
        _line_of(path, "year77"): "unknown group 'year77'",
        _line_of(path, "url: http://"): "url must start with ldap:// or ldaps://",
        _line_of(path, "directory:"): "directory: needs user_bases:",
        _line_of(path, "group: teachers"): "unknown group 'teachers'",
        _line_of(path, "cache: soon"): "'cache' must be a duration",
        _line_of(path, "clients: [10.0.0.0/33]"): "'10.0.0.0/33' is not an address or CIDR range",
        _line_of(path, "sesion"): "unknown portal setting 'sesion'",
    }
    for line, message in expected.items():
        assert any(e.startswith(f"aup.yaml:{line}: {message}") for e in errors), (line, message, errors)
    assert any("'X' is not a year group" in e for e in errors)
    assert any("negotiate: true needs keytab:" in e for e in errors)
    assert any("listen is host:port" in e for e in errors)


def test_directory_sign_in_needs_a_directory(tmp_path: Path) -> None:
    errors = _errors(tmp_path, "identity: {proxy_auth: {basic: directory}}")
    assert any("basic: directory needs a directory: section" in e for e in errors), errors


def test_a_section_given_twice_is_an_error_not_a_silent_replacement(tmp_path: Path) -> None:
    path = policy_with(tmp_path, "identity: {unidentified: portal}")
    path.write_text(path.read_text() + "identity: {unidentified: default}\n")
    with pytest.raises(PolicyInvalid) as exc:
        load_policy(path)
    (err,) = exc.value.errors
    assert err.line == len(path.read_text().splitlines()) and "'identity' is given twice (first on line" in err.message
