"""The state machine: allowed paths, outcomes required to close, reasons required to reopen."""

from __future__ import annotations

import pytest

from esafety.incidents.states import OUTCOMES, Action, State, TransitionError, available, check


def test_the_documented_path_is_allowed() -> None:
    path = [(State.NEW, Action.ACKNOWLEDGE, State.TRIAGE), (State.TRIAGE, Action.START, State.IN_PROGRESS),
            (State.IN_PROGRESS, Action.REFER, State.REFERRED), (State.REFERRED, Action.MONITOR, State.MONITORING)]
    for src, action, dst in path:
        assert check(src, action).target is dst
    assert check(State.MONITORING, Action.CLOSE, outcome="early_help").target is State.CLOSED
    assert check(State.CLOSED, Action.REOPEN, reason="new information from form tutor").target is State.IN_PROGRESS


def test_closing_needs_one_of_the_outcomes() -> None:
    with pytest.raises(TransitionError, match="outcome"):
        check("triage", "close")
    with pytest.raises(TransitionError, match="outcome"):
        check("triage", "close", outcome="made_up")
    assert set(OUTCOMES) >= {"no_concern", "logged_nfa", "pastoral", "parents_contacted", "early_help",
                             "social_care", "police", "prevent"}


def test_reopen_needs_a_reason_and_a_closed_incident() -> None:
    with pytest.raises(TransitionError, match="reason"):
        check("closed", "reopen", reason="   ")
    with pytest.raises(TransitionError, match="cannot reopen"):
        check("in_progress", "reopen", reason="x")


def test_unread_incident_cannot_be_closed_and_unknown_actions_are_refused() -> None:
    with pytest.raises(TransitionError, match="cannot close"):
        check("new", "close", outcome="no_concern")
    with pytest.raises(TransitionError, match="unknown action"):
        check("new", "delete")


def test_available_lists_only_legal_actions() -> None:
    assert [t.action for t in available("new")] == [Action.ACKNOWLEDGE]
    assert {t.action for t in available("closed")} == {Action.REOPEN}
