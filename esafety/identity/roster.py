"""The school's MIS export (SIMS, Arbor, Wonde, ... as CSV) -> PersonRecords, with file:line errors.

One row per pupil. Headers are matched case-, space- and punctuation-insensitively ("Reg Group",
"reg_group" and "REGGROUP" are one header), and columns the import does not use are ignored:

    username      username, user name, login, login name, network login        (required)
    year          year, year group, nc year, curriculum year: 8, Year 8, Y8, R /
                  Reception (0), N1 / N2 (nursery: -2 / -1), 12, Year 12       (required)
    forename      preferred forename (if filled in), forename, first name, legal forename
    surname       preferred surname (if filled in), surname, last name, legal surname
    upn           upn, unique pupil number: DfE format, check letter verified
    admission no  adno, admission number, admission no, mis_id
    tutor group   reg, reg group, registration group, registration form, tutor group, form
    email         email, email address, school email
    leaving date  date of leaving, leaving date, leave date: 2026-07-22 or 22/07/2026

Text is UTF-8 (with or without BOM), or else Windows-1252 (older SIMS exports); a line that is
neither, or a file that mixes the two, is an error naming the line. Every problem is collected
(the first MAX_ERRORS are reported) and any problem means no records at all: an import applies the
whole file or nothing. The display name is "Forename Surname". Years map to policy groups by the
policy's identity.roster.year_groups.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from esafety.identity.people import PersonRecord

MAX_ERRORS = 50
_CAP = 32  # the users table's upn / admission_no / tutor_group columns
UPN_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"  # 0..22; no I, O or S (DfE)


def _norm(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", header.lower())


# Field -> header spellings, in order of preference when a file has several of them.
HEADERS: dict[str, tuple[str, ...]] = {
    "username": ("username", "user name", "login", "login name", "network login", "network username",
                 "account name"),
    "year": ("year", "year group", "nc year", "nc year actual", "curriculum year", "year of curriculum",
             "year code"),
    "forename": ("preferred forename", "preferred first name", "known as", "forename", "first name",
                 "legal forename", "given name"),
    "surname": ("preferred surname", "preferred last name", "surname", "last name", "legal surname",
                "family name"),
    "upn": ("upn", "unique pupil number"),
    "admission_no": ("adno", "admission number", "admission no", "adm no", "mis id"),
    "tutor_group": ("reg", "reg group", "registration group", "registration form", "tutor group", "form",
                    "form group"),
    "email": ("email", "email address", "school email", "primary email"),
    "leaving_date": ("date of leaving", "leaving date", "leave date", "date left"),
}
_ALIASES = {field: tuple(_norm(h) for h in names) for field, names in HEADERS.items()}


class RosterInvalid(Exception):
    """The file cannot be imported; `errors` are "file:line: message" lines."""

    def __init__(self, errors: Sequence[str]):
        self.errors = list(errors)
        super().__init__(self.report())

    def report(self) -> str:
        shown = self.errors[:MAX_ERRORS]
        more = len(self.errors) - len(shown)
        return "\n".join(shown + ([f"... and {more} more"] if more else []))


@dataclass(frozen=True)
class _Columns:
    """Which column indexes hold each field, in order of preference."""

    where: dict[str, tuple[int, ...]]

    def get(self, row: list[str], field: str) -> str:
        for i in self.where.get(field, ()):
            value = row[i].strip()
            if value:
                return value
        return ""


# -- values -------------------------------------------------------------------------------------------

_YEAR_NUMBER = re.compile(r"(?:y|yr|year|ncyear)?(\d{1,2})")
_RECEPTION = {"r", "yr", "yearr", "rec", "reception"}
_NURSERY = re.compile(r"n(?:ursery)?([12])")


def parse_year(text: str) -> int | None:
    """An NC year: '8', 'Year 8', 'Y8' -> 8; 'R', 'Reception' -> 0; 'N1' -> -2, 'N2' -> -1."""
    t = re.sub(r"[\s.]", "", text.lower())
    if t in _RECEPTION:
        return 0
    if m := _NURSERY.fullmatch(t):
        return int(m.group(1)) - 3
    if (m := _YEAR_NUMBER.fullmatch(t)) and int(m.group(1)) <= 14:
        return int(m.group(1))
    return None


_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ][0-9:.]+Z?)?")
_UK = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})(?: [0-9:]+)?")


def parse_date(text: str) -> date | None:
    """2026-07-22 (ISO, a time after it ignored) or 22/07/2026 (UK day first; also 22-07-2026, 22.07.2026)."""
    try:
        if m := _ISO.fullmatch(text):
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        if m := _UK.fullmatch(text):
            return date(int(m.group(3)), int(m.group(2)), int(m.group(1)))
    except ValueError:  # 31/02/2026
        return None
    return None


def upn_problem(upn: str) -> str | None:
    """Why `upn` is not a DfE UPN, or None. Permanent: check letter + 12 digits; temporary: check
    letter + 11 digits + a letter. The check letter is the weighted sum (weights 2..13 for
    characters 2..13, a temporary UPN's final letter counting as its place in UPN_LETTERS) mod 23."""
    if len(upn) != 13:
        return f"UPN '{upn}' is not 13 characters"
    body, last = upn[1:12], upn[12]
    if not body.isdigit() or not (last.isdigit() or last in UPN_LETTERS) or upn[0] not in UPN_LETTERS:
        return f"UPN '{upn}' is not a letter and 12 digits (or, temporary, 11 digits and a letter)"
    values = [int(c) for c in body] + [int(last) if last.isdigit() else UPN_LETTERS.index(last)]
    check = UPN_LETTERS[sum(w * v for w, v in zip(range(2, 14), values, strict=True)) % 23]
    if upn[0] != check:
        return f"UPN '{upn}' has the wrong check letter (it would be {check}{upn[1:]}): a typing error?"
    return None


_USERNAME_BAD = re.compile(r"[\s:\"/\\\[\]<>|=+*?,;]")  # not in a network account name (and ':' ends Basic's)
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


# -- text -------------------------------------------------------------------------------------------

def decode(data: bytes, name: str) -> str:
    """UTF-8 (BOM or not), else Windows-1252, line by line so an error can say where."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    utf8_line, bad_line = 0, 0
    for n, line in enumerate(data.split(b"\n"), 1):
        if line.isascii():
            continue
        try:
            line.decode("utf-8")
            utf8_line = utf8_line or n
        except UnicodeDecodeError:
            bad_line = bad_line or n
    if utf8_line:  # decoding it all as Windows-1252 would garble the UTF-8 names silently
        raise RosterInvalid([f"{name}:{bad_line}: this line is not UTF-8, but line {utf8_line} is: the file mixes "
                             "encodings; save the export again as CSV UTF-8"])
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError as exc:
        at = data[:exc.start].count(b"\n") + 1
        raise RosterInvalid([f"{name}:{at}: byte 0x{data[exc.start]:02x} is neither UTF-8 nor Windows-1252 "
                             "text; save the export again as CSV UTF-8"]) from None


TITLE_LINES = 3  # lines above the header a report may add (a title, the date it was run)


def _delimiter(first_line: str) -> str:
    return max(",\t;", key=first_line.count)


# -- rows -------------------------------------------------------------------------------------------

def _columns(header: list[str], name: str, line: int) -> _Columns:
    index: dict[str, int] = {}
    for i, h in enumerate(header):
        index.setdefault(_norm(h), i)
    where = {field: tuple(index[a] for a in aliases if a in index) for field, aliases in _ALIASES.items()}
    missing = [f for f in ("username", "year") if not where[f]]
    if missing:
        found = ", ".join(repr(h.strip()) for h in header if h.strip()) or "none"
        raise RosterInvalid([f"{name}:{line}: no {f.replace('_', ' ')} column (expected a header like "
                             f"{', '.join(repr(h) for h in HEADERS[f][:3])}; found {found})" for f in missing])
    return _Columns(where)


def _record(cols: _Columns, row: list[str], year_groups: Mapping[int, str], at: str,
            err: Callable[[str], None]) -> PersonRecord | None:
    username = cols.get(row, "username")
    if not username:
        err("no username (the account name pupils sign in with)")
    elif len(username) > 120 or _USERNAME_BAD.search(username):
        err(f"username {username!r} is not an account name (no spaces or :\"/\\[]<>|=+*?,; at most 120)")
    raw_year = cols.get(row, "year")
    year = parse_year(raw_year)
    group = year_groups.get(year) if year is not None else None
    if not raw_year:
        err("no year group")
    elif year is None:
        err(f"year '{raw_year}' is not a year group (like 8, Year 8, Y8, R, N1)")
    elif group is None:
        mapped = ", ".join(str(y) for y in sorted(year_groups)) or "none"
        err(f"year '{raw_year}' is not a year group in the policy's identity.roster.year_groups "
            f"(years mapped: {mapped})")
    upn = cols.get(row, "upn").upper().replace(" ", "") or None
    if upn and (problem := upn_problem(upn)):
        err(problem)
    adno = cols.get(row, "admission_no") or None
    tutor = cols.get(row, "tutor_group")
    for label, value in (("admission number", adno), ("tutor group", tutor)):
        if value and len(value) > _CAP:
            err(f"{label} {value[:40]!r} is longer than {_CAP} characters")
    email = cols.get(row, "email")
    if email and not _EMAIL.fullmatch(email):
        err(f"email {email!r} is not an email address")
    leaving = None
    if raw_leaving := cols.get(row, "leaving_date"):
        leaving = parse_date(raw_leaving)
        if leaving is None:
            err(f"leaving date '{raw_leaving}' is not a date (2026-07-22 or 22/07/2026)")
    display = " ".join(p for p in (cols.get(row, "forename"), cols.get(row, "surname")) if p) or username
    if len(display) > 200:
        err("the name is longer than 200 characters")
    if not username or year is None or group is None:
        return None
    return PersonRecord(username=username, display_name=display, email=email, policy_group=group, upn=upn,
                        admission_no=adno, year_group=year, tutor_group=tutor, leaving_date=leaving, where=at)


def parse_roster(data: bytes, name: str, year_groups: Mapping[int, str]) -> list[PersonRecord]:
    """Every pupil in the export, or RosterInvalid with every problem found ("name:line: ...")."""
    text = decode(data, name)
    # The delimiter the header uses: the line with the most of one, among the first few (a SIMS
    # report may put a title line or two above the header).
    heads = [ln for ln in text.splitlines()[:TITLE_LINES + 2] if ln.strip()]
    first = max(heads, key=lambda ln: max(ln.count(d) for d in ",\t;"), default="")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(first), strict=True)
    errors: list[str] = []
    records: list[PersonRecord] = []
    cols: _Columns | None = None
    width = 0
    seen: dict[tuple[str, str], int] = {}  # (what, value) -> the line it was first on
    line, titles, not_header = 1, 0, None
    try:
        for row in reader:
            at_line, line = line, reader.line_num + 1  # a quoted field may span lines: report its first
            if not any(c.strip() for c in row):
                continue  # blank lines, and Excel's trailing ",,,,"
            if cols is None:
                try:
                    cols, width = _columns(row, name, at_line), len(row)
                except RosterInvalid as exc:
                    # A title above the header ("Student List - 04/12/2026") has a field or two.
                    if titles < TITLE_LINES and sum(1 for c in row if c.strip()) <= 2:
                        titles, not_header = titles + 1, not_header or exc
                        continue
                    raise not_header or exc from None
                continue
            at = f"{name}:{at_line}"

            def err(message: str, at: str = at) -> None:
                errors.append(f"{at}: {message}")

            if len(row) != width:
                err(f"{len(row)} fields, but the header has {width}: a cut-off line or a stray delimiter?")
                continue
            record = _record(cols, row, year_groups, at, err)
            if record is None:
                continue
            for what, value in (("username", record.username), ("UPN", record.upn),
                                ("admission number", record.admission_no)):
                if value:
                    before = seen.setdefault((what, value.lower()), at_line)
                    if before != at_line:
                        err(f"{what} '{value}' is also on line {before}")
            records.append(record)
    except csv.Error as exc:
        errors.append(f"{name}:{reader.line_num}: not valid CSV ({exc})")
    if cols is None and not errors:
        if not_header is not None:
            raise not_header
        errors.append(f"{name}:1: the file is empty (no header row)")
    if errors:
        raise RosterInvalid(errors)
    return records


def read_roster(path: str | Path, year_groups: Mapping[int, str]) -> list[PersonRecord]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise RosterInvalid([f"{path}: cannot read the file: {exc.strerror}"]) from None
    return parse_roster(data, str(path), year_groups)
