"""The MIS export parser (esafety.identity.roster): SIMS, Arbor and Wonde headers, encodings, and
the exact file:line errors a school sees, with nothing returned when any row is bad."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from esafety.identity.roster import RosterInvalid, parse_date, parse_year, read_roster, upn_problem
from esafety.policy.loader import load_policy
from tests.conftest import ROOT

YEARS = load_policy(ROOT / "policies" / "aup.yaml").identity.roster.year_groups  # 7..13 -> year7..year13
MAPPED = "years mapped: 7, 8, 9, 10, 11, 12, 13"


def upn(serial: int, temporary: str = "") -> str:
    """A valid UPN, computed the way python-stdnum does (digits count as 23 + d, so mod 23 they are d):
    an independent formulation of the DfE check letter."""
    alphabet = "ABCDEFGHJKLMNPQRTUVWXYZ0123456789"
    body = f"8012000{serial:05d}"[:12] if not temporary else f"8012000{serial:04d}"[:11] + temporary
    check = sum(i * alphabet.index(c) for i, c in enumerate(body, 2)) % 23
    return alphabet[check] + body


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


def errors_of(path: Path, years: dict[int, str] = YEARS) -> list[str]:
    with pytest.raises(RosterInvalid) as exc:
        read_roster(path, years)
    return exc.value.errors


def test_upn_check_letter_matches_published_examples() -> None:
    assert upn_problem("B801200005001") is None  # python-stdnum's documented valid UPN
    assert upn_problem("A801200005001") == ("UPN 'A801200005001' has the wrong check letter "
                                            "(it would be B801200005001): a typing error?")
    assert all(upn_problem(upn(n)) is None for n in range(0, 500, 7))
    assert upn_problem(upn(12, temporary="A")) is None  # temporary: 11 digits and a letter
    assert upn_problem("B80120000500") == "UPN 'B80120000500' is not 13 characters"
    assert "not a letter and 12 digits" in (upn_problem("B80120000A001") or "")


@pytest.mark.parametrize(("text", "year"), [("8", 8), ("08", 8), ("Year 8", 8), ("Y8", 8), ("yr 10", 10),
                                            ("R", 0), ("Reception", 0), ("YR", 0), ("N1", -2), ("N2", -1),
                                            ("Nursery 2", -1), ("12", 12), ("Year 12", 12), ("Year 13", 13)])
def test_year_spellings(text: str, year: int) -> None:
    assert parse_year(text) == year


@pytest.mark.parametrize("text", ["Q", "Year", "Y15", "8B", "N3", "-1"])
def test_not_years(text: str) -> None:
    assert parse_year(text) is None


def test_dates() -> None:
    assert parse_date("2026-07-22") == parse_date("22/07/2026") == parse_date("22-07-2026") == date(2026, 7, 22)
    assert parse_date("2026-07-22 00:00:00") == date(2026, 7, 22)
    assert parse_date("31/02/2026") is None and parse_date("07/22/2026") is None and parse_date("soon") is None


def test_sims_export_in_windows_1252(tmp_path: Path) -> None:
    """SIMS: Adno, Legal Surname, Forename / Preferred Forename, Reg, UK dates, and cp1252 names."""
    text = ("Adno,UPN,Legal Surname,Forename,Preferred Forename,Year,Reg,Date of Leaving,Username,Gender\r\n"
            f"001234,{upn(1)},Jones,Zoë,,8,8RB,,zoe.jones,F\r\n"
            f"001235,{upn(2)},Pritchard,Siân,Sian,Year 12,12PW,22/07/2026,sian.pritchard,F\r\n"
            f"001236,,O'Brien,Seán,,13,13KL,,sean.obrien,M\r\n")
    records = read_roster(write(tmp_path, "sims.csv", text, "cp1252"), YEARS)
    zoe, sian, sean = records
    assert (zoe.username, zoe.display_name, zoe.admission_no, zoe.upn, zoe.year_group, zoe.tutor_group,
            zoe.policy_group, zoe.email, zoe.leaving_date, zoe.where) == (
        "zoe.jones", "Zoë Jones", "001234", upn(1), 8, "8RB", "year8", "", None, f"{tmp_path / 'sims.csv'}:2")
    assert sian.display_name == "Sian Pritchard"  # the preferred forename wins when it is filled in
    assert (sian.year_group, sian.policy_group, sian.leaving_date) == (12, "year12", date(2026, 7, 22))
    assert (sean.display_name, sean.upn) == ("Seán O'Brien", None)


def test_arbor_export_utf8_with_bom(tmp_path: Path) -> None:
    text = ("\ufeffAdmission Number,UPN,Last Name,First Name,Year Group,Registration Form,Email Address,"
            "Leaving Date,Username\n"
            f"A100,{upn(3)},Young,Amy,Year 8,8RB,amy.young@school.example,,amy.y8\n"
            f"A101,{upn(4)},Ng,Zoë,Year 11,11X,,2026-07-22,zoe.y11\n")
    amy, zoe = read_roster(write(tmp_path, "arbor.csv", text), YEARS)
    assert (amy.username, amy.display_name, amy.admission_no, amy.year_group, amy.tutor_group, amy.email) == (
        "amy.y8", "Amy Young", "A100", 8, "8RB", "amy.young@school.example")
    assert (zoe.display_name, zoe.policy_group, zoe.leaving_date) == ("Zoë Ng", "year11", date(2026, 7, 22))


def test_wonde_export_with_tutor_group_header_variants(tmp_path: Path) -> None:
    text = ("mis_id,upn,forename,surname,year,registration_group,email,username,leaving_date\n"
            f"9001,{upn(5).lower()},Kai,Patel,7,7C,kai@school.example,kai.patel,\n")
    (kai,) = read_roster(write(tmp_path, "wonde.csv", text), YEARS)
    assert (kai.admission_no, kai.upn, kai.display_name, kai.year_group, kai.tutor_group, kai.policy_group) == (
        "9001", upn(5), "Kai Patel", 7, "7C", "year7")  # a lower-case UPN is read as the DfE form
    tabbed = "USERNAME\tYEAR GROUP\tTutor Group\tSurname\nbo.y9\tY9\t9Q\tBo\n"
    (bo,) = read_roster(write(tmp_path, "tabs.csv", tabbed), YEARS)
    assert (bo.username, bo.year_group, bo.tutor_group, bo.display_name) == ("bo.y9", 9, "9Q", "Bo")


def test_each_bad_row_gives_its_file_line_and_nothing_is_returned(tmp_path: Path) -> None:
    text = ("Adno,UPN,Surname,Forename,Year,Reg,Leaving Date,Username\n"
            f"1,{upn(1)},A,Ann,8,8A,,ann.y8\n"                # 2: good
            f"2,{upn(2)},B,Ben,Y14,9A,,ben.y9\n"              # 3: bad year
            f"3,{upn(3)},C,Cat,9,9A,31/02/2026,cat.y9\n"      # 4: bad date
            f"4,{upn(4)},D,Dan,9,9A,,\n"                      # 5: no username
            f"5,{upn(1)},E,Eve,10,10A,,eve.y10\n"             # 6: UPN already on line 2
            "6,A801200005001,F,Fay,10,10A,,fay.y10\n"         # 7: wrong check letter
            "7,,G,Gus,R,R1,,gus.r\n"                          # 8: Reception is not mapped by aup.yaml
            "8,,H,Hal,11,11A,,ann.Y8\n"                       # 9: username already on line 2 (any case)
            "9,,I,Ivy,11\n")                                  # 10: cut off
    f = write(tmp_path, "roster.csv", text)
    assert errors_of(f) == [
        f"{f}:3: year 'Y14' is not a year group in the policy's identity.roster.year_groups ({MAPPED})",
        f"{f}:4: leaving date '31/02/2026' is not a date (2026-07-22 or 22/07/2026)",
        f"{f}:5: no username (the account name pupils sign in with)",
        f"{f}:6: UPN '{upn(1)}' is also on line 2",
        f"{f}:7: UPN 'A801200005001' has the wrong check letter (it would be B801200005001): a typing error?",
        f"{f}:8: year 'R' is not a year group in the policy's identity.roster.year_groups ({MAPPED})",
        f"{f}:9: username 'ann.Y8' is also on line 2",
        f"{f}:10: 5 fields, but the header has 8: a cut-off line or a stray delimiter?",
    ]
    reception = write(tmp_path, "rec.csv", "Username,Year\ngus.r,Reception\n")
    assert read_roster(reception, {0: "year7"})[0].policy_group == "year7"


def test_one_bad_row_among_many_returns_nothing(tmp_path: Path) -> None:
    rows = [f"p{i}.y8,8,8A" for i in range(200)]
    rows[117] = "p117.y8,Year Eight,8A"
    f = write(tmp_path, "big.csv", "username,year,reg\n" + "\n".join(rows) + "\n")
    assert errors_of(f) == [f"{f}:119: year 'Year Eight' is not a year group (like 8, Year 8, Y8, R, N1)"]


def test_a_report_title_above_the_header_is_passed_over(tmp_path: Path) -> None:
    text = ("Student List - Example Academy\n"
            "Run on 04/12/2026 06:00,\n"
            "\n"
            "Adno,Legal Surname,Forename,Year,Reg,Username\n"
            "001234,Jones,Zoe,8,8RB,zoe.jones\n")
    (zoe,) = read_roster(write(tmp_path, "titled.csv", text), YEARS)
    assert (zoe.username, zoe.year_group, zoe.where) == ("zoe.jones", 8, f"{tmp_path / 'titled.csv'}:5")


def test_a_file_with_no_header_says_so_at_its_first_line(tmp_path: Path) -> None:
    f = write(tmp_path, "titles.csv", "Student List\nRun on 04/12/2026\n")
    errors = errors_of(f)
    assert errors[0].startswith(f"{f}:1: no username column") and errors[1].startswith(f"{f}:1: no year column")


def test_missing_username_column_says_which_header_was_expected(tmp_path: Path) -> None:
    f = write(tmp_path, "nouser.csv", "Adno,UPN,Legal Surname,Forename,Year,Reg\n1,,A,Ann,8,8A\n")
    assert errors_of(f) == [f"{f}:1: no username column (expected a header like 'username', 'user name', 'login'; "
                            "found 'Adno', 'UPN', 'Legal Surname', 'Forename', 'Year', 'Reg')"]


def test_many_errors_are_capped(tmp_path: Path) -> None:
    f = write(tmp_path, "bad.csv", "username,year\n" + "".join(f"u{i},Y20\n" for i in range(60)))
    with pytest.raises(RosterInvalid) as exc:
        read_roster(f, YEARS)
    lines = exc.value.report().splitlines()
    assert len(lines) == 51 and lines[-1] == "... and 10 more" and lines[0].startswith(f"{f}:2: year 'Y20'")


def test_encoding_errors_name_the_line(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.csv"
    mixed.write_bytes("username,year,surname\nzoe.y8,8,Zoë\n".encode() + "sian.y9,9,Siân\n".encode("cp1252"))
    assert errors_of(mixed) == [f"{mixed}:3: this line is not UTF-8, but line 2 is: the file mixes encodings; "
                                "save the export again as CSV UTF-8"]
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"username,year\nann.y8,8\nbob\x81.y8,8\n")
    assert errors_of(binary) == [f"{binary}:3: byte 0x81 is neither UTF-8 nor Windows-1252 text; "
                                 "save the export again as CSV UTF-8"]


def test_malformed_csv_empty_and_missing_files(tmp_path: Path) -> None:
    quote = write(tmp_path, "quote.csv", 'username,year\nann.y8,8\n"bob"x,8\n')
    (err,) = errors_of(quote)
    assert err.startswith(f"{quote}:3: not valid CSV (")
    empty = write(tmp_path, "empty.csv", "\n\n")
    assert errors_of(empty) == [f"{empty}:1: the file is empty (no header row)"]
    assert errors_of(tmp_path / "absent.csv") == [f"{tmp_path / 'absent.csv'}: cannot read the file: "
                                                  "No such file or directory"]


def test_blank_and_excel_trailing_rows_are_skipped(tmp_path: Path) -> None:
    f = write(tmp_path, "excel.csv", "username,year,reg\r\n\r\nann.y8,8,8A\r\n,,\r\n,,\r\n")
    assert [r.username for r in read_roster(f, YEARS)] == ["ann.y8"]
