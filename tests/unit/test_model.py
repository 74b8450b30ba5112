"""The transition table: every (state, event) pair has exactly one outcome or is refused."""

from __future__ import annotations

import itertools

import pytest

from daemon.errors import Conflict
from daemon.model import (
    ACTIVE,
    LIVE,
    SETTLED,
    SIGNALLABLE,
    STOPPABLE,
    TRANSITIONS,
    Event,
    ExitState,
    InvalidTransition,
    State,
    StopReason,
    stopped_event,
    transition,
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
    (State.RUNNING, Event.RUN_ENDED): (State.RUNNING, None),   # a managed run ends; the next is due
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


def test_a_refused_pair_is_a_409_not_a_500() -> None:
    with pytest.raises(Conflict) as refused:
        transition(State.IDLE, Event.KILL)
    assert refused.value.status == 409
    assert refused.value.message == "cannot kill a process that is idle"
    assert InvalidTransition(State.IDLE, Event.KILL, "process 7 is already idle").message == \
        "process 7 is already idle"


# The named groups say, once, what the guards ask of a state; each follows from the table.

def _leads(event: Event) -> dict[State, State]:
    return {state: to for (state, e), (to, _) in TRANSITIONS.items() if e is event and state is not None}


def test_stoppable_is_where_a_kill_is_accepted() -> None:
    assert STOPPABLE == set(_leads(Event.KILL))


def test_signallable_is_where_a_kill_would_begin_a_stop() -> None:
    assert SIGNALLABLE == {s for s, to in _leads(Event.KILL).items() if to is State.TERMINATING}


def test_active_is_where_a_process_exists_to_end() -> None:
    ends = (Event.EXITED_OK, Event.EXITED_ERROR, Event.STOPPED_AFTER_KILL, Event.STOPPED_AFTER_EXPIRE)
    assert ACTIVE == {s for event in ends for s in _leads(event)}


def test_settled_is_final_and_live_is_everything_else() -> None:
    assert SETTLED == {s for s in State if not any(state is s for state, _ in TRANSITIONS)}
    assert LIVE == set(State) - SETTLED
    assert SIGNALLABLE <= ACTIVE <= LIVE and STOPPABLE <= LIVE
