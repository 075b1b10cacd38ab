"""How a pupil's year and tutor group read on the incident pages, and which filter values count."""

from __future__ import annotations

import pytest

from esafety.incidents.pupils import Place, parse_tutor, parse_year, year_label


@pytest.mark.parametrize(("year", "label"), [(7, "Year 7"), (13, "Year 13"), (0, "Reception"), (-1, "Nursery 2"),
                                             (-2, "Nursery 1"), (None, "")])
def test_year_labels(year: int | None, label: str) -> None:
    assert year_label(year) == label


@pytest.mark.parametrize(("place", "label"), [(Place(8, "8RB"), "Year 8, 8RB"), (Place(8, ""), "Year 8"),
                                              (Place(None, "8RB"), "8RB"), (Place(None, ""), "-"),
                                              (Place(0, "RB"), "Reception, RB")])
def test_place_labels_never_show_none(place: Place, label: str) -> None:
    assert place.label == label


@pytest.mark.parametrize(("raw", "year"), [("8", 8), (" 12 ", 12), ("0", 0), ("-2", -2), ("14", 14), ("15", None),
                                           ("-3", None), ("--1", None), ("8.0", None), ("eight", None), ("", None),
                                           (None, None), ("٨", None), ("8 OR 1=1", None)])
def test_year_filter_values(raw: str | None, year: int | None) -> None:
    assert parse_year(raw) == year


@pytest.mark.parametrize(("raw", "tutor"), [("8RB", "8RB"), (" 8RB ", "8RB"), ("<script>", "<script>"),
                                            ("x" * 32, "x" * 32), ("x" * 33, None), ("8\x00RB", None), ("", None),
                                            (None, None)])
def test_tutor_filter_values(raw: str | None, tutor: str | None) -> None:
    assert parse_tutor(raw) == tutor
