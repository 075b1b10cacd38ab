"""The working-day clock: due times across weekends, bank holidays and INSET days; calendar errors
name the file and line."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from esafety.registrations.workdays import CalendarFile, CalendarInvalid, SchoolCalendar, load_calendar, parse_calendar

ROOT = Path(__file__).resolve().parents[2]
LONDON = ZoneInfo("Europe/London")
WHOLE_DAYS = SchoolCalendar(closed={date(2026, 12, 28): "Boxing Day (substitute)", date(2026, 12, 25): "Christmas",
                                    date(2027, 1, 4): "INSET"})


def local(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=LONDON)


def test_friday_request_is_due_monday_at_the_same_time() -> None:
    cal = SchoolCalendar()
    assert cal.add_working_days(local(2026, 11, 20, 10)) == local(2026, 11, 23, 10)  # Fri -> Mon


def test_across_a_weekend_and_a_bank_holiday() -> None:
    # Thu 24 Dec 2026 14:00: Fri 25 (Christmas), Sat, Sun, Mon 28 (Boxing Day substitute) do not count.
    due = WHOLE_DAYS.add_working_days(local(2026, 12, 24, 14))
    assert due == local(2026, 12, 29, 14)
    assert WHOLE_DAYS.working_seconds(local(2026, 12, 24, 14), due) == 86400


def test_inset_day_after_a_weekend() -> None:
    # Fri 1 Jan 2027 is not listed here, so it counts; Mon 4 Jan is INSET.
    assert WHOLE_DAYS.add_working_days(local(2027, 1, 1, 9)) == local(2027, 1, 5, 9)


def test_saturday_request_counts_from_monday_morning() -> None:
    cal = SchoolCalendar()
    assert cal.add_working_days(local(2026, 11, 21, 15)) == local(2026, 11, 24, 0)  # end of Monday


def test_working_hours_are_honoured() -> None:
    cal = SchoolCalendar(start=time(8), end_minutes=16 * 60 + 30)
    assert cal.day_seconds == 8.5 * 3600
    assert cal.add_working_days(local(2026, 11, 20, 16)) == local(2026, 11, 23, 16)  # Fri 16:00 -> Mon 16:00
    assert cal.add_working_days(local(2026, 11, 20, 18)) == local(2026, 11, 23, 16, 30)  # after hours -> Mon close
    assert cal.add_working_days(local(2026, 11, 23, 7)) == local(2026, 11, 23, 16, 30)  # before opening: same day
    # Fri 16:00 to Mon 09:00: half an hour on Friday and one on Monday.
    assert cal.working_seconds(local(2026, 11, 20, 16), local(2026, 11, 23, 9)) == 1.5 * 3600


def test_dst_change_does_not_move_the_due_clock_time() -> None:
    cal = SchoolCalendar()
    # Clocks go back on Sun 25 Oct 2026; Fri 23 Oct 10:00 is due Mon 26 Oct 10:00 local time.
    assert cal.add_working_days(local(2026, 10, 23, 10)) == local(2026, 10, 26, 10)


def test_the_shipped_calendar_loads_with_bank_holidays() -> None:
    cal = load_calendar(ROOT / "policies" / "calendar.yaml")
    assert cal.closed[date(2026, 12, 25)] == "bank holiday"
    assert date(2027, 1, 4) in cal.closed
    assert cal.expiry_after(datetime(2026, 11, 22, tzinfo=UTC)) == datetime(2027, 8, 31, tzinfo=LONDON)
    # Christmas Eve 2026 15:00 with 08:00-16:30 hours: due Tue 29 Dec 14:30.
    assert cal.add_working_days(local(2026, 12, 24, 15)) == local(2026, 12, 29, 15)


def test_errors_name_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "calendar.yaml"
    p.write_text("timezone: Mars/Olympus\n"
                 "working_days: [mon, funday]\n"
                 "hours: \"17:00-08:00\"\n"
                 "bank_holidays:\n"
                 "  - 2026-12-25\n"
                 "  - 2026-13-01\n"
                 "closures:\n"
                 "  - {from: 2026-12-24, to: 2026-12-20}\n"
                 "colour: blue\n")
    with pytest.raises(CalendarInvalid) as exc:
        load_calendar(p)
    lines = {(e.line, e.message.split(" ")[0]) for e in exc.value.errors}
    text = str(exc.value)
    assert f"{p}:1: unknown timezone 'Mars/Olympus'" in text
    assert f"{p}:2: unknown day 'funday'" in text
    assert f"{p}:3: hours" in text
    assert f"{p}:6: '2026-13-01' is not a date" in text
    assert f"{p}:8: closure ends" in text
    assert f"{p}:9: unknown setting 'colour'" in text
    assert len(lines) == 6


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    with pytest.raises(CalendarInvalid) as exc:
        parse_calendar(tmp_path / "c.yaml", "timezone: Europe/London\nbank_holidays: [2026-12-25\n")
    assert exc.value.errors[0].line >= 2 and "YAML" in exc.value.errors[0].message


def test_a_bad_edit_keeps_the_last_good_calendar(tmp_path: Path) -> None:
    p = tmp_path / "calendar.yaml"
    p.write_text("bank_holidays: [2026-12-25]\n")
    holder = CalendarFile(p)
    assert date(2026, 12, 25) in holder.get().closed
    p.write_text("bank_holidays: [not-a-date]\n")
    import os
    os.utime(p, (p.stat().st_atime + 5, p.stat().st_mtime + 5))
    assert date(2026, 12, 25) in holder.get().closed


def test_a_calendar_with_no_working_days_is_an_error_not_a_hang() -> None:
    cal = SchoolCalendar(working_days=frozenset())
    with pytest.raises(ValueError):
        cal.add_working(datetime(2026, 1, 1, tzinfo=UTC), 60)
    assert cal.working_seconds(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
                               + timedelta(days=3)) == 0
