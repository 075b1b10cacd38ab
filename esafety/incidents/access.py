"""Who may see and work which queue. One table, read by the dashboard and the API alike.

DSLs work every queue (a circumvention attempt can be a safeguarding matter); SLT and auditors
read every queue but change nothing; IT and the e-safety coordinator work only their own queue.
Pupil chronologies cross every queue, so only safeguarding roles see them.
"""

from __future__ import annotations

from collections.abc import Iterable

from esafety.policy.schema import QUEUES

ALL_QUEUES: frozenset[str] = frozenset(QUEUES)
SAFEGUARDING_WRITE: frozenset[str] = frozenset({"dsl", "deputy_dsl"})
SAFEGUARDING_READ: frozenset[str] = SAFEGUARDING_WRITE | {"slt", "auditor"}

READ: dict[str, frozenset[str]] = {
    "dsl": ALL_QUEUES,
    "deputy_dsl": ALL_QUEUES,
    "slt": ALL_QUEUES,
    "auditor": ALL_QUEUES,
    "it_admin": frozenset({"it_services"}),
    "esafety_coordinator": frozenset({"esafety_coordinator"}),
}
WRITE: dict[str, frozenset[str]] = {
    "dsl": ALL_QUEUES,
    "deputy_dsl": ALL_QUEUES,
    "it_admin": frozenset({"it_services"}),
    "esafety_coordinator": frozenset({"esafety_coordinator"}),
}
# Roles whose members receive a queue's email (immediate, digest).
NOTIFY: dict[str, tuple[str, ...]] = {
    "dsl": ("dsl", "deputy_dsl"),
    "it_services": ("it_admin",),
    "esafety_coordinator": ("esafety_coordinator",),
}
INCIDENT_ROLES: frozenset[str] = frozenset(READ)


def readable_queues(roles: Iterable[str]) -> frozenset[str]:
    return frozenset().union(*(READ.get(r, frozenset()) for r in roles))


def writable_queues(roles: Iterable[str]) -> frozenset[str]:
    return frozenset().union(*(WRITE.get(r, frozenset()) for r in roles))


def can_read_chronology(roles: Iterable[str]) -> bool:
    return bool(SAFEGUARDING_READ.intersection(roles))
