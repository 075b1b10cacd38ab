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


def incident_csv(inc: Incident, events: list[IncidentEvent]) -> str:
    head = [("field", "value")]
    fields = [("reference", inc.ref), ("pupil", inc.subject), ("source", inc.source), ("category", inc.category),
              ("kcsie", inc.kcsie), ("level", inc.level), ("queue", inc.queue), ("state", inc.state),
              ("outcome", inc.outcome), ("occurred_at", inc.occurred_at), ("last_seen_at", inc.last_seen_at),
              ("count", inc.count), ("device", inc.device), ("client_ip", inc.client_ip), ("summary", inc.summary),
              ("evidence", inc.evidence)]
    hist = [("", ""), ("at", "actor", "action", "detail")] + [(e.at, e.actor, e.action, e.detail) for e in events]
    return _write([*head, *fields, *hist])


def chronology_csv(subject: str, entries: list[ChronologyEntry]) -> str:
    rows: list[Sequence[Any]] = [("pupil", subject),
                                 ("at", "reference", "category", "level", "action", "actor", "detail")]
    rows += [(e.at, e.incident.ref, e.incident.category, e.incident.level, e.action, e.actor, e.detail)
             for e in entries]
    return _write(rows)
