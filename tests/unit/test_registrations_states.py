"""The registration state machine: every allowed path, refusals, who may do what."""

from __future__ import annotations

import pytest

from esafety.registrations import states
from esafety.registrations.states import Action, State, Who


def test_the_happy_path_and_quarantine_loop() -> None:
    s = State.SUBMITTED
    for action, who, target in ((Action.QUEUE, Who.SYSTEM, State.PENDING_APPROVAL),
                                (Action.APPROVE, Who.IT, State.APPROVED),
                                (Action.ACTIVATE, Who.SYSTEM, State.ACTIVE),
                                (Action.QUARANTINE, Who.SYSTEM, State.QUARANTINED),
                                (Action.RELEASE, Who.SYSTEM, State.ACTIVE)):
        t = states.check(s, action, who, note="why")
        assert t.target is target
        s = t.target
    assert states.check(s, Action.REVOKE, Who.IT, reason="aup_breach").target is State.REVOKED
    assert states.check(s, Action.EXPIRE, Who.SYSTEM).target is State.EXPIRED


def test_decided_requests_cannot_be_decided_again() -> None:
    for s in (State.APPROVED, State.REJECTED, State.REVOKED, State.EXPIRED):
        with pytest.raises(states.WrongState, match="already decided"):
            states.check(s, Action.APPROVE, Who.IT)
    with pytest.raises(states.WrongState):
        states.check(State.REJECTED, Action.REJECT, Who.IT, note="again")


def test_ends_are_ends() -> None:
    for end in (State.REVOKED, State.EXPIRED, State.REJECTED):
        assert states.available(end, Who.IT) == [] and states.available(end, Who.SYSTEM) == []


def test_who_may_act() -> None:
    with pytest.raises(states.NotPermitted):
        states.check(State.PENDING_APPROVAL, Action.APPROVE, Who.OWNER)
    with pytest.raises(states.NotPermitted):
        states.check(State.PENDING_APPROVAL, Action.APPROVE, Who.SYSTEM)
    with pytest.raises(states.NotPermitted, match="withdraw your own"):
        states.check(State.ACTIVE, Action.REVOKE, Who.OWNER, reason="credential_sharing")
    assert states.check(State.ACTIVE, Action.REVOKE, Who.OWNER, reason="user_request").target is State.REVOKED


def test_notes_and_reasons_are_required() -> None:
    with pytest.raises(states.TransitionError, match="note"):
        states.check(State.PENDING_APPROVAL, Action.REJECT, Who.IT, note="  ")
    with pytest.raises(states.TransitionError, match="reason"):
        states.check(State.ACTIVE, Action.REVOKE, Who.IT)
    with pytest.raises(states.TransitionError, match="reason"):
        states.check(State.ACTIVE, Action.REVOKE, Who.IT, reason="because")
    with pytest.raises(states.TransitionError, match="unknown action"):
        states.check(State.ACTIVE, "explode", Who.IT)


def test_every_reason_has_a_label_and_credential_sharing_is_permanent() -> None:
    assert set(states.REASON_LABELS) == set(states.Reason)
    permanent, live = states.PERMANENT_REASONS, states.LIVE_STATES
    assert permanent == {states.Reason.CREDENTIAL_SHARING}
    assert live == {State.SUBMITTED, State.PENDING_APPROVAL, State.APPROVED, State.ACTIVE, State.QUARANTINED}
