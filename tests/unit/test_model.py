"""The transition table: every (state, event) pair has exactly one outcome or is refused."""

from __future__ import annotations

import itertools

import pytest

from daemon.model import (
    Event, ExitState, InvalidTransition, State, StopReason, TRANSITIONS, stopped_event, transition,
)

EXPECTED = {
    (None, Event.ADMIT): (State.RUNNING, None),
    (None, Event.ENQUEUE): (State.QUEUED, None),
    (State.QUEUED, Event.ADMIT): (State.RUNNING, None),
    (State.QUEUED, Event.KILL): (State.IDLE, ExitState.CANCELED),
    (State.QUEUED, Event.SPAWN_FAILED): (State.IDLE, ExitState.FAILED),
    (State.RUNNING, Event.SPAWN_FAILED): (State.IDLE, ExitState.FAILED),
    (State.RUNNING, Event.EXITED_OK): (State.IDLE, ExitState.SUCCESS),
    (State.RUNNING, Event.EXITED_ERROR): (State.IDLE, ExitState.FAILED),
    (State.RUNNING, Event.LOST): (State.IDLE, ExitState.FAILED),
    (State.RUNNING, Event.KILL): (State.TERMINATING, None),
    (State.RUNNING, Event.EXPIRE): (State.TERMINATING, None),
    (State.TERMINATING, Event.STOPPED_AFTER_KILL): (State.IDLE, ExitState.CANCELED),
    (State.TERMINATING, Event.STOPPED_AFTER_EXPIRE): (State.IDLE, ExitState.TIMEOUT),
}


@pytest.mark.parametrize("state,event", list(itertools.product([None, *State], Event)))
def test_every_pair_has_a_single_outcome(state: State | None, event: Event) -> None:
    if (state, event) in EXPECTED:
        assert transition(state, event) == EXPECTED[(state, event)]
    else:
        with pytest.raises(InvalidTransition):
            transition(state, event)


def test_table_is_exactly_the_documented_one() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize("state", [State.IDLE, State.TERMINATING])
def test_kill_of_idle_or_terminating_is_refused(state: State) -> None:
    with pytest.raises(InvalidTransition, match="cannot kill"):
        transition(state, Event.KILL)


def test_idle_is_final() -> None:
    for event in Event:
        with pytest.raises(InvalidTransition):
            transition(State.IDLE, event)


def test_stop_reason_picks_the_exit_state() -> None:
    assert transition(State.TERMINATING, stopped_event(StopReason.TIMEOUT))[1] is ExitState.TIMEOUT
    assert transition(State.TERMINATING, stopped_event(StopReason.KILL))[1] is ExitState.CANCELED
