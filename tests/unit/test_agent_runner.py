"""The check runner on this machine: a missing or slow program, a hung OS query and a check that
raises each cost only their own check (`error` with the reason), never the run."""

from __future__ import annotations

import time

import pytest

from agent.checks import linux
from agent.checks.base import CommandMissing, CommandTimeout, Ctx, Proc, Settings
from agent.checks.host import LocalHost
from agent.checks.runner import check_ids, run_checks
from agent.monitor import Monitor
from esafety.compliance.catalogue import CATALOGUE


class HungProcessList(LocalHost):
    """This machine, except that listing processes never returns (a wedged /proc reader)."""

    def processes(self) -> list[Proc]:
        time.sleep(30)
        return []


def ctx(host: LocalHost, timeout: int = 10) -> Ctx:
    return Ctx(host, Settings(check_timeout_seconds=timeout), Monitor())


def test_every_catalogue_check_has_a_linux_implementation():
    assert check_ids("linux") == [c.id for c in CATALOGUE]


def test_a_missing_program_and_a_slow_one_are_reported_not_raised():
    host = LocalHost()
    with pytest.raises(CommandMissing, match="no-such-tool"):
        host.run(["no-such-tool", "--version"], 5)
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout, match="longer than 0.5 s"):
        host.run(["sleep", "20"], 0.5)
    assert time.monotonic() - t0 < 10  # the child was killed, not waited for


def test_a_hung_check_is_an_error_and_the_others_still_report():
    t0 = time.monotonic()
    out = {o.id: o for o in run_checks(ctx(HungProcessList(), timeout=1))}
    assert time.monotonic() - t0 < 15
    assert out["p2p_clients"].status == "error" and "longer than 1 s" in out["p2p_clients"].evidence["error"]
    assert out["local_admins"].status == "pass" and "root" in out["local_admins"].evidence["administrators"]
    assert out["safeguarding_monitor"].status in ("pass", "fail")
    assert len(out) == len(CATALOGUE)


def test_a_check_that_raises_costs_only_itself(monkeypatch: pytest.MonkeyPatch):
    def broken(_: Ctx):
        raise KeyError("lock-enabled")

    monkeypatch.setitem(linux.CHECKS, "screen_lock", broken)
    out = {o.id: o for o in run_checks(ctx(LocalHost()))}
    assert out["screen_lock"].status == "error" and "KeyError" in out["screen_lock"].evidence["error"]
    assert out["local_admins"].status == "pass"
    assert all(o.duration_ms >= 0 and o.checked_at.tzinfo is not None for o in out.values())


def test_unchanged_results_compare_equal_so_no_diff_is_sent():
    first = {o.id: (o.status, o.evidence) for o in run_checks(ctx(LocalHost()), only=["local_admins", "hotspot"])}
    second = {o.id: (o.status, o.evidence) for o in run_checks(ctx(LocalHost()), only=["local_admins", "hotspot"])}
    assert first == second and list(first["local_admins"][1]) == sorted(first["local_admins"][1])
