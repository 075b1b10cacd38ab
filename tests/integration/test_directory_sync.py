"""`esafety directory sync` against a real OpenLDAP slapd: people and their policy groups come from
the directory's OUs and groups, read page by page; movers change group, leavers are retired with
their bindings; a sync that would retire too many, a dry run, a directory that is down and a
refused service bind change nothing (exit 1, the reason on stderr and in identity_syncs)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import ldap3
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from esafety.identity.directory import read_people
from esafety.identity.syncmetrics import collect_sync_metrics
from esafety.identity.tables import IdentitySync
from esafety.policy.loader import load_policy
from esafety.store.db import sessions
from esafety.store.models import IpBinding, User
from tests.support.slapd import (
    PUPILS,
    SERVICE_DN,
    SERVICE_LIMIT,
    SERVICE_PW,
    Slapd,
    directory_policy,
    running_slapd,
    sync_directory,
)

ESAFETY = str(Path(sys.executable).with_name("esafety"))
PEOPLE = 34  # 30 pupils and 4 staff (tests/support/slapd.py)


@pytest.fixture
def slapd(tmp_path: Path) -> Iterator[Slapd]:
    # One directory per test: tests change it, and a fresh one starts in ~0.1 s.
    yield from running_slapd(tmp_path / "slapd")


@pytest.fixture
def policy(tmp_path: Path, slapd: Slapd) -> Path:
    return directory_policy(tmp_path, slapd)


def sync(policy: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ESAFETY_POLICY": str(policy), "ESAFETY_DATABASE_URL": database_url,
           "ESAFETY_HOME": str(policy.parent / "home")}
    return subprocess.run([ESAFETY, "directory", *args], capture_output=True, text=True, env=env, timeout=120)


def people(database_url: str) -> dict[str, User]:
    with sessions(database_url)() as s:
        return {u.username: u for u in s.scalars(select(User))}


def syncs(database_url: str) -> list[IdentitySync]:
    with sessions(database_url)() as s:
        return list(s.scalars(select(IdentitySync).order_by(IdentitySync.id)))


def synced(policy: Path, database_url: str) -> dict[str, User]:
    sync_directory(policy, database_url)  # a first sync, in this process
    return people(database_url)


def test_a_sync_creates_the_people_with_their_groups(policy: Path, slapd: Slapd, database_url: str) -> None:
    slapd.add_member("Year 7", slapd.person("tteacher").dn)  # a form tutor in the Year 7 group: Staff comes first
    r = sync(policy, database_url, "sync")
    assert r.returncode == 0, r.stderr
    assert "created 34, updated 0, retired 0, unchanged 0" in r.stdout
    users = people(database_url)
    assert len(users) == PEOPLE and all(u.source == "directory" and u.active for u in users.values())
    assert Counter(u.policy_group for u in users.values()) == {"year7": 10, "year8": 10, "year9": 10, "staff": 4}
    amelia = users["amelia.smith"]
    assert (amelia.display_name, amelia.email, amelia.upn, amelia.policy_group) == (
        "Amelia Smith", "amelia.smith@school.test", slapd.person("amelia.smith").upn, "year7")
    assert amelia.upn and len(amelia.upn) == 13
    assert amelia.directory_dn == "uid=amelia.smith,ou=Pupils,dc=school,dc=test"
    assert amelia.password_hash is None, "directory people sign in by binding, with no local password"
    assert users["tteacher"].policy_group == "staff"
    assert users["freya.evans"].policy_group == "year8", "Year 8's DN was written with spaces in the policy"
    row = syncs(database_url)[-1]
    assert (row.source, row.ok, row.dry_run, row.created, row.origin) == ("directory", True, False, 34, slapd.url)

    again = sync(policy, database_url, "sync")
    assert again.returncode == 0 and "created 0, updated 0, retired 0, unchanged 34" in again.stdout


def test_reading_pages_through_a_directory_that_caps_each_search(policy: Path, slapd: Slapd) -> None:
    # The service account gets at most 10 entries from a search that does not page (as AD caps at 1000).
    with ldap3.Connection(ldap3.Server(slapd.url, get_info=ldap3.NONE), SERVICE_DN, SERVICE_PW, auto_bind=True) as c:
        c.search(PUPILS, "(objectClass=inetOrgPerson)", attributes=["uid"])
        assert (c.result["description"], len(c.entries)) == ("sizeLimitExceeded", SERVICE_LIMIT)
    settings = load_policy(policy).identity.directory
    assert settings is not None and settings.page_size == 5
    slapd.mark_log()
    read = read_people(settings)
    assert len(read.people) == PEOPLE
    # slapd's own log: one base search per mapped group, then the pupils 5 at a time, then the staff.
    assert slapd.pages_sent() == [1, 1, 1, 1, 5, 5, 5, 5, 5, 5, 4]
    assert read.pages == 7


def test_an_attribute_that_holds_no_dfe_upn_is_not_stored_as_one(tmp_path: Path, slapd: Slapd) -> None:
    policy = directory_policy(tmp_path, slapd)
    policy.write_text(policy.read_text().replace("upn_attribute: employeeNumber", "upn_attribute: mail"))
    settings = load_policy(policy).identity.directory
    assert settings is not None
    read = read_people(settings)
    assert len(read.people) == PEOPLE and all(p.upn is None for p in read.people)
    assert "uid=amelia.smith,ou=Pupils,dc=school,dc=test: UPN 'AMELIA.SMITH@SCHOOL.TEST' is not 13 characters; " \
           "synced without a UPN" in read.invalid


def test_check_counts_people_per_group_and_changes_nothing(policy: Path, slapd: Slapd, database_url: str) -> None:
    r = sync(policy, database_url, "check")
    assert r.returncode == 0, r.stderr
    assert "34 people in 2 base(s)" in r.stdout
    assert "year7               10 people  from cn=Year 7,ou=Groups,dc=school,dc=test" in r.stdout
    assert "staff                4 people  from cn=Staff,ou=Groups,dc=school,dc=test" in r.stdout
    assert people(database_url) == {} and syncs(database_url) == []


def test_a_pupil_moved_to_another_year_group_changes_group(policy: Path, slapd: Slapd, database_url: str) -> None:
    synced(policy, database_url)
    amelia = slapd.person("amelia.smith")
    slapd.remove_member("Year 7", amelia.dn)
    slapd.add_member("Year 8", amelia.dn)
    slapd.modify(amelia.dn, displayName="Amelia Smith-Jones")
    r = sync(policy, database_url, "sync")
    assert r.returncode == 0, r.stderr
    assert "created 0, updated 1, retired 0, unchanged 33" in r.stdout
    after = people(database_url)["amelia.smith"]
    assert (after.policy_group, after.display_name, after.active) == ("year8", "Amelia Smith-Jones", True)


def test_a_leaver_is_retired_and_their_binding_goes(policy: Path, slapd: Slapd, database_url: str) -> None:
    synced(policy, database_url)
    with sessions(database_url)() as s:
        s.add_all([IpBinding(ip="10.0.7.1", username="oliver.jones", source="agent"),
                   IpBinding(ip="10.0.7.2", username="isla.taylor", source="radius", session_id="r1"),
                   IpBinding(ip="10.0.7.3", username="george.brown", source="portal")])
        s.commit()
    slapd.delete(slapd.person("oliver.jones").dn)  # the entry deleted
    slapd.move(slapd.person("isla.taylor").dn, "Service")  # moved out of the synced OUs
    r = sync(policy, database_url, "sync")
    assert r.returncode == 0, r.stderr
    assert "created 0, updated 0, retired 2, unchanged 32" in r.stdout
    users = people(database_url)
    for gone in ("oliver.jones", "isla.taylor"):
        assert not users[gone].active and users[gone].retired_at is not None, gone
    assert users["george.brown"].active
    with sessions(database_url)() as s:
        assert [b.username for b in s.scalars(select(IpBinding))] == ["george.brown"]


def test_a_sync_that_would_retire_too_many_is_refused_unless_forced(policy: Path, slapd: Slapd,
                                                                      database_url: str) -> None:
    synced(policy, database_url)
    for p in slapd.people[:8]:  # 8 of 34 (24%) is over max_disable_share (20%)
        slapd.delete(p.dn)
    r = sync(policy, database_url, "sync")
    assert r.returncode == 1
    assert "would retire or unlink 8 of 34 people" in r.stderr and "--force" in r.stderr
    assert "nothing was changed" in r.stderr.lower()
    assert all(u.active for u in people(database_url).values())
    row = syncs(database_url)[-1]
    assert not row.ok and "would retire" in row.error

    forced = sync(policy, database_url, "sync", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "retired 8" in forced.stdout
    assert sum(u.active for u in people(database_url).values()) == 26


def test_a_dry_run_lists_the_changes_and_writes_nothing(policy: Path, slapd: Slapd, database_url: str) -> None:
    synced(policy, database_url)
    amelia = slapd.person("amelia.smith")
    slapd.remove_member("Year 7", amelia.dn)
    slapd.add_member("Year 9", amelia.dn)
    slapd.delete(slapd.person("oliver.jones").dn)
    r = sync(policy, database_url, "sync", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would update amelia.smith: policy_group 'year7' -> 'year9'" in r.stdout
    assert "would retire: oliver.jones" in r.stdout
    assert "dry run, nothing written: would have created 0, updated 1, retired 1, unchanged 32" in r.stdout
    users = people(database_url)
    assert users["amelia.smith"].policy_group == "year7" and users["oliver.jones"].active
    row = syncs(database_url)[-1]
    assert (row.ok, row.dry_run, row.updated, row.retired) == (True, True, 1, 1)


def test_a_directory_that_is_down_changes_nothing(policy: Path, slapd: Slapd, database_url: str) -> None:
    before = synced(policy, database_url)
    before_at = datetime.now(UTC)
    slapd.stop()
    r = sync(policy, database_url, "sync")
    assert r.returncode == 1
    assert f"cannot reach the directory at {slapd.url}" in r.stderr and "nothing was changed" in r.stderr
    assert "Traceback" not in r.stderr
    after = people(database_url)
    assert {n: (u.active, u.policy_group) for n, u in after.items()} == {
        n: (u.active, u.policy_group) for n, u in before.items()}
    row = syncs(database_url)[-1]
    assert not row.ok and "cannot reach" in row.error and row.origin == slapd.url
    with sessions(database_url)() as s:  # what the dashboard exports to Prometheus from these rows
        collect_sync_metrics(s)
    assert REGISTRY.get_sample_value("esafety_identity_sync_last_ok", {"source": "directory"}) == 0
    assert REGISTRY.get_sample_value("esafety_identity_sync_last_success_timestamp_seconds",
                                     {"source": "directory"}) == pytest.approx(before_at.timestamp(), abs=5)


def test_a_refused_service_bind_changes_nothing(tmp_path: Path, policy: Path, slapd: Slapd,
                                                database_url: str) -> None:
    synced(policy, database_url)
    (tmp_path / "bind.secret").write_text("last year's password\n")
    r = sync(policy, database_url, "sync")
    assert r.returncode == 1
    assert f"bind refused for the service account '{SERVICE_DN}' at {slapd.url}: invalidCredentials" in r.stderr
    assert "bind.secret" in r.stderr, "the message names the file to fix"
    assert all(u.active for u in people(database_url).values())
    row = syncs(database_url)[-1]
    assert not row.ok and "bind refused" in row.error

    check = sync(policy, database_url, "check")
    assert check.returncode == 1 and "bind refused" in check.stderr


def test_a_missing_base_or_group_is_refused_by_name(tmp_path: Path, slapd: Slapd, sqlite_url: str) -> None:
    bad_base = directory_policy(tmp_path / "a", slapd, directory_extra="")
    text = bad_base.read_text().replace("ou=Staff,dc=school,dc=test", "ou=Teachers,dc=school,dc=test")
    bad_base.write_text(text)
    r = sync(bad_base, sqlite_url, "sync")
    assert r.returncode == 1
    assert "user base 'ou=Teachers,dc=school,dc=test' does not exist" in r.stderr
    bad_group = directory_policy(tmp_path / "b", slapd)
    bad_group.write_text(bad_group.read_text().replace("cn=Year 9,", "cn=Year Nine,"))
    r = sync(bad_group, sqlite_url, "sync")
    assert r.returncode == 1
    assert "the mapped group 'cn=Year Nine,ou=Groups,dc=school,dc=test' (-> year9) does not exist" in r.stderr
    assert people(sqlite_url) == {}


def test_a_policy_without_a_directory_is_a_usage_error(tmp_path: Path, sqlite_url: str) -> None:
    from tests.support.policy import policy_with

    r = sync(policy_with(tmp_path, ""), sqlite_url, "sync")
    assert r.returncode == 2 and "has no identity.directory section" in r.stderr


def test_active_directory_accounts(tmp_path: Path, slapd: Slapd, sqlite_url: str) -> None:
    """AD-shaped entries: sAMAccountName (lower-cased), the groups in the user's memberOf, a
    disabled account (userAccountControl bit 2) retired, a computer account left out."""
    slapd.add_ou("Domain")
    year7 = slapd.group_dn("Year 7")
    joe = slapd.add_ad_user("Domain", "JBloggs", "Joe Bloggs", "pw-joe", member_of=(year7,))
    slapd.add_ad_user("Domain", "KLane", "Kim Lane", "pw-kim", member_of=(year7,), uac=514)  # disabled
    slapd.add_ad_user("Domain", "ALee", "Ann Lee", "pw-ann", member_of=(slapd.group_dn("Staff"),), uac=66048)
    slapd.add_ad_user("Domain", "LAB-PC01$", "LAB-PC01", "machine", category="computer")
    policy = directory_policy(tmp_path, slapd)
    policy.write_text(policy.read_text()
                      .replace(f'user_bases: ["{PUPILS}", "ou=Staff,dc=school,dc=test"]',
                               'user_bases: ["ou=Domain,dc=school,dc=test"]')
                      .replace("username_attribute: uid", "username_attribute: sAMAccountName"))
    r = sync(policy, sqlite_url, "sync")
    assert r.returncode == 0, r.stderr
    assert "2 people read, 1 disabled" in r.stdout
    users = people(sqlite_url)
    assert sorted(users) == ["alee", "jbloggs"]
    assert users["alee"].policy_group == "staff", "66048: enabled, password never expires"
    assert (users["jbloggs"].policy_group, users["jbloggs"].directory_dn) == ("year7", joe)

    slapd.modify(joe, userAccountControl="514")  # IT disables Joe's account: he is a leaver now
    r = sync(policy, sqlite_url, "sync")  # 1 of 1: the retire guard counts from 10 people up
    assert r.returncode == 0, r.stderr
    assert not people(sqlite_url)["jbloggs"].active
