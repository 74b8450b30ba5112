"""Start-up: make the registry and the machine agree before serving (README, 'Restarts').

Every record SQLite holds as queued, running or terminating is loaded into the
process table first (so the slots they hold are counted before anything is
admitted); then each one that should have a process is either

* **adopted**: its process is still there — same pid, same start ticks, and,
  when its environment can be read, this record's STABLEHAND_ID and instance.
  It is watched through a pidfd (its exit status will be unknown: it is not our
  child), its timeout re-armed, and a stop an earlier daemon began is resumed
  with what is left of its grace; or
* **lost**: it ended while no daemon was watching. A running record ends
  idle/failed ("exit status lost ..."), a terminating one ends as its stop
  would have.

A crash between a spawn and the commit of its pid (or start ticks) is repaired
from the marker the child carries. A marked process that no record accounts for
is a stray and is stopped. Queued records run as soon as slots allow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import oskit
from ..model import LIVE, Event, Process, State, iso_to_epoch, now_iso, stopped_event
from .children import ID_VAR, INSTANCE_VAR, Markers
from .terminating import wall

if TYPE_CHECKING:
    from .running import Runner


async def reconcile(runner: Runner) -> None:
    records = await runner.registry.in_states(LIVE)
    marked = _scan_markers(runner.markers)
    for proc in records:
        runner.table.load(proc)
    for proc in records:
        if proc.state is State.QUEUED:
            continue
        found = marked.get(proc.id)
        if found is not None and (proc.pid is None or
                                  (proc.pid == found.pid and proc.pid_start_time is None)):
            # crashed between spawn and the commit of its pid or start time
            proc.pid, proc.pid_start_time = found.pid, found.start_ticks
            proc.boot_id, proc.started_at = runner.markers.boot_id, proc.started_at or now_iso()
            await runner.registry.update(proc.id, pid=proc.pid, pid_start_time=proc.pid_start_time,
                                       boot_id=proc.boot_id, started_at=proc.started_at)
        pidfd = None
        if proc.pid is not None and proc.boot_id == runner.markers.boot_id:
            pidfd = oskit.open_verified_pidfd(proc.pid, _ticks(proc.pid_start_time))
        if pidfd is not None and not _still_ours(proc, runner.markers):
            oskit.close_fd(pidfd)
            pidfd = None
        if pidfd is None:
            await _record_lost(runner, proc)
        else:
            _adopt(runner, proc, pidfd)
    for process_id, info in marked.items():
        live = runner.table.get(process_id)
        if live is None or live.pid != info.pid:
            runner.tasks.spawn(runner.trees.stop_stray(process_id, info))


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


def _adopt(runner: Runner, proc: Process, pidfd: int) -> None:
    assert proc.pid is not None and proc.pid_start_time is not None
    child = runner.children.new(proc.id, proc.pid, int(proc.pid_start_time), pidfd, own=False)
    runner.children.watch(child)
    runner.log.info("process.adopted", process_id=proc.id, pid=proc.pid, state=proc.state.value)
    if proc.state is State.RUNNING:
        runner.arm_timeout(proc, child)
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
