"""`esafety registrations export | sync-leases | calendar-check | publish-aup` on a real store."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from esafety.cli import main
from esafety.registrations import decisions
from esafety.registrations.lifecycle import Actor
from esafety.registrations.prereqs import StaticCompliance
from esafety.registrations.workdays import SchoolCalendar
from esafety.store.db import sessions
from esafety.store.models import IpBinding
from tests.conftest import ROOT
from tests.support import wifi

MAC = "3c:22:fb:12:34:56"


def test_publish_export_and_sync(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ESAFETY_DATABASE_URL", database_url)
    monkeypatch.setenv("ESAFETY_HOME", str(tmp_path))
    text = tmp_path / "aup.txt"
    text.write_text(wifi.AUP_TEXT)
    assert main(["registrations", "publish-aup", str(text), "--version", "2026-09"]) == 0
    assert main(["registrations", "publish-aup", str(text), "--version", "2026-10"]) == 1  # same text
    wifi.add_pupil(database_url)
    wifi.accept(database_url, "sam.y9")
    reg_id = wifi.request_device(database_url, "sam.y9", MAC)
    with sessions(database_url)() as s:
        decisions.approve(s, reg_id, Actor("it", frozenset({"it_admin"})), "", StaticCompliance(), SchoolCalendar(),
                          "S", "http://d")
        s.commit()
    out = tmp_path / "allow.conf"
    assert main(["registrations", "export", "--format", "dnsmasq", "-o", str(out)]) == 0
    assert f"dhcp-host={MAC},set:registered" in out.read_text()
    capsys.readouterr()
    assert main(["registrations", "export", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith(f"{MAC},sam.y9,")
    with pytest.raises(SystemExit):
        main(["registrations", "export", "--format", "pdf"])
    leases = tmp_path / "dhcpd.leases"
    leases.write_text(f"lease 10.9.8.7 {{\n  ends never;\n  binding state active;\n  hardware ethernet {MAC};\n}}\n")
    assert main(["registrations", "sync-leases", str(leases)]) == 0
    assert "1 bound" in capsys.readouterr().out
    with sessions(database_url)() as s:
        assert [(b.ip, b.username, b.source) for b in s.scalars(select(IpBinding))] == [("10.9.8.7", "sam.y9", "wifi")]


def test_calendar_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registrations", "calendar-check", str(ROOT / "policies" / "calendar.yaml")]) == 0
    bad = tmp_path / "calendar.yaml"
    bad.write_text("working_days: [mon]\ninset_days:\n  - 2027-02-30\n")
    assert main(["registrations", "calendar-check", str(bad)]) == 1
    assert f"{bad}:3: '2027-02-30' is not a date" in capsys.readouterr().err
