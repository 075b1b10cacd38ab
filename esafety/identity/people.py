"""Applying the people from one source (the roster, or the directory) to the users table.

`apply_people(session, source, records, ...)` creates, updates and retires people so the table
matches `records`, and returns a `PeopleDiff`. It does not commit: the caller commits, or rolls
back for a dry run, so an import is one transaction and a refused or failed one changes nothing.
`record_sync(...)` then writes an identity_syncs row in a transaction of its own (also for
refusals), which the dashboard turns into the esafety_identity_sync_* metrics
(`collect_sync_metrics`).

Matching. `source` is "roster" or "directory". A record matches an existing person (of any
source, active or retired) by, in order: roster: UPN, admission number, username; directory:
directory_dn, username. Usernames and DNs compare case-insensitively (the proxy and LDAP do).
An update changes only the fields that differ and sets updated_at; `updated` lists each person's
field -> (old, new). What a record leaves out it does not erase: an empty email, or a UPN /
admission number / directory_dn of None, keeps the stored value (not every export has every column).

Ownership: roster > directory > local.
  - A roster record for a person of source directory or local takes the person over: source
    becomes roster, and the roster's fields are written; roles, password_hash and directory_dn
    are kept (an admin who is also in the MIS export can still sign in to the dashboard).
  - A directory record for a roster or local person (e.g. an admin made by `esafety users add`)
    only links it: it sets directory_dn, fills display_name / email only if they are empty, and
    lists the person in `linked` (when the link is new or changed).
  - A username that would collide with a different existing person (e.g. the roster renames a
    pupil to a name already taken) is an ImportRefused naming both. So is one person matched by
    two records, and a duplicate username / UPN / admission number / DN within `records` (the CSV
    parser catches these first with file:line; this does not trust it).
  - A renamed person's ip_bindings follow the new username; their dashboard sessions end.

Retiring. People of `source` who are active and not in `records`, and (roster) people whose
leaving_date <= today, are retired: active=False, retired_at=now; their ip_bindings and
web_sessions rows are deleted, so the proxy and the dashboard stop knowing them at their next
refresh. Roster or local people linked to the directory (directory_dn set) whose entry is no
longer in the directory get directory_dn cleared: they can no longer bind. A retired person
(retired_at set) who reappears in their owner's records is re-activated: a re-admitted pupil. An
account disabled by hand (`esafety users disable`: active False, retired_at None) stays disabled.
A leaver in the export whom we never knew is not created.

Guard. If more than `max_retire_share` of the source's currently active people (for the directory:
also the people linked to it) would be retired or unlinked because they are missing from
`records`, and there are at least 10 of them, the import is refused (ImportRefused) unless
`force`: a truncated export must not disable the school. Leavers retired by their leaving date
are not counted: the end of the summer term retires Years 11 and 13 at once, on purpose. An empty
`records` is always refused unless `force`. A refusal rolls the session back (nothing
half-applied can be committed by a caller that goes on to use it).

Speed: everyone is loaded once into dicts (no query per record); inserts and updates go out in
batches at the flush; bindings and sessions of retired people are deleted with one IN per 500.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from esafety.identity.tables import IdentitySync
from esafety.store.models import IpBinding, User
from esafety.webauth import WebSession

SOURCES = ("roster", "directory")
GUARD_MIN_PEOPLE = 10  # below this many, a share means little (a test school, a new install)
_PROGRESS_EVERY = 100
_IN_CHUNK = 500  # bound parameters per IN (SQLite's limit is far above; keeps statements small)
_ROSTER_FIELDS = ("username", "display_name", "email", "policy_group", "upn", "admission_no", "year_group",
                  "tutor_group", "leaving_date")
_DIRECTORY_FIELDS = ("username", "display_name", "email", "policy_group", "upn", "year_group", "tutor_group",
                     "directory_dn")
_KEEP_IF_EMPTY = frozenset({"email", "upn", "admission_no", "directory_dn"})  # absent here, not "erase"


@dataclass(frozen=True)
class PersonRecord:
    """One person as a source (a roster row, a directory entry) describes them."""

    username: str
    display_name: str
    email: str
    policy_group: str
    upn: str | None = None
    admission_no: str | None = None
    year_group: int | None = None
    tutor_group: str = ""
    leaving_date: date | None = None
    directory_dn: str | None = None
    where: str = ""  # "file.csv:12" or the entry's DN, for error messages


class ImportRefused(Exception):
    """The import was not applied; the message says what was wrong and how to go ahead."""


@dataclass
class PeopleDiff:
    created: list[str] = field(default_factory=list)
    updated: list[tuple[str, dict[str, tuple[object, object]]]] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    unchanged: int = 0
    linked: list[str] = field(default_factory=list)
    unlinked: list[str] = field(default_factory=list)  # directory_dn cleared (no longer in the directory)

    def summary(self) -> str:
        text = (f"created {len(self.created)}, updated {len(self.updated)}, retired {len(self.retired)}, "
                f"unchanged {self.unchanged}")
        if self.linked or self.unlinked:
            text += f", linked {len(self.linked)}, unlinked {len(self.unlinked)}"
        return text


def _key(text: str) -> str:
    return text.strip().lower()


def _where(r: PersonRecord) -> str:
    return r.where or r.username


def _check_unique(source: str, records: Sequence[PersonRecord]) -> None:
    seen: dict[tuple[str, str], PersonRecord] = {}
    kinds: list[tuple[str, Callable[[PersonRecord], str | None]]] = [("username", lambda r: _key(r.username))]
    if source == "roster":
        kinds += [("UPN", lambda r: r.upn), ("admission number", lambda r: r.admission_no)]
    else:
        kinds += [("directory DN", lambda r: _key(r.directory_dn) if r.directory_dn else None)]
    for r in records:
        if not r.username.strip():
            raise ImportRefused(f"{_where(r)}: no username")
        for kind, get in kinds:
            value = get(r)
            if not value:
                continue
            first = seen.setdefault((kind, value), r)
            if first is not r:
                raise ImportRefused(f"{_where(r)}: {kind} '{value}' is also {_where(first)}'s; "
                                    "each person must appear once")


class _People:
    """Everyone in the users table, loaded once, with the indexes the matching needs."""

    def __init__(self, users: Iterable[User]):
        self.all = list(users)
        self.by_username = {_key(u.username): u for u in self.all}
        self.by_upn = {u.upn: u for u in self.all if u.upn}
        self.by_adno = {u.admission_no: u for u in self.all if u.admission_no}
        self.by_dn = {_key(u.directory_dn): u for u in self.all if u.directory_dn}

    def match(self, source: str, r: PersonRecord) -> User | None:
        if source == "roster":
            return ((self.by_upn.get(r.upn) if r.upn else None)
                    or (self.by_adno.get(r.admission_no) if r.admission_no else None)
                    or self.by_username.get(_key(r.username)))
        return (self.by_dn.get(_key(r.directory_dn)) if r.directory_dn else None) or self.by_username.get(
            _key(r.username))


def _set(user: User, name: str, new: object, changes: dict[str, tuple[object, object]]) -> None:
    old = getattr(user, name)
    if old != new:
        changes[name] = (old, new)
        setattr(user, name, new)


def _who(u: User) -> str:
    return f"'{u.username}' ({u.source}{', retired' if u.retired_at else ''})"


def _claim(people: _People, user: User, r: PersonRecord) -> None:
    """Keep the UPN / admission number indexes right as records change them; refuse a value that
    belongs to someone else (the store's unique index would refuse it anyway, less clearly)."""
    for attr, index, label in (("upn", people.by_upn, "UPN"), ("admission_no", people.by_adno, "admission number")):
        value = getattr(user, attr)
        if not value:
            continue
        other = index.get(value)
        if other is not None and other is not user:
            raise ImportRefused(f"{_where(r)}: {_who(user)} would get {label} '{value}', which is already "
                                f"{_who(other)}'s; two pupils cannot swap identifiers in one import: fix the export")
        index[value] = user


_GUARD_SETTING = {"roster": "roster.max_retire_share", "directory": "directory.max_disable_share"}


def apply_people(session: Session, source: str, records: Sequence[PersonRecord], *, now: datetime,
                 max_retire_share: float, force: bool = False,
                 progress: Callable[[int], None] | None = None) -> PeopleDiff:
    """Make the users table match `records` from `source` (see the module docstring). No commit.

    `progress(n)` is called with the number of records just handled (tqdm's `update`). An
    ImportRefused rolls the session back first, so nothing half-applied can be committed later."""
    try:
        return _apply(session, source, records, now, max_retire_share, force, progress)
    except ImportRefused:
        session.rollback()
        raise


def _apply(session: Session, source: str, records: Sequence[PersonRecord], now: datetime,
           max_retire_share: float, force: bool, progress: Callable[[int], None] | None) -> PeopleDiff:
    if source not in SOURCES:
        raise ValueError(f"source is one of {SOURCES}, not {source!r}")
    if not records and not force:
        raise ImportRefused(f"the {source} has nobody in it; refusing to retire everyone "
                            "(use --force if that is really meant)")
    _check_unique(source, records)
    today = now.date()
    people = _People(session.scalars(select(User)))
    fields = _ROSTER_FIELDS if source == "roster" else _DIRECTORY_FIELDS
    # The guard's base, before the records change anyone's source: who this source speaks for now.
    base = sum(1 for u in people.all if u.active and (
        u.source == source or (source == "directory" and u.directory_dn is not None)))
    diff = PeopleDiff()
    seen: dict[int, PersonRecord] = {}  # person id -> the record that matched them
    leavers: list[User] = []
    renamed: list[tuple[str, str]] = []
    new_people: list[User] = []
    done = 0

    for r in records:
        user = people.match(source, r)
        if user is not None:
            if user.id in seen:
                raise ImportRefused(f"{_where(r)} and {_where(seen[user.id])} both describe {_who(user)}")
            seen[user.id] = r
        taken = people.by_username.get(_key(r.username))
        if taken is not None and taken is not user:
            what = f"{_who(user)} would be renamed to" if user else "a new person would be"
            raise ImportRefused(f"{_where(r)}: {what} '{r.username}', which is already {_who(taken)}; "
                                "fix the username in the source, or rename or remove the other account")
        leaving = source == "roster" and r.leaving_date is not None and r.leaving_date <= today
        if user is None:
            if not leaving:  # a leaver we never knew: nothing to do
                user = User(source=source, roles="", password_hash=None, active=True, created_at=now,
                            updated_at=now, **{f: getattr(r, f) for f in fields})
                _claim(people, user, r)
                new_people.append(user)
                people.by_username[_key(r.username)] = user
                diff.created.append(r.username)
            else:
                diff.unchanged += 1
        else:
            changes: dict[str, tuple[object, object]] = {}
            retire_now = False
            owns = source == "roster" or user.source == "directory"
            old_name = user.username
            if owns:
                for f in fields:
                    value = getattr(r, f)
                    if f in _KEEP_IF_EMPTY and not value:
                        continue
                    _set(user, f, value, changes)
                _set(user, "source", source, changes)  # roster takes over directory and local people
                if user.retired_at is not None and not leaving:  # re-admitted
                    _set(user, "active", True, changes)
                    _set(user, "retired_at", None, changes)
                retire_now = leaving and user.active
                if retire_now:
                    leavers.append(user)  # listed as retired, below, not as updated
            else:  # the directory links a roster or local person: it never overrides them
                if r.directory_dn:
                    linked = user.directory_dn is None or _key(user.directory_dn) != _key(r.directory_dn)
                    _set(user, "directory_dn", r.directory_dn, changes)
                    if linked:
                        diff.linked.append(user.username)
                if not user.display_name and r.display_name:
                    _set(user, "display_name", r.display_name, changes)
                if not user.email and r.email:
                    _set(user, "email", r.email, changes)
            if "upn" in changes or "admission_no" in changes:
                for attr, index in (("upn", people.by_upn), ("admission_no", people.by_adno)):
                    old_value = str(changes[attr][0]) if attr in changes else ""
                    if index.get(old_value) is user:
                        del index[old_value]
                _claim(people, user, r)
            if "username" in changes:
                renamed.append((old_name, user.username))
                people.by_username.pop(_key(old_name), None)
                people.by_username[_key(user.username)] = user
            if changes:
                user.updated_at = now
            if retire_now:
                pass
            elif changes:
                diff.updated.append((user.username, changes))
            else:
                diff.unchanged += 1
        done += 1
        if progress and done % _PROGRESS_EVERY == 0:
            progress(_PROGRESS_EVERY)

    # Missing from the source: retire its own people, unlink the ones it only linked.
    missing = [u for u in people.all if u.source == source and u.active and u.id not in seen]
    unlink = [] if source == "roster" else [
        u for u in people.all if u.source != "directory" and u.directory_dn and u.id not in seen]
    lost = len(missing) + sum(1 for u in unlink if u.active)
    if not force and base >= GUARD_MIN_PEOPLE and lost > max_retire_share * base:
        raise ImportRefused(
            f"this {source} would retire or unlink {lost} of {base} people ({lost / base:.0%}, more than the "
            f"{max_retire_share:.0%} allowed by identity.{_GUARD_SETTING.get(source, 'roster.max_retire_share')}): "
            "is the export complete? "
            "Nothing was changed; use --force to apply it anyway")

    for u in unlink:
        diff.updated.append((u.username, {"directory_dn": (u.directory_dn, None)}))
        diff.unlinked.append(u.username)
        u.directory_dn, u.updated_at = None, now
    retiring = missing + leavers
    for u in retiring:
        u.active, u.retired_at, u.updated_at = False, now, now
        diff.retired.append(u.username)

    session.add_all(new_people)
    session.flush()
    for old, new in renamed:  # the pupil keeps their devices' bindings; signed-in pages end
        session.execute(update(IpBinding).where(IpBinding.username == old).values(username=new))
        session.execute(delete(WebSession).where(WebSession.username == old))
    names = [u.username for u in retiring]
    for i in range(0, len(names), _IN_CHUNK):
        chunk = names[i:i + _IN_CHUNK]
        session.execute(delete(IpBinding).where(IpBinding.username.in_(chunk)))
        session.execute(delete(WebSession).where(WebSession.username.in_(chunk)))
    if progress and done % _PROGRESS_EVERY:
        progress(done % _PROGRESS_EVERY)
    return diff


def record_sync(database_url: str, source: str, origin: str, diff: PeopleDiff | None, *, ok: bool,
                dry_run: bool, error: str = "", started_at: datetime | None = None) -> None:
    """One identity_syncs row for this run, committed in its own transaction (also for refusals)."""
    from esafety.store.db import sessions  # noqa: PLC0415 - the store's engine only when writing

    finished = datetime.now(UTC)
    detail: dict[str, Any] = {}
    if diff is not None:
        detail = {"linked": len(diff.linked), "unlinked": len(diff.unlinked),
                  "created_sample": diff.created[:20], "retired_sample": diff.retired[:20]}
    with sessions(database_url)() as s:
        s.add(IdentitySync(source=source, origin=origin[:500], ok=ok, dry_run=dry_run,
                           started_at=started_at or finished, finished_at=finished,
                           created=len(diff.created) if diff else 0, updated=len(diff.updated) if diff else 0,
                           retired=len(diff.retired) if diff else 0, unchanged=diff.unchanged if diff else 0,
                           error=error[:4000], detail=detail))
        s.commit()
