"""Sign-in by LDAP bind against a real slapd (DirectoryBind): the person's own password binds,
anything else does not, and a directory that cannot be asked says so rather than answering no."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from esafety.identity.directory import DirectoryUnavailable, read_people
from esafety.identity.directory_bind import DirectoryBind
from esafety.policy.loader import load_policy
from esafety.policy.schema import DirectorySettings
from tests.conftest import free_port
from tests.support.slapd import Slapd, directory_policy, make_certificates, start_slapd


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = start_slapd(tmp_path_factory.mktemp("slapd"), tls=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, slapd: Slapd) -> DirectorySettings:
    directory = load_policy(directory_policy(tmp_path_factory.mktemp("policy"), slapd)).identity.directory
    assert directory is not None
    return directory


@pytest.fixture
def bind(settings: DirectorySettings) -> Iterator[DirectoryBind]:
    b = DirectoryBind(settings)
    yield b
    b.close()


def binds_logged(slapd: Slapd, dn: str) -> int:
    return len(re.findall(rf'BIND dn="{re.escape(dn)}" method=128\n', slapd.log()))


def test_the_persons_own_password_binds(slapd: Slapd, bind: DirectoryBind) -> None:
    amelia = slapd.person("amelia.smith")
    assert bind.verify("amelia.smith", amelia.password, amelia.dn) is True
    assert bind.verify("amelia.smith", amelia.password, None) is True, "the DN found by the service account"
    staff = slapd.person("shead")
    assert bind.verify("shead", staff.password, staff.dn) is True


def test_anything_else_does_not(slapd: Slapd, bind: DirectoryBind) -> None:
    amelia, oliver = slapd.person("amelia.smith"), slapd.person("oliver.jones")
    assert bind.verify("amelia.smith", "Password1", amelia.dn) is False
    assert bind.verify("amelia.smith", oliver.password, amelia.dn) is False, "someone else's password"
    assert bind.verify("nobody.here", "whatever", None) is False, "no such person"
    assert bind.verify("amelia.smith", amelia.password, "uid=amelia.smith,ou=Staff,dc=school,dc=test") is False
    # The username goes into a search filter: escaped, so a wildcard or a filter fragment matches nobody.
    assert bind.verify("*", amelia.password, None) is False
    assert bind.verify("amelia.smith)(uid=*", amelia.password, None) is False
    assert bind.verify("amelia.sm*", amelia.password, None) is False


def test_an_empty_password_is_refused_without_asking_the_server(slapd: Slapd, bind: DirectoryBind,
                                                               settings: DirectorySettings) -> None:
    amelia = slapd.person("amelia.smith")
    before = binds_logged(slapd, amelia.dn)
    # An empty password would be an unauthenticated bind, which many servers (AD) answer "success".
    assert bind.verify("amelia.smith", "", amelia.dn) is False
    assert binds_logged(slapd, amelia.dn) == before
    nowhere = DirectoryBind(replace(settings, url=f"ldap://127.0.0.1:{free_port()}"))
    assert nowhere.verify("amelia.smith", "", amelia.dn) is False, "no round trip: nothing there to ask"


def test_a_refused_password_is_not_sent_again_at_once(slapd: Slapd, bind: DirectoryBind) -> None:
    # A browser repeats a wrong password on every request; each bind counts towards an AD lockout.
    oliver = slapd.person("oliver.jones")
    before = binds_logged(slapd, oliver.dn)
    assert [bind.verify("oliver.jones", "guess", oliver.dn) for _ in range(5)] == [False] * 5
    assert binds_logged(slapd, oliver.dn) == before + 1
    assert bind.verify("oliver.jones", oliver.password, oliver.dn) is True, "the right one still works"


def test_connections_are_reused(slapd: Slapd, bind: DirectoryBind) -> None:
    amelia = slapd.person("amelia.smith")
    slapd.mark_log()
    n = 200
    t0 = time.perf_counter()
    for _ in range(n):
        assert bind.verify("amelia.smith", amelia.password, amelia.dn)
    rate = n / (time.perf_counter() - t0)
    print(f"\n{rate:.0f} binds/s (pooled connections, loopback slapd)")
    assert slapd.log_since_mark().count(" ACCEPT from IP=") <= 1, "one connection kept open for all the binds"


def test_a_directory_that_is_down_raises_unavailable(tmp_path: Path, bind: DirectoryBind,
                                                      settings: DirectorySettings) -> None:
    own = start_slapd(tmp_path / "slapd")
    try:
        local = DirectoryBind(replace(settings, url=own.url))
        amelia = own.person("amelia.smith")
        assert local.verify("amelia.smith", amelia.password, amelia.dn) is True
        own.stop()
        with pytest.raises(DirectoryUnavailable, match=f"cannot reach the directory at {own.url}"):
            local.verify("amelia.smith", amelia.password, amelia.dn)
        with pytest.raises(DirectoryUnavailable, match="cannot reach"):
            local.verify("amelia.smith", amelia.password, None)
        own.start()
        assert local.verify("amelia.smith", amelia.password, amelia.dn) is True, "back without a restart"
        own.stop()  # a restart closes the connection kept in the pool: the next check opens a new one
        own.start()
        assert local.verify("amelia.smith", amelia.password, amelia.dn) is True
        assert local.verify("amelia.smith", amelia.password, None) is True
    finally:
        own.stop()


def test_start_tls_and_ldaps_with_the_schools_ca(slapd: Slapd, settings: DirectorySettings) -> None:
    amelia = slapd.person("amelia.smith")
    for tls in (replace(settings, start_tls=True, ca_file=str(slapd.ca)),
                replace(settings, url=slapd.ldaps_url, ca_file=str(slapd.ca))):
        assert len(read_people(tls).people) == 34
        b = DirectoryBind(tls)
        assert b.verify("amelia.smith", amelia.password, None) is True
        assert b.verify("amelia.smith", "wrong", None) is False
        b.close()
    assert "STARTTLS" in slapd.log()


def test_a_certificate_the_ca_file_does_not_vouch_for_is_refused(tmp_path: Path, slapd: Slapd,
                                                                 settings: DirectorySettings) -> None:
    amelia = slapd.person("amelia.smith")
    other_ca = str(make_certificates(tmp_path))  # another CA, which did not sign the directory's certificate
    for bad in (replace(settings, start_tls=True, ca_file=other_ca),
                replace(settings, url=slapd.ldaps_url, ca_file=other_ca),
                replace(settings, url=slapd.ldaps_url.replace("127.0.0.1", "localhost"), ca_file=str(slapd.ca))):
        with pytest.raises(DirectoryUnavailable, match=f"TLS with the directory at {bad.url} failed: "):
            read_people(bad)
        with pytest.raises(DirectoryUnavailable, match="TLS"):
            DirectoryBind(bad).verify("amelia.smith", amelia.password, amelia.dn)
