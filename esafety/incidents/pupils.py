"""A pupil's place in school (name, NC year, tutor group) as the incident pages show it.

Two views of it, on purpose:

* now: read from `users` (filled by the roster import and the directory sync) when a page is
  shown. The queue filters and the incident's header use it: a DSL acting today needs today's tutor
  group, the person to talk to.
* at the time: `incidents.subject_year_group` / `subject_tutor_group`, copied from `users` once
  when the incident is stored (`snapshot`, called by ingest with one indexed lookup per batch).
  A chronology read years later says "Year 8, 8RB at the time", whatever the pupil is now.

Tutor group names come from an MIS export: treat them as attacker-controlled text (templates
escape them; filters bind them as parameters).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from esafety.store.bulk import one_of
from esafety.store.models import Incident, User

# The years esafety.policy.identity_section admits: -2 and -1 nursery, 0 Reception, 1-14.
YEAR_MIN, YEAR_MAX = -2, 14
TUTOR_MAX = 32  # users.tutor_group's length: a longer filter value cannot match anything
_CHUNK = 500
NONE_SHOWN = "-"


def year_label(year: int | None) -> str:
    if year is None:
        return ""
    if year < 0:
        return f"Nursery {year + 3}"  # -2 -> Nursery 1, -1 -> Nursery 2
    return "Reception" if year == 0 else f"Year {year}"


def parse_year(raw: str | None) -> int | None:
    """A year from a query string ("8", "0", "-1"), or None for anything else."""
    text = (raw or "").strip()
    if not re.fullmatch(r"-?[0-9]{1,2}", text):
        return None
    year = int(text)
    return year if YEAR_MIN <= year <= YEAR_MAX else None


def parse_tutor(raw: str | None) -> str | None:
    text = (raw or "").strip()
    return text if text and len(text) <= TUTOR_MAX and text.isprintable() else None


@dataclass(frozen=True)
class Place:
    year_group: int | None
    tutor_group: str  # "" when none

    @property
    def year(self) -> str:
        return year_label(self.year_group)

    @property
    def label(self) -> str:
        """ "Year 8, 8RB", "Year 8", "8RB", or "-" for people with neither (staff, unknown)."""
        return ", ".join(p for p in (self.year, self.tutor_group) if p) or NONE_SHOWN

    @property
    def known(self) -> bool:
        return self.year_group is not None or bool(self.tutor_group)

    def as_json(self) -> dict[str, object]:
        return {"year_group": self.year_group, "tutor_group": self.tutor_group or None, "label": self.label}


NOWHERE = Place(None, "")


@dataclass(frozen=True)
class Pupil:
    username: str
    name: str  # display name; "" when the directory gave none
    now: Place


def at_the_time(inc: Incident) -> Place:
    return Place(inc.subject_year_group, inc.subject_tutor_group or "")


def lookup(session: Session, usernames: Iterable[str | None]) -> dict[str, Pupil]:
    """The people behind these usernames as they are now; unknown names are left out."""
    names = sorted({u for u in usernames if u})
    out: dict[str, Pupil] = {}
    for i in range(0, len(names), _CHUNK):
        for username, name, year, tutor in session.execute(
                select(User.username, User.display_name, User.year_group, User.tutor_group)
                .where(one_of(session, User.username, names[i:i + _CHUNK]))):
            # A name that only repeats the username (accounts made by `esafety users add`) says nothing.
            out[username] = Pupil(username, name if name and name != username else "", Place(year, tutor or ""))
    return out


def snapshot(session: Session, incidents: list[Incident]) -> None:
    """Copy each new incident's subject's year and tutor group onto it (before it is inserted).
    One query on the unique username index per 500 subjects: the batch writer's path stays cheap."""
    people = lookup(session, (inc.subject for inc in incidents))
    for inc in incidents:
        pupil = people.get(inc.subject or "")
        if pupil is not None:  # unknown subjects keep NULL: nothing known, not "no tutor group"
            inc.subject_year_group = pupil.now.year_group
            inc.subject_tutor_group = pupil.now.tutor_group


@dataclass(frozen=True)
class FilterOptions:
    """What the queue's year and tutor group dropdowns offer: the values present among current people."""

    years: list[int]
    tutors: list[tuple[str, list[str]]]  # (year label or "No year", tutor groups), in year order


def filter_options(session: Session) -> FilterOptions:
    rows = session.execute(select(User.year_group, User.tutor_group).distinct()
                           .where(User.retired_at.is_(None), or_(User.year_group.is_not(None), User.tutor_group != ""))
                           ).all()
    years = sorted({y for y, _ in rows if y is not None})
    by_year: dict[int | None, set[str]] = {}
    for y, t in rows:
        if t:
            by_year.setdefault(y, set()).add(t)
    tutors = [(year_label(y) if y is not None else "No year", sorted(ts))
              for y, ts in sorted(by_year.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))]
    return FilterOptions(years, tutors)
