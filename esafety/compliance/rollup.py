"""A device's compliance state from its checks, exceptions and silence: a pure function, no I/O.

Each check contributes a state and the device takes the worst:
* pass, not_applicable, or any status excused by an active exception -> compliant
* error (the agent could not tell) or a failing non-critical check  -> warning
* a failing critical check -> in_grace until `grace` after it started failing, then noncompliant
Silence overrides from the other side: a device not heard from for heartbeat + stale_buffer is
stale, and after stale_limit noncompliant (a switched-off laptop and a killed agent look alike
here; esafety.compliance.tamper tells them apart by traffic from the device's address).
A device that has reported no checks yet, and is not stale, is pending.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from esafety.policy.schema import Compliance


class CheckStatus(enum.StrEnum):
    PASS = "pass"  # noqa: S105 - a check status
    FAIL = "fail"
    ERROR = "error"
    NOT_APPLICABLE = "not_applicable"


class DeviceState(enum.StrEnum):
    PENDING = "pending"
    COMPLIANT = "compliant"
    WARNING = "warning"
    IN_GRACE = "in_grace"
    STALE = "stale"
    NONCOMPLIANT = "noncompliant"


# Worst-of order. Stale ranks above in_grace: a device we cannot hear from may be failing anything.
RANK: dict[DeviceState, int] = {DeviceState.PENDING: 0, DeviceState.COMPLIANT: 0, DeviceState.WARNING: 1,
                                DeviceState.IN_GRACE: 2, DeviceState.STALE: 3, DeviceState.NONCOMPLIANT: 4}


@dataclass(frozen=True)
class Timing:
    heartbeat: timedelta
    grace: timedelta
    stale_buffer: timedelta
    stale_limit: timedelta

    @classmethod
    def from_policy(cls, c: Compliance) -> Timing:
        return cls(timedelta(seconds=c.heartbeat_seconds), timedelta(seconds=c.grace_seconds),
                   timedelta(seconds=c.stale_buffer_seconds), timedelta(seconds=c.stale_limit_seconds))

    @property
    def stale_after(self) -> timedelta:
        return self.heartbeat + self.stale_buffer


@dataclass(frozen=True)
class CheckFact:
    check_id: str
    status: CheckStatus
    critical: bool
    since: datetime  # when the check entered this status


@dataclass(frozen=True)
class CheckVerdict:
    check_id: str
    status: CheckStatus
    state: DeviceState  # what this check contributes
    excepted: bool = False
    grace_ends: datetime | None = None


@dataclass(frozen=True)
class Rollup:
    state: DeviceState
    checks: tuple[CheckVerdict, ...]
    silent_for: timedelta
    stale: bool  # silent past heartbeat + buffer (whatever the state)
    reasons: tuple[str, ...]  # why the state is what it is, for the device page

    def failing(self) -> list[str]:
        """Checks that fail and are not excused."""
        return [v.check_id for v in self.checks if v.status is CheckStatus.FAIL and not v.excepted]


def judge_check(fact: CheckFact, excepted: bool, now: datetime, grace: timedelta) -> CheckVerdict:
    if excepted or fact.status in (CheckStatus.PASS, CheckStatus.NOT_APPLICABLE):
        return CheckVerdict(fact.check_id, fact.status, DeviceState.COMPLIANT, excepted=excepted and
                            fact.status not in (CheckStatus.PASS, CheckStatus.NOT_APPLICABLE))
    if fact.status is CheckStatus.ERROR or not fact.critical:
        return CheckVerdict(fact.check_id, fact.status, DeviceState.WARNING)
    ends = fact.since + grace
    return CheckVerdict(fact.check_id, fact.status, DeviceState.IN_GRACE if now < ends else DeviceState.NONCOMPLIANT,
                        grace_ends=ends)


def rollup(checks: Iterable[CheckFact], excepted: frozenset[str], last_heard: datetime, now: datetime,
           timing: Timing) -> Rollup:
    """`last_heard`: the last report, or the enrolment time for a device that never reported."""
    verdicts = tuple(judge_check(f, f.check_id in excepted, now, timing.grace)
                     for f in sorted(checks, key=lambda f: f.check_id))
    silent = max(now - last_heard, timedelta(0))
    state, reasons = (DeviceState.COMPLIANT, []) if verdicts else (DeviceState.PENDING, ["no checks reported yet"])
    for v in verdicts:
        if RANK[v.state] > RANK[state]:
            state = v.state
        if v.state is not DeviceState.COMPLIANT:
            reasons.append(f"{v.check_id}: {v.status.value}" + (" (critical, in grace)" if v.state is
                                                                DeviceState.IN_GRACE else ""))
    stale = silent > timing.stale_after
    if silent > timing.stale_limit:
        state = DeviceState.NONCOMPLIANT
        reasons.insert(0, f"silent for {_human(silent)} (limit {_human(timing.stale_limit)})")
    elif stale:
        if RANK[DeviceState.STALE] > RANK[state]:
            state = DeviceState.STALE
        reasons.insert(0, f"silent for {_human(silent)} (heartbeat {_human(timing.heartbeat)})")
    return Rollup(state, verdicts, silent, stale, tuple(reasons))


def _human(d: timedelta) -> str:
    secs = int(d.total_seconds())
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= n:
            return f"{secs / n:.1f}{unit}" if secs % n else f"{secs // n}{unit}"
    return f"{secs}s"
