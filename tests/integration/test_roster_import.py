"""`esafety roster import | status`, the real CLI on SQLite and PostgreSQL, with a generated 1,000-pupil
MIS export: what the school's IT technician sees, and what the proxy and the dashboard then know."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path

from prometheus_client import REGISTRY
from sqlalchemy import select

from dashboard.app import create_app
from dashboard.worker import collect
from esafety.commands.users import create_user
from esafety.identity import IdentityResolver
from esafety.identity.tables import IdentitySync
from esafety.store.db import sessions
from esafety.store.models import IpBinding, User
from esafety.webauth import WebSession
from tests.conftest import ROOT
from tests.support.dsl import PASSWORD, settings_for, signed_in

ESAFETY = Path(sys.executable).parent / "esafety"
FIRST = ["Amelia", "Oliver", "Zoë", "Siân", "Mohammed", "Aisha", "Seán", "Chloé", "Jack", "Priya", "Kai", "Noah",
         "Isla", "Freya", "Leo", "Amir", "Maja", "Ethan", "Olivia", "Harry", "Niamh", "Dylan", "Ffion", "Yusuf"]
LAST = ["Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas", "O'Brien", "Patel",
        "Khan", "Nowak", "Ahmed", "Roberts", "Hughes", "Wright", "Walker", "Lewis", "Kowalski", "Müller",
        "Ó Súilleabháin"]
ARBOR = ["Admission Number", "UPN", "Last Name", "First Name", "Year Group", "Registration Form", "Email Address",
         "Leaving Date", "Username", "Date of Birth", "Gender"]


def upn(serial: int) -> str:
    """A DfE UPN with a valid check letter (LA 801, establishment 2000)."""
    alphabet = "ABCDEFGHJKLMNPQRTUVWXYZ0123456789"
    body = f"8012000{serial:05d}"
    return alphabet[sum(i * alphabet.index(c) for i, c in enumerate(body, 2)) % 23] + body


@dataclass(frozen=True)
class Pupil:
    adno: str
    upn: str
    first: str
    last: str
    year: int
    form: str
    username: str
    leaving: str = ""

    def row(self) -> list[str]:
        return [self.adno, self.upn, self.last, self.first, f"Year {self.year}", self.form,
                f"{self.username}@school.example", self.leaving, self.username, "2013-05-01", "F"]


def school(n: int, start: int = 0) -> list[Pupil]:
    """n pupils over Years 7-11, eight forms a year, names with accents and apostrophes."""
    out = []
    for i in range(start, start + n):
        first, last, year = FIRST[i % len(FIRST)], LAST[(i // 3) % len(LAST)], 7 + i % 5
        plain = unicodedata.normalize("NFKD", last).encode("ascii", "ignore").decode().replace("'", "").replace(" ", "")
        intake = 26 - (year - 7)
        out.append(Pupil(f"{100000 + i}", upn(i), first, last, year, f"{year}{'ABCDEFGH'[i // 5 % 8]}",
                         f"{intake}{plain.lower()}{first[0].lower()}{i}"))
    return out


def write(path: Path, pupils: list[Pupil], extra: list[list[str]] | None = None, at: int = 0) -> Path:
    rows = [p.row() for p in pupils]
    rows[at:at] = extra or []
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows([ARBOR, *rows])
    path.write_text(buf.getvalue(), encoding="utf-8-sig")  # Excel's "CSV UTF-8" has a BOM
    return path


def esafety(url: str, home: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ESAFETY_DATABASE_URL": url, "ESAFETY_POLICY": str(ROOT / "policies" / "aup.yaml"),
           "ESAFETY_HOME": str(home)}
    return subprocess.run([str(ESAFETY), *map(str, args)], env=env, capture_output=True, text=True, timeout=120)


def snapshot(url: str) -> list[tuple[object, ...]]:
    with sessions(url)() as s:
        return [(u.username, u.policy_group, u.year_group, u.tutor_group, u.upn, u.admission_no, u.source,
                 u.active, u.retired_at is not None, u.updated_at)
                for u in s.scalars(select(User).order_by(User.username))]


def changes(out: str) -> list[str]:
    return [line for line in out.splitlines() if line[:2] in ("+ ", "~ ", "- ")]


def syncs(url: str) -> list[tuple[bool, bool, str]]:
    with sessions(url)() as s:
        return [(r.ok, r.dry_run, r.error) for r in s.scalars(select(IdentitySync).order_by(IdentitySync.id))]


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"source": "roster"})


def test_import_reimport_bad_rows_and_truncated_export(database_url: str, tmp_path: Path) -> None:
    url, home = database_url, tmp_path / "home"
    pupils = school(1000)
    first = write(tmp_path / "arbor-2026-09-07.csv", pupils)

    r = esafety(url, home, "roster", "import", first, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert f"+ {pupils[1].username} (Year 8, 8A) -> year8" in r.stdout.splitlines()
    assert len(changes(r.stdout)) == 1000
    assert "would have created 1000, updated 0, retired 0, unchanged 0" in r.stdout
    assert snapshot(url) == []

    t0 = time.perf_counter()
    r = esafety(url, home, "roster", "import", first)
    took = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("created 1000, updated 0, retired 0, unchanged 0 (")
    assert changes(r.stdout) == []  # a real import lists no one, only the totals
    print(f"\n[{url.split(':')[0]}] 1,000-pupil import via the CLI: {took:.2f}s ({r.stdout.strip()})")
    with sessions(url)() as s:
        zoe = s.scalar(select(User).where(User.username == pupils[2].username))
        assert zoe is not None
        assert (zoe.display_name, zoe.policy_group, zoe.year_group, zoe.tutor_group, zoe.upn, zoe.admission_no,
                zoe.source, zoe.password_hash, zoe.active, zoe.email) == (
            "Zoë Smith", "year9", 9, "9A", upn(2), "100002", "roster", None, True,
            f"{pupils[2].username}@school.example")
    moved, removed = pupils[10], pupils[11]
    with sessions(url)() as s:
        s.add_all([IpBinding(ip="10.20.0.10", username=moved.username, source="agent"),
                   IpBinding(ip="10.20.0.11", username=removed.username, source="wifi")])
        s.commit()
    resolver = IdentityResolver(url, "unknown")
    resolver.refresh()
    assert resolver.resolve("10.20.0.11").user == removed.username

    # The next export: one pupil changes form, one leaves the roster, one joins.
    (new,) = school(1, start=1000)
    second = [replace(p, form="7H") if p is moved else p for p in pupils if p is not removed] + [new]
    second_csv = write(tmp_path / "arbor-2026-09-08.csv", second)
    before = snapshot(url)
    r = esafety(url, home, "roster", "import", second_csv, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert changes(r.stdout) == [f"+ {new.username} (Year 7, 7A) -> year7",
                                 f"~ {moved.username}: tutor_group 7C -> 7H",
                                 f"- {removed.username} (not in the export)"]
    assert "would have created 1, updated 1, retired 1, unchanged 998" in r.stdout
    assert snapshot(url) == before

    r = esafety(url, home, "roster", "import", second_csv)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("created 1, updated 1, retired 1, unchanged 998 (")
    after = {row[0]: row for row in snapshot(url)}
    assert set(after) == {p.username for p in pupils} | {new.username}
    assert after[removed.username][7:9] == (False, True)  # inactive, retired_at set
    assert after[moved.username][3] == "7H" and after[new.username][1:4] == ("year7", 7, "7A")
    unchanged = {row[0]: row for row in before}
    assert sum(after[n] != unchanged.get(n) for n in after) == 3
    with sessions(url)() as s:
        assert [(b.ip, b.username) for b in s.scalars(select(IpBinding))] == [("10.20.0.10", moved.username)]
    resolver = IdentityResolver(url, "unknown")
    resolver.refresh()
    assert resolver.resolve("10.20.0.11").user is None and resolver.resolve("10.20.0.11").group == "unknown"
    assert resolver.resolve("10.20.0.10").user == moved.username
    collect(url)
    assert gauge("esafety_identity_sync_last_ok") == 1.0
    last_success = gauge("esafety_identity_sync_last_success_timestamp_seconds")
    assert last_success and abs(last_success - time.time()) < 600

    # One bad row among 200 good ones: exit 1, the line named, nothing changed.
    good = snapshot(url)
    bad = write(tmp_path / "bad.csv", second[:200],
                [["999999", upn(999), "Bad", "Row", "Y14", "7A", "", "", "bad.row", "", ""]], at=120)
    r = esafety(url, home, "roster", "import", bad)
    assert r.returncode == 1
    assert f"{bad}:122: year 'Y14' is not a year group in the policy's identity.roster.year_groups" in r.stderr
    assert "nothing was changed" in r.stderr and r.stdout == ""
    assert snapshot(url) == good

    # A truncated export (10% of the pupils) would retire 900: refused unless --force.
    cut = write(tmp_path / "truncated.csv", second[:100])
    r = esafety(url, home, "roster", "import", cut)
    assert r.returncode == 1
    assert ("would retire or unlink 900 of 1000 people (90%, more than the 20% allowed by "
            "identity.roster.max_retire_share)") in r.stderr
    assert "use --force" in r.stderr
    assert snapshot(url) == good
    collect(url)  # the dashboard's metrics now say the last import was refused, and when one last worked
    assert gauge("esafety_identity_sync_last_ok") == 0.0
    assert gauge("esafety_identity_sync_last_success_timestamp_seconds") == last_success

    r = esafety(url, home, "roster", "import", cut, "--force")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("created 0, updated 0, retired 900, unchanged 100 (")

    runs = syncs(url)
    assert [(ok, dry) for ok, dry, _ in runs] == [(True, True), (True, False), (True, True), (True, False),
                                                  (False, False), (False, False), (True, False)]
    assert f"{bad}:122: year 'Y14'" in runs[4][2] and "max_retire_share" in runs[5][2]
    r = esafety(url, home, "roster", "status")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "active pupils: 100 (retired: 901)" in lines
    year7 = str(sum(p.year == 7 for p in second[:100]))
    assert any(line.split()[:5] == ["Year", "7", year7, "in", "8"] for line in lines), r.stdout
    assert sum(" refused " in line for line in lines) == 2 and sum(" applied " in line for line in lines) == 3


def test_local_admin_taken_over_leavers_and_readmission(database_url: str, tmp_path: Path) -> None:
    """An admin made by `esafety users add` who is also in the export (SIMS style, Windows-1252)
    becomes the roster's, keeps their roles and can still sign in; a leaver's date retires them."""
    url, home = database_url, tmp_path / "home"
    create_user(url, "jsmith", "staff", ["admin"], email="jsmith@school.test", password=PASSWORD)
    header = "Adno,UPN,Legal Surname,Forename,Preferred Forename,Year,Reg,Date of Leaving,Username\r\n"
    rows = ["000101,,Smith,Jonathan,Jon,12,12PW,,jsmith", f"000102,{upn(102)},Ng,Zoë,,8,8RB,,zoe.ng",
            f"000103,{upn(103)},Pryce,Siân,,11,11X,,sian.pryce"]
    sims = tmp_path / "sims.csv"
    sims.write_bytes((header + "\r\n".join(rows) + "\r\n").encode("cp1252"))
    r = esafety(url, home, "roster", "import", sims)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("created 2, updated 1, retired 0, unchanged 0 (")
    with sessions(url)() as s:
        people = {u.username: u for u in s.scalars(select(User))}
    js = people["jsmith"]
    assert (js.source, js.roles, js.policy_group, js.year_group, js.display_name, js.email) == (
        "roster", "admin", "year12", 12, "Jon Smith", "jsmith@school.test")  # no email in the export: kept
    assert js.password_hash and people["zoe.ng"].display_name == "Zoë Ng"
    app = create_app(settings_for(url, tmp_path / "dash"))
    client = signed_in(app, "jsmith")
    page = client.get("/admin/users", follow_redirects=False)
    assert page.status_code == 200 and "jsmith" in page.text  # still an admin

    # Siân's leaving date has passed: the dry run says so, the import retires her.
    rows[2] = f"000103,{upn(103)},Pryce,Siân,,11,11X,22/07/2025,sian.pryce"
    sims.write_bytes((header + "\r\n".join(rows) + "\r\n").encode("cp1252"))
    r = esafety(url, home, "roster", "import", sims, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert changes(r.stdout) == ["- sian.pryce (left 2025-07-22)"]
    assert esafety(url, home, "roster", "import", sims).stdout.startswith("created 0, updated 0, retired 1, ")
    # jsmith leaves the roster entirely (a small roster: the guard needs 10 people): their session ends.
    r = esafety(url, home, "roster", "import", write(tmp_path / "two.csv", []))
    assert r.returncode == 1 and "has nobody in it" in r.stderr
    sims.write_bytes((header + "\r\n".join(rows[1:]) + "\r\n").encode("cp1252"))
    r = esafety(url, home, "roster", "import", sims)
    assert r.stdout.startswith("created 0, updated 0, retired 1, unchanged 2 ("), r.stdout + r.stderr
    with sessions(url)() as s:
        assert s.scalars(select(WebSession).where(WebSession.username == "jsmith")).all() == []
    gone = client.get("/admin/users", follow_redirects=False)
    assert gone.status_code in (302, 303) and "/login" in gone.headers["location"]  # signed out
    # Siân is re-admitted: no leaving date any more.
    rows[2] = f"000103,{upn(103)},Pryce,Siân,,11,11X,,sian.pryce"
    sims.write_bytes((header + "\r\n".join(rows[1:]) + "\r\n").encode("cp1252"))
    r = esafety(url, home, "roster", "import", sims, "--dry-run")
    (line,) = changes(r.stdout)
    assert line.startswith("~ sian.pryce: leaving_date 2025-07-22 -> -, active False -> True, retired_at 20")
    assert line.endswith(" -> -")
    assert esafety(url, home, "roster", "import", sims).returncode == 0
    with sessions(url)() as s:
        sian = s.scalar(select(User).where(User.username == "sian.pryce"))
        assert sian is not None and sian.active and sian.retired_at is None and sian.leaving_date is None
