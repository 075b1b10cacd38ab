"""The incident state machine: which transitions exist, and what each one needs.

new -> triage -> in_progress -> referred | monitoring -> closed (with an outcome);
closed -> in_progress again only with a reason (reopen). Acknowledging is the new -> triage step.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.StrEnum):
    NEW = "new"
    TRIAGE = "triage"
    IN_PROGRESS = "in_progress"
    REFERRED = "referred"
    MONITORING = "monitoring"
    CLOSED = "closed"


OPEN_STATES: tuple[str, ...] = tuple(s.value for s in State if s is not State.CLOSED)

# Outcome codes (stored) and the words a DSL sees.
OUTCOMES: dict[str, str] = {
    "no_concern": "No concern / false positive",
    "logged_nfa": "Logged, no further action",
    "pastoral": "Pastoral support",
    "parents_contacted": "Parents contacted",
    "early_help": "Early help",
    "social_care": "Children's social care referral",
    "police": "Police",
    "prevent": "Prevent",
}


class Action(enum.StrEnum):
    ACKNOWLEDGE = "acknowledge"
    START = "start"  # triage -> in_progress
    REFER = "refer"
    MONITOR = "monitor"
    RESUME = "resume"  # referred/monitoring back to in_progress
    CLOSE = "close"
    REOPEN = "reopen"


@dataclass(frozen=True)
class Transition:
    action: Action
    sources: frozenset[State]
    target: State
    label: str
    needs_outcome: bool = False
    needs_reason: bool = False


TRANSITIONS: dict[Action, Transition] = {t.action: t for t in (
    Transition(Action.ACKNOWLEDGE, frozenset({State.NEW}), State.TRIAGE, "Acknowledge"),
    Transition(Action.START, frozenset({State.TRIAGE}), State.IN_PROGRESS, "Start work"),
    Transition(Action.REFER, frozenset({State.IN_PROGRESS, State.MONITORING}), State.REFERRED, "Mark referred"),
    Transition(Action.MONITOR, frozenset({State.IN_PROGRESS, State.REFERRED}), State.MONITORING, "Monitor"),
    Transition(Action.RESUME, frozenset({State.REFERRED, State.MONITORING}), State.IN_PROGRESS, "Back to in progress"),
    # Closing straight from triage covers the common false positive; an unread incident cannot be closed.
    Transition(Action.CLOSE, frozenset({State.TRIAGE, State.IN_PROGRESS, State.REFERRED, State.MONITORING}),
               State.CLOSED, "Close", needs_outcome=True),
    Transition(Action.REOPEN, frozenset({State.CLOSED}), State.IN_PROGRESS, "Reopen", needs_reason=True),
)}


class TransitionError(ValueError):
    """The action is not allowed from this state, or lacks what it needs (outcome, reason)."""


def check(state: str, action: Action | str, outcome: str | None = None, reason: str | None = None) -> Transition:
    """Validate an action against the current state; returns the transition to apply."""
    try:
        t = TRANSITIONS[Action(action)]
    except ValueError:
        raise TransitionError(f"unknown action {action!r}") from None
    if State(state) not in t.sources:
        raise TransitionError(f"cannot {t.action.value} an incident that is {state}")
    if t.needs_outcome and outcome not in OUTCOMES:
        raise TransitionError("closing needs an outcome: " + ", ".join(OUTCOMES.values()))
    if t.needs_reason and not (reason and reason.strip()):
        raise TransitionError("reopening needs a reason")
    return t


def available(state: str) -> list[Transition]:
    """The transitions a user may take from `state`, in display order."""
    return [t for t in TRANSITIONS.values() if State(state) in t.sources]
