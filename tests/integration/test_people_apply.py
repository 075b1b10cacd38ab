"""esafety.identity.people.apply_people on a real store (SQLite and PostgreSQL): matching, ownership
(roster > directory > local), retiring and re-admitting, the retire guard, and refusals that change nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from esafety.commands.users import create_user
from esafety.identity.people import ImportRefused, PeopleDiff, PersonRecord, apply_people
from esafety.store.db import sessions
from esafety.store.models import IpBinding, User
from esafety.webauth import WebSession

NOW = datetime(2026, 9, 7, 8, 0, tzinfo=UTC)


def pupil(n: int, **kw: object) -> PersonRecord:
    base = PersonRecord(username=f"p{n}.y8", display_name=f"Pupil {n}", email="", policy_group="year8",
                        upn=f"UPN{n:010d}", admission_no=f"{n:05d}", year_group=8, tutor_group="8A",
                        where=f"roster.csv:{n + 1}")
    return replace(base, **kw)  # type: ignore[arg-type]


def staff(name: str, **kw: object) -> PersonRecord:
    base = PersonRecord(username=name, display_name=name.title(), email=f"{name}@school.test", policy_group="staff",
                        directory_dn=f"uid={name},ou=Staff,dc=school,dc=test", where=f"uid={name},ou=Staff")
    return replace(base, **kw)  # type: ignore[arg-type]


def apply(url: str, source: str, records: list[PersonRecord], now: datetime = NOW, force: bool = False,
          share: float = 0.2) -> PeopleDiff:
    with sessions(url)() as s:
        diff = apply_people(s, source, records, now=now, max_retire_share=share, force=force)
        s.commit()
    return diff


def people(url: str) -> dict[str, User]:
    with sessions(url)() as s:
        return {u.username: u for u in s.scalars(select(User))}


def test_create_update_retire_and_readmit(database_url: str) -> None:
    roster = [pupil(n) for n in range(12)]
    progress: list[int] = []
    with sessions(database_url)() as s:
        d = apply_people(s, "roster", roster, now=NOW, max_retire_share=0.2, progress=progress.append)
        s.commit()
    assert (len(d.created), d.updated, d.retired, d.unchanged, sum(progress)) == (12, [], [], 0, 12)
    assert apply(database_url, "roster", roster).unchanged == 12
    with sessions(database_url)() as s:
        s.add(IpBinding(ip="10.1.0.1", username="p1.y8", source="agent"))
        s.add(IpBinding(ip="10.1.0.2", username="p2.y8", source="wifi"))
        s.add(WebSession(id_hash="x" * 64, username="p1.y8", csrf_token="c", expires_at=NOW + timedelta(hours=1)))
        s.commit()
    later = NOW + timedelta(days=1)
    # p1 is gone from the export, p2 is renamed (matched by UPN), p3 moves tutor group and gains an email.
    changed = [r for r in roster if r.username != "p1.y8"]
    changed[1] = replace(changed[1], username="p2.renamed")
    changed[2] = replace(changed[2], tutor_group="8B", email="p3@school.test")
    d = apply(database_url, "roster", changed, now=later)
    assert d.retired == ["p1.y8"] and d.created == []
    assert dict(d.updated) == {"p2.renamed": {"username": ("p2.y8", "p2.renamed")},
                               "p3.y8": {"tutor_group": ("8A", "8B"), "email": ("", "p3@school.test")}}
    everyone = people(database_url)
    gone = everyone["p1.y8"]
    assert (gone.active, gone.retired_at is not None) == (False, True)
    assert everyone["p3.y8"].updated_at is not None and everyone["p4.y8"].updated_at == everyone["p4.y8"].created_at
    with sessions(database_url)() as s:
        assert [(b.ip, b.username) for b in s.scalars(select(IpBinding))] == [("10.1.0.2", "p2.renamed")]
        assert s.scalars(select(WebSession)).all() == []
    # An export without email keeps the stored one; p1 is re-admitted.
    back = [*changed[:2], replace(changed[2], email=""), *changed[3:], pupil(1)]
    d = apply(database_url, "roster", back, now=later)
    ((name, changes),) = d.updated
    assert (name, sorted(changes), changes["active"], changes["retired_at"][1]) == (
        "p1.y8", ["active", "retired_at"], (False, True), None)
    assert people(database_url)["p1.y8"].active and people(database_url)["p3.y8"].email == "p3@school.test"


def test_leavers_retire_on_their_date_and_are_not_counted_by_the_guard(database_url: str) -> None:
    roster = [pupil(n) for n in range(20)]
    apply(database_url, "roster", roster)
    # Half the roster leaves on 22 July: far above max_retire_share, but on purpose, so applied.
    leaving = [replace(r, leaving_date=date(2027, 7, 22)) if n < 10 else r for n, r in enumerate(roster)]
    assert apply(database_url, "roster", leaving).retired == []  # not yet
    d = apply(database_url, "roster", leaving, now=datetime(2027, 7, 23, 6, 0, tzinfo=UTC))
    assert sorted(d.retired) == sorted(f"p{n}.y8" for n in range(10)) and d.updated == [] and d.unchanged == 10
    assert sum(u.active for u in people(database_url).values()) == 10
    # A leaver we never knew is not created.
    d = apply(database_url, "roster", [*leaving, pupil(99, leaving_date=date(2027, 1, 1))],
              now=datetime(2027, 7, 24, tzinfo=UTC))
    assert d.created == [] and "p99.y8" not in people(database_url)


def test_guard_and_refusals_change_nothing(database_url: str) -> None:
    roster = [pupil(n) for n in range(20)]
    apply(database_url, "roster", roster)
    before = {n: (u.active, u.updated_at) for n, u in people(database_url).items()}
    with pytest.raises(ImportRefused, match=r"retire or unlink 15 of 20 people \(75%.*--force"):
        apply(database_url, "roster", roster[:5])
    with pytest.raises(ImportRefused, match="nobody in it"):
        apply(database_url, "roster", [])
    with pytest.raises(ImportRefused, match=r"roster.csv:4: UPN 'UPN0000000001' is also roster.csv:2's"):
        apply(database_url, "roster", [*roster, replace(pupil(1), username="other", admission_no="x",
                                                         where="roster.csv:4")])
    with pytest.raises(ImportRefused, match=r"roster.csv:3: 'p1.y8' \(roster\) would be renamed to 'p2.y8', "
                                            r"which is already 'p2.y8' \(roster\)"):
        apply(database_url, "roster", [pupil(1, username="p2.y8", where="roster.csv:3")] + roster[3:])
    with pytest.raises(ImportRefused, match=r"roster.csv:2 and roster.csv:61 both describe 'p1.y8'"):
        # by username first, then by UPN
        apply(database_url, "roster", [pupil(60, username="p1.y8", upn=None, admission_no=None),
                                       pupil(1, username="renamed1")])
    with pytest.raises(ImportRefused, match=r"roster.csv:4: 'p3.y8' \(roster\) would get admission number '00004', "
                                            r"which is already 'p4.y8' \(roster\)'s"):
        apply(database_url, "roster", [*roster[:3], pupil(3, admission_no="00004"), *roster[5:]])
    assert {n: (u.active, u.updated_at) for n, u in people(database_url).items()} == before
    assert len(apply(database_url, "roster", roster[:5], force=True).retired) == 15


def test_ownership_roster_directory_local(database_url: str) -> None:
    create_user(database_url, "jsmith", "staff", ["admin"], email="", password="pw-pw-pw-pw")
    create_user(database_url, "kjones", "staff", ["dsl"], email="kj@school.test", password="pw-pw-pw-pw")
    # The directory links the local admins (only fills what is empty) and creates its own people.
    d = apply(database_url, "directory", [staff("jsmith"), staff("kjones", email="other@school.test"),
                                          staff("teacher1"), staff("amy.y8", policy_group="year8")])
    assert sorted(d.linked) == ["jsmith", "kjones"] and sorted(d.created) == ["amy.y8", "teacher1"]
    p = people(database_url)
    assert (p["jsmith"].source, p["jsmith"].email, p["jsmith"].roles) == ("local", "jsmith@school.test", "admin")
    assert (p["kjones"].email, p["kjones"].directory_dn) == ("kj@school.test", "uid=kjones,ou=Staff,dc=school,dc=test")
    # The roster takes over the directory's amy.y8 and the local jsmith: roles, password and DN kept.
    d = apply(database_url, "roster", [pupil(1, username="amy.y8", tutor_group="8RB"),
                                       pupil(2, username="jsmith", policy_group="year12", year_group=12)])
    assert d.created == [] and dict(d.updated)["amy.y8"]["source"] == ("directory", "roster")
    p = people(database_url)
    assert (p["jsmith"].source, p["jsmith"].roles, p["jsmith"].policy_group) == ("roster", "admin", "year12")
    assert p["jsmith"].password_hash and p["jsmith"].directory_dn == "uid=jsmith,ou=Staff,dc=school,dc=test"
    assert (p["amy.y8"].source, p["amy.y8"].directory_dn) == ("roster", "uid=amy.y8,ou=Staff,dc=school,dc=test")
    # Now the directory only links amy.y8: its different group does not override the roster's.
    d = apply(database_url, "directory", [staff("jsmith"), staff("kjones"), staff("teacher1"),
                                          staff("amy.y8", policy_group="staff")])
    assert d.updated == [] and d.linked == [] and people(database_url)["amy.y8"].policy_group == "year8"
    # Gone from the directory: its own person retires, the linked ones only lose their DN.
    d = apply(database_url, "directory", [staff("kjones"), staff("teacher1")], force=True)
    assert d.retired == [] and sorted(d.unlinked) == ["amy.y8", "jsmith"]
    p = people(database_url)
    assert p["amy.y8"].active and p["amy.y8"].directory_dn is None and p["jsmith"].directory_dn is None
    d = apply(database_url, "directory", [staff("kjones")], force=True)
    assert d.retired == ["teacher1"] and not people(database_url)["teacher1"].active
    # A retired directory person who comes back is re-activated; a hand-disabled local one is not touched.
    d = apply(database_url, "directory", [staff("kjones"), staff("teacher1")])
    assert people(database_url)["teacher1"].active and d.updated[0][0] == "teacher1"
