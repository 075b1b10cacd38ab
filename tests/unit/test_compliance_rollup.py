"""The device rollup: worst-of, grace for critical failures, exceptions, staleness. Pure, so every
case is a plain call with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from esafety.compliance.rollup import CheckFact, CheckStatus, DeviceState, Timing, judge_check, rollup
from esafety.policy.schema import Compliance

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
T = Timing(heartbeat=timedelta(seconds=60), grace=timedelta(hours=24), stale_buffer=timedelta(seconds=120),
           stale_limit=timedelta(days=3))
P, F, E, NA = CheckStatus.PASS, CheckStatus.FAIL, CheckStatus.ERROR, CheckStatus.NOT_APPLICABLE


def fact(check: str, status: CheckStatus, critical: bool = False, ago: timedelta = timedelta(0)) -> CheckFact:
    return CheckFact(check, status, critical, NOW - ago)


def state(*facts: CheckFact, excepted: frozenset[str] = frozenset(), silent: timedelta = timedelta(0)) -> DeviceState:
    return rollup(facts, excepted, NOW - silent, NOW, T).state


def test_all_passing_or_not_applicable_is_compliant() -> None:
    assert state(fact("os_updates", P, True), fact("hotspot", NA, True), fact("screen_lock", P)) \
        is DeviceState.COMPLIANT


def test_no_checks_yet_is_pending_until_stale() -> None:
    assert state() is DeviceState.PENDING
    assert state(silent=timedelta(minutes=5)) is DeviceState.STALE


def test_a_non_critical_failure_or_any_error_is_a_warning() -> None:
    assert state(fact("os_updates", P, True), fact("screen_lock", F)) is DeviceState.WARNING
    assert state(fact("antivirus", E, True)) is DeviceState.WARNING


def test_a_critical_failure_is_in_grace_then_noncompliant() -> None:
    assert state(fact("p2p_clients", F, True, ago=timedelta(hours=23, minutes=59))) is DeviceState.IN_GRACE
    assert state(fact("p2p_clients", F, True, ago=timedelta(hours=24))) is DeviceState.NONCOMPLIANT
    r = rollup([fact("p2p_clients", F, True, ago=timedelta(hours=1))], frozenset(), NOW, NOW, T)
    assert r.checks[0].grace_ends == NOW + timedelta(hours=23) and r.failing() == ["p2p_clients"]


def test_worst_of_wins() -> None:
    assert state(fact("screen_lock", F), fact("p2p_clients", F, True, ago=timedelta(hours=1)),
                 fact("os_updates", P, True)) is DeviceState.IN_GRACE
    assert state(fact("screen_lock", F), fact("p2p_clients", F, True, ago=timedelta(days=2)),
                 fact("hotspot", F, True, ago=timedelta(minutes=1))) is DeviceState.NONCOMPLIANT


def test_an_active_exception_excuses_its_check_only() -> None:
    listening = fact("listening_servers", F)
    p2p = fact("p2p_clients", F, True, ago=timedelta(days=5))
    assert state(listening, excepted=frozenset({"listening_servers"})) is DeviceState.COMPLIANT
    assert state(listening, p2p, excepted=frozenset({"listening_servers"})) is DeviceState.NONCOMPLIANT
    assert state(p2p, excepted=frozenset({"p2p_clients"})) is DeviceState.COMPLIANT
    r = rollup([listening], frozenset({"listening_servers"}), NOW, NOW, T)
    assert r.checks[0].excepted and r.failing() == []
    # An exception on a passing check is not shown as "excepted": nothing is being excused.
    assert not judge_check(fact("hotspot", P, True), True, NOW, T.grace).excepted


def test_silence_makes_stale_after_heartbeat_plus_buffer_then_noncompliant_after_the_limit() -> None:
    ok = fact("os_updates", P, True)
    assert state(ok, silent=timedelta(seconds=180)) is DeviceState.COMPLIANT
    r = rollup([ok], frozenset(), NOW - timedelta(seconds=181), NOW, T)
    assert r.state is DeviceState.STALE and r.stale and r.reasons[0].startswith("silent for 3.0m")
    assert state(ok, silent=timedelta(days=3, seconds=1)) is DeviceState.NONCOMPLIANT
    # Stale outranks in_grace (a silent device may be failing anything) but not noncompliant.
    assert state(fact("p2p_clients", F, True, ago=timedelta(hours=1)), silent=timedelta(minutes=10)) \
        is DeviceState.STALE
    assert state(fact("p2p_clients", F, True, ago=timedelta(days=2)), silent=timedelta(minutes=10)) \
        is DeviceState.NONCOMPLIANT


def test_a_clock_behind_the_last_report_is_not_negative_silence() -> None:
    r = rollup([fact("os_updates", P, True)], frozenset(), NOW + timedelta(minutes=5), NOW, T)
    assert r.silent_for == timedelta(0) and r.state is DeviceState.COMPLIANT


def test_reasons_say_why() -> None:
    r = rollup([fact("screen_lock", F), fact("hotspot", F, True)], frozenset(), NOW, NOW, T)
    assert r.reasons == ("hotspot: fail (critical, in grace)", "screen_lock: fail")


@pytest.mark.parametrize(("heartbeat", "buffer", "expected"), [(60, 120, 180), (5, 0, 5)])
def test_timing_from_the_policy(heartbeat: int, buffer: int, expected: int) -> None:
    t = Timing.from_policy(Compliance(heartbeat_seconds=heartbeat, stale_buffer_seconds=buffer))
    assert t.stale_after == timedelta(seconds=expected)
