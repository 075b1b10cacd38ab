"""The school calendar and the working-day clock: "IT processes a request within 1 working day".

The calendar is a YAML file the school edits (policies/calendar.yaml):

    timezone: Europe/London
    working_days: [mon, tue, wed, thu, fri]
    hours: "08:00-16:30"          # working hours; "00:00-24:00" counts whole days
    bank_holidays: [2026-12-25, ...]
    inset_days: [2027-01-04, ...]
    closures: [{from: 2026-12-21, to: 2027-01-01, name: Christmas}]   # optional
    registrations_expire: "08-31"  # optional: approved devices expire on this day each year

Working time is counted on the school's wall clock (local time, no DST jumps): one working day
is the length of `hours`. A request submitted at 10:00 on a Friday is due at 10:00 on Monday,
or Tuesday when Monday is a bank holiday; one submitted on a Saturday is due at the end of Monday.
Errors name the file and line, like the policy loader's, and a bad file never half-loads.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from esafety.policy.loader import PolicyError, PolicyInvalid, _Doc

log = logging.getLogger("esafety.registrations")
DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_HOURS = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
_MONTH_DAY = re.compile(r"^(\d{2})-(\d{2})$")
KEYS = {"timezone", "working_days", "hours", "bank_holidays", "inset_days", "closures", "registrations_expire"}
MAX_SCAN_DAYS = 3700  # ten years: a calendar that closes every day is an error, not a hang


class CalendarInvalid(PolicyInvalid):
    """Every problem in the file, each with file:line."""


class _CalendarDoc(_Doc):
    """The policy loader's line-tracking document, but a scalar YAML cannot construct (2026-13-01
    looks like a date to YAML and raises) stays its text, so it is reported with its line."""

    def _plain(self, node: yaml.Node, path: tuple[Any, ...]) -> Any:
        try:
            return super()._plain(node, path)
        except ValueError:
            if isinstance(node, yaml.ScalarNode):
                return str(node.value)
            raise


@dataclass(frozen=True)
class SchoolCalendar:
    timezone: str = "Europe/London"
    working_days: frozenset[int] = frozenset(range(5))
    start: time = time(0, 0)
    end_minutes: int = 24 * 60  # minutes after midnight the working day ends (1440 = midnight)
    closed: dict[date, str] = field(default_factory=dict)  # date -> why (bank holiday, INSET, closure)
    expire_on: tuple[int, int] | None = None  # (month, day)
    source: str = "<default>"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def day_seconds(self) -> float:
        return (self.end_minutes - (self.start.hour * 60 + self.start.minute)) * 60.0

    def is_working_day(self, d: date) -> bool:
        return d.weekday() in self.working_days and d not in self.closed

    def _window(self, d: date) -> tuple[datetime, datetime]:
        """The working hours of day `d`, as local wall-clock (naive) datetimes."""
        return datetime.combine(d, self.start), datetime.combine(d, time(0)) + timedelta(minutes=self.end_minutes)

    def _local(self, dt: datetime) -> datetime:
        dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
        return dt.astimezone(self.tz).replace(tzinfo=None)

    def _utc(self, local: datetime) -> datetime:
        return local.replace(tzinfo=self.tz).astimezone(UTC)

    def add_working(self, start: datetime, seconds: float) -> datetime:
        """The earliest moment at which `seconds` of working time have passed since `start`."""
        t = self._local(start)
        remaining = max(seconds, 0.0)
        d = t.date()
        for _ in range(MAX_SCAN_DAYS):
            if self.is_working_day(d):
                ws, we = self._window(d)
                begin = max(ws, t)
                if begin < we:
                    available = (we - begin).total_seconds()
                    if remaining <= available:
                        return self._utc(begin + timedelta(seconds=remaining))
                    remaining -= available
            d += timedelta(days=1)
            t = datetime.combine(d, time(0))
        raise ValueError(f"{self.source}: no working day in ten years")

    def add_working_days(self, start: datetime, days: float = 1.0) -> datetime:
        return self.add_working(start, days * self.day_seconds)

    def working_seconds(self, a: datetime, b: datetime) -> float:
        """Working time between two moments (0 when b is before a)."""
        la, lb = self._local(a), self._local(b)
        if lb <= la:
            return 0.0
        total = 0.0
        d = la.date()
        while d <= lb.date():
            if self.is_working_day(d):
                ws, we = self._window(d)
                lo, hi = max(ws, la), min(we, lb)
                if hi > lo:
                    total += (hi - lo).total_seconds()
            d += timedelta(days=1)
        return total

    def expiry_after(self, moment: datetime) -> datetime | None:
        """The next `registrations_expire` day (start of day, school time) after `moment`."""
        if self.expire_on is None:
            return None
        local = self._local(moment)
        month, day = self.expire_on
        for year in (local.year, local.year + 1):
            try:
                candidate = datetime(year, month, day)
            except ValueError:  # 02-29 in a common year
                candidate = datetime(year, month, 28)
            if candidate > local:
                return self._utc(candidate)
        return None


def _date(doc: _Doc, path: tuple[Any, ...], value: Any) -> date | None:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    doc.error(path, f"'{value}' is not a date (write YYYY-MM-DD)")
    return None


def _dates(doc: _Doc, data: dict[str, Any], key: str, label: str, out: dict[date, str]) -> None:
    value = data.get(key, [])
    if value is None:
        return
    if not isinstance(value, list):
        doc.error((key,), f"'{key}' must be a list of dates")
        return
    for i, v in enumerate(value):
        d = _date(doc, (key, i), v)
        if d is not None:
            out.setdefault(d, label)


def _closures(doc: _Doc, data: dict[str, Any], out: dict[date, str]) -> None:
    value = data.get("closures", [])
    if not isinstance(value, list):
        doc.error(("closures",), "'closures' must be a list of {from, to, name}")
        return
    for i, c in enumerate(value):
        p = ("closures", i)
        if not isinstance(c, dict) or "from" not in c or "to" not in c:
            doc.error(p, "a closure needs 'from' and 'to' dates")
            continue
        lo, hi = _date(doc, (*p, "from"), c["from"]), _date(doc, (*p, "to"), c["to"])
        if lo is None or hi is None:
            continue
        if hi < lo:
            doc.error((*p, "to"), f"closure ends ({hi}) before it starts ({lo})")
            continue
        if (hi - lo).days > 366:
            doc.error((*p, "to"), "a closure longer than a year is surely a typo")
            continue
        name = str(c.get("name", "closure"))
        for n in range((hi - lo).days + 1):
            out.setdefault(lo + timedelta(days=n), name)


def _hours(doc: _Doc, value: Any) -> tuple[time, int] | None:
    m = _HOURS.match(str(value).strip()) if isinstance(value, str) else None
    if not m:
        doc.error(("hours",), f"hours must look like \"08:00-16:30\", not {value!r}")
        return None
    h1, m1, h2, m2 = (int(x) for x in m.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60 or end <= start:
        doc.error(("hours",), f"hours {value!r}: the end must be after the start, within one day")
        return None
    return time(h1, m1), end


def _working_days(doc: _Doc, value: Any) -> frozenset[int] | None:
    if not isinstance(value, list) or not value:
        doc.error(("working_days",), "working_days must be a list such as [mon, tue, wed, thu, fri]")
        return None
    days = set()
    for i, v in enumerate(value):
        if str(v).lower() not in DAYS:
            doc.error(("working_days", i), f"unknown day '{v}' (use mon, tue, wed, thu, fri, sat, sun)")
            continue
        days.add(DAYS[str(v).lower()])
    return frozenset(days)


def parse_calendar(path: Path, text: str) -> SchoolCalendar:
    try:
        doc = _CalendarDoc(path, text)
    except PolicyInvalid as exc:
        raise CalendarInvalid(exc.errors) from exc
    data = doc.data
    if not isinstance(data, dict):
        raise CalendarInvalid([PolicyError(str(path), 1, "a calendar is a mapping of settings")])
    for key in data:
        if key not in KEYS:
            doc.error((key,), f"unknown setting '{key}' (expected one of {', '.join(sorted(KEYS))})")
    tz = str(data.get("timezone", "Europe/London"))
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        doc.error(("timezone",), f"unknown timezone '{tz}'")
    days = _working_days(doc, data.get("working_days", ["mon", "tue", "wed", "thu", "fri"]))
    hours = _hours(doc, data.get("hours", "00:00-24:00"))
    closed: dict[date, str] = {}
    _dates(doc, data, "bank_holidays", "bank holiday", closed)
    _dates(doc, data, "inset_days", "INSET day", closed)
    _closures(doc, data, closed)
    expire_on = None
    if data.get("registrations_expire") is not None:
        m = _MONTH_DAY.match(str(data["registrations_expire"]))
        if not m or not (1 <= int(m[1]) <= 12 and 1 <= int(m[2]) <= 31):
            doc.error(("registrations_expire",), "registrations_expire must be \"MM-DD\", e.g. \"08-31\"")
        else:
            expire_on = (int(m[1]), int(m[2]))
    if doc.errors or days is None or hours is None:
        raise CalendarInvalid(doc.errors)
    return SchoolCalendar(tz, days, hours[0], hours[1], closed, expire_on, str(path))


def load_calendar(path: str | Path) -> SchoolCalendar:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CalendarInvalid([PolicyError(str(path), 0, f"cannot read calendar: {exc.strerror}")]) from exc
    return parse_calendar(path, text)


class CalendarFile:
    """The calendar, reloaded when the file changes. A bad edit keeps the last good calendar;
    with none yet (or no file), Monday to Friday with no holidays, and a warning in the log."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._calendar = SchoolCalendar()

    def get(self) -> SchoolCalendar:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return self._calendar
        with self._lock:
            if mtime != self._mtime:
                try:
                    self._calendar = load_calendar(self.path)
                except CalendarInvalid as exc:
                    log.warning("calendar not (re)loaded; keeping the previous one",
                                extra={"fields": {"error": str(exc)}})
                self._mtime = mtime
            return self._calendar
