"""Start-up, and the loss of the keeper: make the registry, the keeper and the machine agree.

At start-up every record SQLite holds as queued, running or terminating is
loaded into the process table first (so the slots they hold are counted before
anything is admitted); then each one that should have a process is

* **kept**: the keeper still holds its child (or journalled its exit, which is
  then recorded exactly, and acknowledged once committed). Its timeout is
  re-armed, a stop an earlier daemon began is resumed with what is left of its
  grace, and its stdin pipe is still there; or
* **adopted**: no keeper knows it (the keeper was killed while the daemon was
  down), but its process is still there — same pid, same start ticks, and, when
  its environment can be read, this record's STABLEHAND_ID and instance. It is
  watched through a pidfd; its exit status will be unknown; or
* **lost**: it ended while nothing was watching. A running record ends
  idle/failed ("exit status lost ..."), a terminating one ends as its stop
  would have.

A crash between a spawn and the commit of its pid (or start ticks) is repaired
from what the keeper reports or, without it, from the marker the child carries.
A marked process that no record accounts for is a stray and is stopped. Queued
records run as soon as slots allow.

When the keeper is lost while the daemon runs (:func:`recover_keeper`), a new
one is started and every kept child is accounted for the same way: its exit, if
the journal has it; else adopted by pidfd and start ticks (its output is no
longer captured, and its record will say so); else recorded as lost.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .. import oskit
from ..keeper.client import ChildInfo, ExitEvent, Listing
from ..managed import Status
from ..model import LIVE, Event, Process, State, iso_to_epoch, now_iso, stopped_event
from .children import ID_VAR, INSTANCE_VAR, RUN_VAR, Child, Markers, run_number, run_of
from .terminating import wall

if TYPE_CHECKING:
    from .running import Runner


RECONNECT_DELAYS = (0.1, 0.5, 1.0, 2.0)   # between attempts to find a keeper again
EXITS_WAIT = 2.0   # start-up waits this long at most for the exits it found to be committed


async def reconcile(runner: Runner, listing: Listing) -> None:
    records = await runner.registry.in_states(LIVE)
    kept = {info.id: info for info in listing.children}
    exits = {event.id: event for event in listing.exits}
    marked = _scan_markers(runner.markers)
    found_exits: list[int] = []   # live records whose child exited while no daemon watched
    for proc in records:
        runner.table.load(proc)
    for proc in records:
        if proc.state is State.QUEUED:
            continue
        if proc.managed_state is not None and proc.managed_state.status is Status.BACKING_OFF \
                and proc.state is State.RUNNING and proc.id not in kept:
            if exits.pop(proc.id, None) is not None:
                runner.keeper.ack_soon(proc.id)   # that run was settled before the crash
            runner.managing.resume(proc, None)   # between runs: the next starts when it was due
            continue
        if proc.id in kept or proc.id in exits:
            if proc.id in exits:
                found_exits.append(proc.id)
            await _keep(runner, proc, kept.get(proc.id), exits.pop(proc.id, None))
            continue
        found = marked.get(proc.id)
        if found is not None and (proc.pid is None or
                                  (proc.pid == found.pid and proc.pid_start_time is None)):
            # crashed between spawn and the commit of its pid or start time
            proc.pid, proc.pid_start_time = found.pid, found.start_ticks
            await _save_pid(runner, proc)
        pidfd = None
        if proc.pid is not None and proc.boot_id == runner.markers.boot_id:
            pidfd = oskit.open_verified_pidfd(proc.pid, _ticks(proc.pid_start_time))
        if pidfd is not None and not _still_ours(proc, runner.markers):
            oskit.close_fd(pidfd)
            pidfd = None
        if pidfd is None:
            await _record_lost(runner, proc)
        else:
            assert proc.pid is not None   # a pidfd was opened for it
            _adopt(runner, proc, runner.children.new(
                proc.id, proc.pid, int(proc.pid_start_time or 0), pidfd, kept=False,
                run=_run_of_leader(runner, proc, proc.pid)))
    for event in exits.values():   # of records already idle (or deleted): only acknowledged
        runner.exits.keeper_exit(event)
    _stop_strays(runner, marked)
    for event in runner.keeper.ready():
        found_exits.append(event.id)
        runner.exits.keeper_exit(event)
    await _recorded(runner, found_exits)


async def _recorded(runner: Runner, ids: list[int]) -> None:
    """Wait (EXITS_WAIT at most) until the exits found at start-up are committed, so that
    the restarted daemon's first answers already show what happened while it was down. A
    record whose leader left processes behind is idle only once those are stopped too,
    within its grace: start-up does not wait for that, nor for a managed record (its exit
    ends a run, not the record)."""
    unmanaged = [i for i in ids if (proc := runner.table.get(i)) is not None and proc.managed is None]
    with runner.table.settling(unmanaged) as waiters:
        if waiters:
            await asyncio.wait(waiters.values(), timeout=EXITS_WAIT)


async def _keep(runner: Runner, proc: Process, info: ChildInfo | None, event: ExitEvent | None) -> None:
    """A record whose child the keeper holds, or whose exit it journalled."""
    pid = info.pid if info is not None else event.pid if event is not None else 0
    ticks = info.start_ticks if info is not None else None
    if proc.pid != pid or (proc.pid_start_time is None and ticks is not None):
        # crashed between spawn and the commit of its pid or start time
        proc.pid, proc.pid_start_time = pid, ticks if ticks is not None else proc.pid_start_time
        await _save_pid(runner, proc)
    child = runner.children.new(proc.id, pid, ticks if ticks is not None else -1, -1, kept=True,
                                stdin_open=info is not None and info.stdin_open,
                                run=_run_of_leader(runner, proc, pid if info is not None else 0))
    _adopt(runner, proc, child)
    if event is not None:
        runner.exits.keeper_exit(event)


async def _save_pid(runner: Runner, proc: Process) -> None:
    proc.boot_id, proc.started_at = runner.markers.boot_id, proc.started_at or now_iso()
    await runner.registry.update(proc.id, pid=proc.pid, pid_start_time=proc.pid_start_time,
                                 boot_id=proc.boot_id, started_at=proc.started_at)


def _stop_strays(runner: Runner, marked: dict[int, oskit.ProcInfo]) -> None:
    for process_id, info in marked.items():
        live = runner.table.get(process_id)
        if live is None or live.pid != info.pid:
            runner.tasks.spawn(runner.trees.stop_stray(process_id, info))


async def recover_keeper(runner: Runner) -> None:
    """The keeper was lost: find (start) one again and account for every kept child."""
    attempt = 0
    while True:
        if runner.closing:
            return
        try:
            listing = await runner.keeper.connect()
            break
        except Exception as exc:   # KeeperError, or an OSError (EMFILE...): try again, never give up
            delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
            runner.log.error("keeper.unavailable", error=str(exc), retry_in=delay)
            attempt += 1
            await asyncio.sleep(delay)
    try:
        exits = {event.id: event for event in listing.exits}
        still_kept = {info.id for info in listing.children}
        for child in runner.children.all():
            if not child.kept or child.id in still_kept:
                continue
            event = exits.pop(child.id, None)
            if event is not None:
                runner.exits.keeper_exit(event)
            else:
                _orphaned(runner, child)
        for event in exits.values():
            runner.exits.keeper_exit(event)
        _stop_strays(runner, _scan_markers(runner.markers))
    finally:   # whatever failed above, exits must flow again
        for event in runner.keeper.ready():
            runner.exits.keeper_exit(event)


def _orphaned(runner: Runner, child: Child) -> None:
    """A kept child whose keeper died: adopt it by pidfd and start ticks, or record it lost."""
    pidfd = oskit.open_verified_pidfd(child.pid, child.ticks if child.ticks >= 0 else None)
    marker = runner.markers.read(child.pid) if pidfd is not None else None
    if pidfd is not None and marker is not None and marker.get(ID_VAR) != str(child.id):
        oskit.close_fd(pidfd)
        pidfd = None
    if pidfd is None:
        runner.log.warning("process.lost_with_keeper", process_id=child.id, pid=child.pid)
        runner.children.lost(child)
    else:
        runner.log.warning("process.adopted", process_id=child.id, pid=child.pid,
                           reason="keeper lost: output no longer captured")
        runner.children.adopt(child, pidfd)


def _still_ours(proc: Process, markers: Markers) -> bool:
    """Whether the process at ``proc.pid`` (start time already matched) is really this record's.

    A zombie nobody reaped yet ended while we were down. A live process must
    also carry this record's STABLEHAND_ID and instance when its environment
    can be read: defence in depth on top of the start time.
    """
    assert proc.pid is not None
    if not oskit.is_alive(proc.pid, _ticks(proc.pid_start_time)):
        return False
    marker = markers.read(proc.pid)
    return marker is None or (marker.get(ID_VAR) == str(proc.id)
                              and marker.get(INSTANCE_VAR) == markers.instance)


def _scan_markers(markers: Markers) -> dict[int, oskit.ProcInfo]:
    """Session leaders on this machine that carry our instance's STABLEHAND_ID."""
    found: dict[int, oskit.ProcInfo] = {}
    for info in oskit.proc_table():
        if info.pid != info.session:
            continue
        marker = markers.read(info.pid)
        if marker and marker.get(INSTANCE_VAR) == markers.instance and \
                marker.get(ID_VAR, "").isdigit():
            found[int(marker[ID_VAR])] = info
    return found


async def _record_lost(runner: Runner, proc: Process) -> None:
    if proc.state is State.RUNNING:
        await runner.finish(proc, Event.LOST, error=(
            "exit status lost: the process ended while the daemon was not running"))
    else:
        await runner.finish(proc, stopped_event(proc.stop_reason))


def _run_of_leader(runner: Runner, proc: Process, pid: int) -> int:
    """A managed run's number, as its leader's marker says where it can be read: the
    registry's may be one behind (a crash between the spawn and the run's commit)."""
    run = run_of(proc, next_run=False)
    if run and pid:
        marker_run = run_number((runner.markers.read(pid) or {}).get(RUN_VAR))
        if marker_run is not None:
            run = max(run, marker_run)
    return run


def _adopt(runner: Runner, proc: Process, child: Child) -> None:
    runner.children.watch(child)
    runner.log.info("process.adopted", process_id=proc.id, pid=child.pid, state=proc.state.value,
                    kept=child.kept)
    if proc.state is State.RUNNING:
        runner.arm_timeout(proc, child)
        if proc.managed is not None:
            runner.managing.resume(proc, child)
        return
    requested = iso_to_epoch(proc.stop_requested_at) or wall()
    grace = proc.stop_grace if proc.stop_grace is not None else runner.grace_of(proc)
    remaining = max(0.0, requested + grace - wall())
    done = runner.loop.create_future()
    done.set_result(None)
    runner.tasks.spawn(runner.terminating.run(
        proc, done, oskit.signal_number(proc.stop_signal or "SIGTERM"), remaining))


def _ticks(value: float | None) -> int | None:
    return None if value is None else int(value)
