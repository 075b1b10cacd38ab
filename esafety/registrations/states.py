"""The registration state machine: which transitions exist, who may take them, what each needs.

    submitted -> pending_approval -> approved -> active <-> quarantined -> revoked | expired
                                  -> rejected

* submitted: stored after the request's checks (current AUP accepted, MAC free, no ban).
* pending_approval: in IT's queue (the system moves it there at once, recording what it checked).
* approved: IT said yes; active once the device is seen on the network (a DHCP lease).
* quarantined: an agent-reported critical check failed beyond the grace period, or IT said so;
  back to active when fixed. Revoked and expired are ends; so is rejected.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.StrEnum):
    SUBMITTED = "submitted"
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    ACTIVE = "active"
    QUARANTINED = "quarantined"
    REVOKED = "revoked"
    EXPIRED = "expired"
    REJECTED = "rejected"


LIVE_STATES: frozenset[State] = frozenset({State.SUBMITTED, State.PENDING_APPROVAL, State.APPROVED, State.ACTIVE,
                                           State.QUARANTINED})
WAITING_STATES: frozenset[State] = frozenset({State.SUBMITTED, State.PENDING_APPROVAL})
# On the network's allow-list (exports, identity). Quarantined devices are disconnected.
ALLOWED_STATES: frozenset[State] = frozenset({State.APPROVED, State.ACTIVE})


class Action(enum.StrEnum):
    QUEUE = "queue"
    APPROVE = "approve"
    REJECT = "reject"
    ACTIVATE = "activate"
    QUARANTINE = "quarantine"
    RELEASE = "release"
    REVOKE = "revoke"
    EXPIRE = "expire"


class Who(enum.StrEnum):
    SYSTEM = "system"  # the registrations worker
    IT = "it"  # it_admin
    OWNER = "owner"  # the person the registration belongs to


class Reason(enum.StrEnum):
    CREDENTIAL_SHARING = "credential_sharing"
    AUP_BREACH = "aup_breach"
    NON_COMPLIANCE = "non_compliance"
    TAMPER = "tamper"
    LOST_STOLEN = "lost_stolen"
    LEFT_SCHOOL = "left_school"
    USER_REQUEST = "user_request"


REASON_LABELS: dict[Reason, str] = {
    Reason.CREDENTIAL_SHARING: "Sharing credentials (permanent)",
    Reason.AUP_BREACH: "Breach of the AUP",
    Reason.NON_COMPLIANCE: "Device does not meet the requirements",
    Reason.TAMPER: "Tampering with monitoring or the agent",
    Reason.LOST_STOLEN: "Device lost or stolen",
    Reason.LEFT_SCHOOL: "Left the school",
    Reason.USER_REQUEST: "Requested by the owner",
}
# Reasons that end WiFi access for the person, not just the device, until IT and the DSL both sign off.
PERMANENT_REASONS: frozenset[Reason] = frozenset({Reason.CREDENTIAL_SHARING})


@dataclass(frozen=True)
class Transition:
    action: Action
    sources: frozenset[State]
    target: State
    who: frozenset[Who]
    label: str
    needs_note: bool = False
    needs_reason: bool = False


TRANSITIONS: dict[Action, Transition] = {t.action: t for t in (
    Transition(Action.QUEUE, frozenset({State.SUBMITTED}), State.PENDING_APPROVAL, frozenset({Who.SYSTEM}),
               "Queue for IT"),
    Transition(Action.APPROVE, frozenset({State.PENDING_APPROVAL}), State.APPROVED, frozenset({Who.IT}), "Approve"),
    Transition(Action.REJECT, frozenset({State.SUBMITTED, State.PENDING_APPROVAL}), State.REJECTED,
               frozenset({Who.IT}), "Reject", needs_note=True),
    Transition(Action.ACTIVATE, frozenset({State.APPROVED}), State.ACTIVE, frozenset({Who.SYSTEM, Who.IT}),
               "Activate"),
    Transition(Action.QUARANTINE, frozenset({State.ACTIVE, State.APPROVED}), State.QUARANTINED,
               frozenset({Who.SYSTEM, Who.IT}), "Quarantine", needs_note=True),
    Transition(Action.RELEASE, frozenset({State.QUARANTINED}), State.ACTIVE, frozenset({Who.SYSTEM, Who.IT}),
               "Release from quarantine"),
    Transition(Action.REVOKE, frozenset({State.APPROVED, State.ACTIVE, State.QUARANTINED}), State.REVOKED,
               frozenset({Who.IT, Who.OWNER, Who.SYSTEM}), "Revoke", needs_reason=True),
    Transition(Action.EXPIRE, frozenset({State.APPROVED, State.ACTIVE, State.QUARANTINED}), State.EXPIRED,
               frozenset({Who.SYSTEM}), "Expire"),
)}


class TransitionError(ValueError):
    """Not allowed from this state, not by this actor, or missing its note or reason."""


class WrongState(TransitionError):
    """The registration is not in a state this action starts from (e.g. already decided)."""


class NotPermitted(TransitionError):
    """This kind of actor may not take this action."""


def check(state: str, action: Action | str, who: Who, note: str = "", reason: str | None = None) -> Transition:
    try:
        t = TRANSITIONS[Action(action)]
    except ValueError:
        raise TransitionError(f"unknown action {action!r}") from None
    if State(state) not in t.sources:
        decided = "" if State(state) in WAITING_STATES else " (already decided)"
        raise WrongState(f"cannot {t.action.value} a registration that is {_words(state)}{decided}")
    if who not in t.who:
        raise NotPermitted(f"{t.action.value} is not yours to do")
    if t.needs_note and not note.strip():
        raise TransitionError(f"{t.label.lower()} needs a note saying why")
    if t.needs_reason:
        if reason not in {r.value for r in Reason}:
            raise TransitionError("revoking needs a reason: " + ", ".join(r.value for r in Reason))
        if who is Who.OWNER and reason != Reason.USER_REQUEST:
            raise NotPermitted("you can only withdraw your own device (reason: user_request)")
    return t


def _words(state: str) -> str:
    return State(state).value.replace("_", " ")


def available(state: str, who: Who) -> list[Transition]:
    return [t for t in TRANSITIONS.values() if State(state) in t.sources and who in t.who]
