"""Year and tutor group on incidents: the queue's filters, the incident page, the chronology, the
JSON API and the CSV exports, on SQLite and PostgreSQL. Today's year and tutor group come from
`users`; the one "at the time" is the snapshot ingest takes when the incident is stored."""

from __future__ import annotations

import csv
import html
import io
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from dashboard.app import create_app
from esafety.incidents.ingest import ingest
from esafety.incidents.model import IncidentReport
from esafety.incidents.pipeline import run_until_done
from esafety.incidents.tables import IncidentEvent
from esafety.policy.loader import load_policy
from esafety.store.db import get_engine, sessions
from esafety.store.models import Incident
from esafety.webauth import ApiToken, token_hash
from tests.support.dsl import POLICY_PATH, add_role_users, csrf_of, raise_incident, settings_for, signed_in
from tests.support.pupils import add_pupil, move_pupil

HOSTILE = "<script>alert(1)</script>"


def _rows(page: str) -> dict[int, str]:
    """The queue's rows on this page: incident id -> its Year / Tutor cell as text."""
    cells = re.findall(r'data-incident="(\d+)">.*?<td class="year-tutor">(.*?)</td>', page, re.S)
    return {int(i): html.unescape(label) for i, label in cells}


def _ids(client: TestClient, query: str) -> set[int]:
    r = client.get(f"/incidents?{query}")
    assert r.status_code == 200, r.text
    return set(_rows(r.text))


@pytest.fixture
def school(database_url: str, tmp_path: Path) -> dict[str, Any]:
    """Amy and Ben in Year 8 (8RB, 8JS), Cal in Year 9, Eve in a tutor group named like a script,
    and incidents for them, for an unknown username and for a bare IP address."""
    add_role_users(database_url)
    add_pupil(database_url, "amy", 8, "8RB", "Amy Pond")
    add_pupil(database_url, "ben", 8, "8JS", "Ben Jones")
    add_pupil(database_url, "cal", 9, "9XY", "Cal Smith")
    add_pupil(database_url, "eve", 10, HOSTILE, "Eve <b>Bold</b>")
    inc = {
        "amy_harm": raise_incident(database_url, "self_harm", 4, "amy"),
        "amy_vpn": raise_incident(database_url, "vpn", 2, "amy"),
        "ben_harm": raise_incident(database_url, "self_harm", 3, "ben"),
        "cal_harm": raise_incident(database_url, "self_harm", 4, "cal"),
        "eve_harm": raise_incident(database_url, "self_harm", 3, "eve"),
        "stranger": raise_incident(database_url, "self_harm", 3, "visitor9"),
    }
    pol = load_policy(POLICY_PATH)
    with sessions(database_url)() as s:  # no subject at all: a sensor saw an address
        inc["ip_only"] = ingest(s, [IncidentReport(source="sensor", category="vpn", level=2, summary="WireGuard",
                                                   client_ip="10.0.0.9")], pol)[0]
        s.commit()
    run_until_done(database_url, pol, "http://dash.test")
    app = create_app(settings_for(database_url, tmp_path))
    return {"app": app, "ids": {k: v.id for k, v in inc.items()}, "url": database_url}


def test_queue_filters_by_year_and_tutor_group(school: dict[str, Any]) -> None:
    ids, dsl = school["ids"], signed_in(school["app"], "dsl")
    everything = _ids(dsl, "")
    assert everything == set(ids.values())

    assert _ids(dsl, "year=8") == {ids["amy_harm"], ids["amy_vpn"], ids["ben_harm"]}
    assert _ids(dsl, "year=9") == {ids["cal_harm"]}
    assert _ids(dsl, "tutor=8RB") == {ids["amy_harm"], ids["amy_vpn"]}
    assert _ids(dsl, "year=8&tutor=8JS") == {ids["ben_harm"]}
    assert _ids(dsl, "year=9&tutor=8RB") == set()  # both must hold
    assert _ids(dsl, "year=7") == set()  # a real year with nobody in it matches nothing
    # With the other filters: level, queue and state.
    assert _ids(dsl, "year=8&level=4") == {ids["amy_harm"]}
    assert _ids(dsl, "year=8&queue=it_services") == {ids["amy_vpn"]}
    page = dsl.get(f"/incidents/{ids['amy_harm']}")
    r = dsl.post(f"/incidents/{ids['amy_harm']}/transition",
                 data={"action": "acknowledge", "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303
    assert _ids(dsl, "year=8&state=triage") == {ids["amy_harm"]}
    assert _ids(dsl, "year=8&state=new") == {ids["amy_vpn"], ids["ben_harm"]}

    # Values outside the allowed ones are ignored, as the other filters' are.
    for bad in ("year=abc", "year=99", "year=8%20OR%201%3D1", "year=--1", "tutor=" + "x" * 40, "tutor=8%00RB",
                "year=", "tutor=%20"):
        assert _ids(dsl, bad) == everything, bad

    # What the DSL sees: the column, and the dropdowns built from the people in the roster.
    q = dsl.get("/incidents").text
    labels = _rows(q)
    assert labels[ids["amy_harm"]] == "Year 8, 8RB"
    assert labels[ids["cal_harm"]] == "Year 9, 9XY"
    assert labels[ids["stranger"]] == "-" and labels[ids["ip_only"]] == "-"  # nobody known: a plain dash
    assert "<th>Year / Tutor</th>" in q and "Amy Pond" in q
    year_select = re.search(r'<select name="year".*?</select>', q, re.S)
    assert year_select is not None
    assert re.findall(r'<option value="(-?\d+)"', year_select.group(0)) == ["8", "9", "10"]
    assert '<optgroup label="Year 8"><option value="8JS" >8JS</option><option value="8RB" >8RB</option>' in q
    filtered = dsl.get("/incidents?year=8&tutor=8RB").text
    assert '<option value="8" selected>Year 8</option>' in filtered
    assert '<option value="8RB" selected>8RB</option>' in filtered


def test_pagination_keeps_the_year_and_tutor_filters(database_url: str, tmp_path: Path) -> None:
    add_role_users(database_url)
    for n in range(60):
        add_pupil(database_url, f"y7p{n:02d}", 7, "7AB" if n % 2 else "7CD")
    add_pupil(database_url, "older", 11, "11Z")
    pol = load_policy(POLICY_PATH)
    reports = [IncidentReport(source="proxy", category="self_harm", level=3, summary="search", subject=f"y7p{n:02d}")
               for n in range(60)] + [IncidentReport(source="proxy", category="self_harm", level=5, summary="search",
                                                     subject="older")]
    with sessions(database_url)() as s:
        ingest(s, reports, pol)
        s.commit()
    run_until_done(database_url, pol, "http://dash.test")
    dsl = signed_in(create_app(settings_for(database_url, tmp_path)), "dsl")

    first = dsl.get("/incidents?year=7").text
    assert "61 matching" not in first and "60 matching" in first and "Page 1 of 2" in first
    nxt = re.search(r'<a href="([^"]+)" rel="next">', first)
    assert nxt is not None
    href = html.unescape(nxt.group(1))
    assert "year=7" in href and "page=2" in href
    second = dsl.get(href).text
    assert "Page 2 of 2" in second and set(_rows(second).values()) <= {"Year 7, 7AB", "Year 7, 7CD"}
    assert len(_rows(first)) + len(_rows(second)) == 60

    by_tutor = dsl.get("/incidents?year=7&tutor=7AB").text
    assert "30 matching" in by_tutor and set(_rows(by_tutor).values()) == {"Year 7, 7AB"}
    assert "Page 1 of 1" in by_tutor


def test_incident_page_and_chronology_show_now_and_at_the_time(school: dict[str, Any]) -> None:
    ids, url, dsl = school["ids"], school["url"], signed_in(school["app"], "dsl")
    page = dsl.get(f"/incidents/{ids['amy_harm']}").text
    assert "Amy Pond" in page
    assert re.search(r'id="pupil-now">Year 8, 8RB<', page)
    assert re.search(r'id="pupil-then">Year 8, 8RB at the time<', page)

    move_pupil(url, "amy", 9, "9RB")  # September: the next roster import moves her up
    later = raise_incident(url, "extremism", 4, "amy", summary="a second concern", key="amy-second")
    page = dsl.get(f"/incidents/{ids['amy_harm']}").text
    assert re.search(r'id="pupil-now">Year 9, 9RB<', page)  # who to talk to today
    assert re.search(r'id="pupil-then">Year 8, 8RB at the time<', page)  # what it was then
    assert _ids(dsl, "year=8") == {ids["ben_harm"]}  # the filter is on today's year
    assert ids["amy_harm"] in _ids(dsl, "year=9&tutor=9RB")

    chron = dsl.get("/pupils/amy/chronology").text
    assert re.search(r'id="pupil-name">Amy Pond<', chron) and re.search(r'id="pupil-now">Year 9, 9RB<', chron)
    then = re.findall(r'<a href="/incidents/(\d+)">.*?<td class="then">(.*?)</td>', chron, re.S)
    assert {(int(i), label) for i, label in then} >= {(ids["amy_harm"], "Year 8, 8RB"),
                                                      (ids["amy_vpn"], "Year 8, 8RB"), (later.id, "Year 9, 9RB")}

    body = dsl.get("/pupils/amy/chronology.csv").text
    rows = list(csv.reader(io.StringIO(body)))
    assert ["name", "Amy Pond"] in rows and ["year_group_now", "Year 9"] in rows
    head = next(r for r in rows if r and r[0] == "at")
    refs = {r[head.index("reference")]: (r[head.index("year_group_then")], r[head.index("tutor_group_then")])
            for r in rows[rows.index(head) + 1:]}
    assert refs[later.ref] == ("Year 9", "9RB") and ("Year 8", "8RB") in refs.values()

    fields = dict(r for r in csv.reader(io.StringIO(dsl.get(f"/incidents/{ids['amy_harm']}/export.csv").text))
                  if len(r) == 2)
    assert (fields["pupil_name"], fields["year_group_now"], fields["tutor_group_now"]) == ("Amy Pond", "Year 9", "9RB")
    assert (fields["year_group_at_the_time"], fields["tutor_group_at_the_time"]) == ("Year 8", "8RB")

    # The place at the time is in the hash-chained history too, where an edit of the row cannot hide it.
    with sessions(url)() as s:
        raised = s.scalar(select(IncidentEvent.detail).where(IncidentEvent.incident_id == ids["amy_harm"],
                                                             IncidentEvent.action == "raised"))
        assert raised and (raised["year_group"], raised["tutor_group"]) == (8, "8RB")
        stranger = s.scalar(select(IncidentEvent.detail).where(IncidentEvent.incident_id == ids["stranger"],
                                                               IncidentEvent.action == "raised"))
        assert stranger is not None and "year_group" not in stranger

    # People with no year or tutor group show a plain dash, not "None" or an empty "Year".
    for key in ("stranger", "ip_only"):
        page = dsl.get(f"/incidents/{ids[key]}").text
        assert re.search(r'id="pupil-now">-<', page) and re.search(r'id="pupil-then">-<', page)
    staff = raise_incident(url, "self_harm", 3, "coord", key="staff-subject")  # a staff account: no year
    page = dsl.get(f"/incidents/{staff.id}").text
    assert re.search(r'id="pupil-now">-<', page) and re.search(r'id="pupil-then">-<', page)
    assert not re.search(r"Year None|>None, |pupil-name", page)


def test_a_hostile_tutor_group_is_shown_as_text(school: dict[str, Any]) -> None:
    ids, dsl = school["ids"], signed_in(school["app"], "dsl")
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    pages = {"queue": dsl.get("/incidents").text, "incident": dsl.get(f"/incidents/{ids['eve_harm']}").text,
             "chronology": dsl.get("/pupils/eve/chronology").text,
             "filtered": dsl.get("/incidents", params={"tutor": HOSTILE}).text}
    for name, text in pages.items():
        assert HOSTILE not in text and "<b>Bold</b>" not in text, name
        assert escaped in text, name
    assert "Eve &lt;b&gt;Bold&lt;/b&gt;" in pages["incident"]
    # The filter binds it as a value: it finds Eve's incident and nothing else.
    assert set(_rows(pages["filtered"])) == {ids["eve_harm"]}
    assert f'<option value="{escaped}" selected>{escaped}</option>' in pages["filtered"]


def test_json_api_lists_year_and_tutor_and_takes_the_filters(school: dict[str, Any]) -> None:
    ids, app = school["ids"], school["app"]
    dsl = signed_in(app, "dsl")
    r = dsl.get("/api/incidents", params={"year": "8"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["filters"] == {"state": "open", "year": "8"} and body["total"] == 3
    by_id = {i["id"]: i for i in body["incidents"]}
    assert set(by_id) == {ids["amy_harm"], ids["amy_vpn"], ids["ben_harm"]}
    amy = by_id[ids["amy_harm"]]
    assert amy["pupil"] == {"name": "Amy Pond", "year_group": 8, "tutor_group": "8RB", "label": "Year 8, 8RB"}
    assert amy["at_the_time"] == {"year_group": 8, "tutor_group": "8RB", "label": "Year 8, 8RB"}

    only = dsl.get("/api/incidents", params={"year": "8", "tutor": "8RB", "level": "4"}).json()
    assert [i["id"] for i in only["incidents"]] == [ids["amy_harm"]]
    ignored = dsl.get("/api/incidents", params={"year": "eight", "tutor": "x" * 40}).json()
    assert ignored["total"] == len(ids) and ignored["filters"] == {"state": "open"}
    unknown = {i["id"]: i for i in ignored["incidents"]}
    assert unknown[ids["stranger"]]["pupil"] is None
    assert unknown[ids["stranger"]]["at_the_time"] == {"year_group": None, "tutor_group": None, "label": "-"}
    assert unknown[ids["ip_only"]]["at_the_time"] is None

    it = signed_in(app, "itadmin").get("/api/incidents", params={"year": "8"}).json()
    assert [i["id"] for i in it["incidents"]] == [ids["amy_vpn"]]  # only the queues the role reads

    with sessions(school["url"])() as s:
        s.add(ApiToken(name="sensor-hall", token_hash=token_hash("sensor-hall-token")))
        s.commit()
    anon = TestClient(app)
    assert anon.get("/api/incidents").status_code == 401
    r = anon.get("/api/incidents", headers={"Authorization": "Bearer sensor-hall-token"})
    assert r.status_code == 403  # a sensor's token raises incidents; it never reads pupils back


def test_ingest_snapshots_a_batch_with_one_users_lookup(database_url: str) -> None:
    for n in range(120):
        add_pupil(database_url, f"p{n}", 7 + n % 5, f"{7 + n % 5}T{n % 3}")
    reports = [IncidentReport(source="proxy", category="gambling", level=2, summary="bet", subject=f"p{n}")
               for n in range(120)]
    reports.append(IncidentReport(source="proxy", category="gambling", level=2, summary="bet", subject="ghost"))
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = get_engine(database_url)
    event.listen(engine, "before_cursor_execute", seen)
    try:
        with sessions(database_url)() as s:
            created = ingest(s, reports, load_policy(POLICY_PATH))
            s.commit()
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(created) == 121
    assert sum(1 for st in statements if re.search(r"\bFROM users\b", st)) == 1
    with sessions(database_url)() as s:
        got = {i.subject: (i.subject_year_group, i.subject_tutor_group) for i in s.query(Incident)}
    assert got["p0"] == (7, "7T0") and got["p119"] == (11, "11T2")
    assert got["ghost"] == (None, None)  # not a known user: nothing recorded, shown as "-"
