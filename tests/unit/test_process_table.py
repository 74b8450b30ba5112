"""The process table: states change only through the transition table, slots follow states."""

from __future__ import annotations

import asyncio

import pytest

from daemon.model import Event, ExitState, InvalidTransition, Process, State, transition
from daemon.supervisor.table import ProcessTable


def record(process_id: int, state: State) -> Process:
    return Process(id=process_id, state=state, argv=["true"], created_at="2026-01-01T00:00:00.000Z")


def created(table: ProcessTable, process_id: int) -> Process:
    """A record as a create makes it: admitted if a slot is free and nobody queues, else queued."""
    event = Event.ADMIT if table.has_slot() and not table.queue else Event.ENQUEUE
    proc = record(0, transition(None, event)[0])
    table.reserve(proc)
    proc.id = process_id
    table.insert(proc)
    if proc.state is State.QUEUED:
        table.queue.append(proc.id)
    return proc


def test_a_reserved_record_holds_its_slot_until_its_insert_fails() -> None:
    table = ProcessTable(max_concurrent=1)
    proc = record(0, State.RUNNING)
    table.reserve(proc)
    assert not table.has_slot() and proc.id not in table   # held, though not live yet
    table.unreserve(proc)
    assert table.has_slot()


def test_slots_follow_states_through_a_life() -> None:
    table = ProcessTable(max_concurrent=1)
    first = created(table, 1)
    second = created(table, 2)
    assert (first.state, second.state) == (State.RUNNING, State.QUEUED)
    assert table.next_admissible() is None                 # no slot: the queue waits
    table.apply(first, Event.KILL)
    assert first.state is State.TERMINATING and not table.has_slot()
    table.apply(first, Event.STOPPED_AFTER_KILL)
    assert (first.state, first.exit_state) == (State.IDLE, ExitState.CANCELED)
    assert table.next_admissible() is second               # its slot went back with its state
    table.apply(second, Event.ADMIT)
    assert not table.has_slot()
    assert table.counts() == {"queued": 0, "running": 1, "terminating": 0}


def test_records_loaded_at_start_up_count_before_anything_is_admitted() -> None:
    table = ProcessTable(max_concurrent=2)
    for proc in (record(1, State.RUNNING), record(2, State.TERMINATING), record(3, State.QUEUED)):
        table.load(proc)
    assert list(table.queue) == [3] and not table.has_slot()
    table.apply(table.get(1) or record(0, State.IDLE), Event.LOST)
    assert table.next_admissible() is table.get(3)


def test_a_pair_missing_from_the_table_changes_nothing() -> None:
    table = ProcessTable(max_concurrent=1)
    proc = created(table, 1)
    table.apply(proc, Event.EXITED_OK)
    with pytest.raises(InvalidTransition):
        table.apply(proc, Event.KILL)
    assert proc.state is State.IDLE and table.has_slot()


def test_a_refused_cancel_is_undone_back_to_its_place_in_the_queue() -> None:
    table = ProcessTable(max_concurrent=1)
    created(table, 1)
    queued = [created(table, i) for i in (2, 3, 4)]
    table.queue.remove(3)
    table.apply(queued[1], Event.KILL)
    table.undo(queued[1], Event.KILL, State.QUEUED)
    table.requeue(queued[1])
    assert (queued[1].state, queued[1].exit_state) == (State.QUEUED, None)
    assert list(table.queue) == [2, 3, 4]


def test_a_refused_stop_is_undone_back_to_running_and_keeps_its_slot() -> None:
    table = ProcessTable(max_concurrent=1)
    proc = created(table, 1)
    table.apply(proc, Event.EXPIRE)
    table.undo(proc, Event.EXPIRE, State.RUNNING)
    assert proc.state is State.RUNNING and not table.has_slot()


@pytest.mark.parametrize("event,before", [(Event.EXITED_OK, State.RUNNING),   # an exit is a fact
                                          (Event.KILL, State.RUNNING)])      # not what KILL made
def test_only_a_transition_the_table_made_can_be_undone(event: Event, before: State) -> None:
    table = ProcessTable(max_concurrent=1)
    proc = created(table, 1)
    table.apply(proc, Event.EXITED_OK)
    with pytest.raises(InvalidTransition):
        table.undo(proc, event, before)
    assert proc.state is State.IDLE and table.has_slot()


async def test_waiters_get_the_final_record_once_it_settles() -> None:
    table = ProcessTable(max_concurrent=0)
    proc = created(table, 1)
    waiter: asyncio.Future[Process | None] = asyncio.get_running_loop().create_future()
    table.add_waiter(1, waiter)
    table.apply(proc, Event.EXITED_OK)
    table.discard(1)
    final = table.settled(proc)
    assert waiter.result() is final and final is not proc and final.state is State.IDLE
    assert 1 not in table and table.recent.get(1) is final


def test_unqueue_takes_many_ids_off_the_queue_in_one_pass_keeping_the_order() -> None:
    table = ProcessTable(max_concurrent=1)
    created(table, 1)
    queue = table.queue
    for i in range(2, 12):
        created(table, i)
    table.unqueue({3, 5, 6, 11, 99})
    assert table.queue is queue, "the same deque: holders of it see the change"
    assert list(table.queue) == [2, 4, 7, 8, 9, 10]
    table.unqueue(set())
    assert list(table.queue) == [2, 4, 7, 8, 9, 10]
