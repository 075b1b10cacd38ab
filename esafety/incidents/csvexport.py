"""CSV exports of an incident or a chronology, safe to open in a spreadsheet.

Evidence is attacker-controlled (URLs, page text): a cell starting with = + - @ or a tab/CR
would be run as a formula by Excel or LibreOffice, so such cells are prefixed with a quote.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from esafety.incidents.pupils import NOWHERE, Pupil, at_the_time
from esafety.incidents.queries import ChronologyEntry
from esafety.incidents.tables import IncidentEvent
from esafety.store.models import Incident

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def safe_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _write(rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    for row in rows:
        w.writerow([safe_cell(v) for v in row])
    return buf.getvalue()


def incident_csv(inc: Incident, events: list[IncidentEvent], pupil: Pupil | None = None) -> str:
    head = [("field", "value")]
    now, then = pupil.now if pupil else NOWHERE, at_the_time(inc)
    fields = [("reference", inc.ref), ("pupil", inc.subject), ("pupil_name", pupil.name if pupil else ""),
              ("year_group_now", now.year), ("tutor_group_now", now.tutor_group),
              ("year_group_at_the_time", then.year), ("tutor_group_at_the_time", then.tutor_group),
              ("source", inc.source), ("category", inc.category),
              ("kcsie", inc.kcsie), ("level", inc.level), ("queue", inc.queue), ("state", inc.state),
              ("outcome", inc.outcome), ("occurred_at", inc.occurred_at), ("last_seen_at", inc.last_seen_at),
              ("count", inc.count), ("device", inc.device), ("client_ip", inc.client_ip), ("summary", inc.summary),
              ("evidence", inc.evidence)]
    hist = [("", ""), ("at", "actor", "action", "detail")] + [(e.at, e.actor, e.action, e.detail) for e in events]
    return _write([*head, *fields, *hist])


def chronology_csv(subject: str, entries: list[ChronologyEntry], pupil: Pupil | None = None) -> str:
    now = pupil.now if pupil else NOWHERE
    rows: list[Sequence[Any]] = [("pupil", subject), ("name", pupil.name if pupil else ""),
                                 ("year_group_now", now.year), ("tutor_group_now", now.tutor_group),
                                 ("at", "reference", "category", "level", "year_group_then", "tutor_group_then",
                                  "action", "actor", "detail")]
    rows += [(e.at, e.incident.ref, e.incident.category, e.incident.level, at_the_time(e.incident).year,
              at_the_time(e.incident).tutor_group, e.action, e.actor, e.detail)
             for e in entries]
    return _write(rows)
