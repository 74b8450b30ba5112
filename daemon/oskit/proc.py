"""Identity, /proc reading and process-tree walks.

Identity. A pid alone proves nothing: pids are recycled. A process is named here
by (pid, start ticks): field 22 of /proc/<pid>/stat, the kernel's own start time
in clock ticks since boot, exact and unchangeable. Whenever a signal must reach a
process we did not just spawn, we open a pidfd first and only then check the
start ticks: once the pidfd is open it pins that very process, so a check that
passes after the open cannot be fooled by a recycle in between.

/proc is read with ``os.open``/``os.read`` into bytes, not through text files:
these reads sit on the stop path of every process, and a buffered text file
costs several times the syscalls themselves.

Everything here is read from /proc directly, without psutil: what the daemon needs
(the pid list, stat lines, children lists, an environment) is a few lines each, and
psutil cost the serving process about 1 MiB of RSS (issue 21).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

PROC = Path("/proc")


@dataclasses.dataclass(frozen=True, slots=True)
class ProcInfo:
    pid: int
    ppid: int
    pgrp: int
    session: int
    start_ticks: int
    zombie: bool = False   # exited, not yet reaped



# --- identity ------------------------------------------------------------------

def boot_id() -> str:
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _read_proc(path: str) -> bytes | None:
    """The whole of a /proc file, or None if it cannot be read (the process is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _parse_stat(pid: int, data: bytes) -> ProcInfo:
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2:].split()
    return ProcInfo(pid=pid, ppid=int(fields[1]), pgrp=int(fields[2]), session=int(fields[3]),
                    start_ticks=int(fields[19]), zombie=fields[0] == b"Z")


def proc_info(pid: int) -> ProcInfo | None:
    data = _read_proc(f"/proc/{pid}/stat")
    try:
        return None if data is None else _parse_stat(pid, data)
    except (ValueError, IndexError):
        return None


def start_ticks(pid: int) -> int | None:
    info = proc_info(pid)
    return info.start_ticks if info else None


def is_alive(pid: int, ticks: int | None) -> bool:
    """True if ``pid`` is still the process that started at ``ticks`` (zombies count as gone)."""
    info = proc_info(pid)
    return info is not None and ticks is not None and info.start_ticks == ticks and not info.zombie


def proc_table() -> list[ProcInfo]:
    """Every process on the machine, read once from /proc (in pid order)."""
    table = []
    for pid in _pids():
        info = proc_info(pid)
        if info is not None:
            table.append(info)
    return table


def _pids() -> list[int]:
    """The pids in /proc, sorted (the thread ids under each /proc/<pid>/task are not listed)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    return sorted(int(name) for name in names if name.isdigit())


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc/<pid>/task/*/children (no full /proc scan).

    Every thread's file is read: a child belongs to the thread that forked it.
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tasks:
        found += _task_children(pid, tid)
    return found


def adopted_children(pid: int) -> list[int]:
    """The children of subreaper ``pid`` that may have been re-parented to it.

    Only the main thread's list is read: the kernel hands an orphan to the
    subreaper's first live thread, its thread-group leader (``find_new_reaper``
    and ``find_alive_thread`` in kernel/exit.c), while children spawned from
    other threads are its own by pid anyway.
    """
    return _task_children(pid, pid)


def _task_children(pid: int | str, tid: int | str) -> list[int]:
    data = _read_proc(f"/proc/{pid}/task/{tid}/children")
    try:
        return [int(text) for text in data.split()] if data else []
    except ValueError:
        return []


def descendants(pid: int, not_before: int) -> list[ProcInfo]:
    """Every descendant of ``pid`` by parent links, started no earlier than ``not_before`` ticks.

    ``pid`` must still be the process that started at ``not_before`` (checked after its
    children are read and after the walk): a recycled pid's children are a stranger's.
    Nothing when the start ticks are unknown (negative). A pid with no children needs
    no check at all (an empty answer names nobody): most leaders stopped have none, and
    the two reads of its stat were most of a stop's walk.
    """
    if not_before < 0:
        return []
    first = children_of(pid)
    if not first or start_ticks(pid) != not_before:
        return []
    found: list[ProcInfo] = []
    frontier = [(pid, first)]   # (a parent, its children as read)
    seen = {pid}
    while frontier:
        parent, listed = frontier.pop()
        for child in listed:
            info = proc_info(child)
            # Still the parent's: a listed child reaped meanwhile and its pid taken by a
            # newcomer started after not_before is a stranger (its own ticks check it out).
            if child in seen or info is None or info.start_ticks < not_before or \
                    info.ppid != parent:
                continue
            seen.add(child)
            found.append(info)
            frontier.append((child, children_of(child)))
    return found if start_ticks(pid) == not_before else []


def open_verified_pidfd(pid: int, ticks: int | None) -> int | None:
    """A pidfd for ``pid`` if it is still the process that started at ``ticks``, else None."""
    if ticks is None:
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if start_ticks(pid) != ticks:
        os.close(fd)
        return None
    return fd


def environ_marker(pid: int, names: Sequence[str]) -> dict[str, str] | None:
    """The values of ``names`` in a process's environment ({} if it has none of them),
    or None if it cannot be told: the environment cannot be read, or it is empty.

    An empty environment is what ``/proc/<pid>/environ`` shows while a process
    is inside ``execve``: the new mm has no ``env_end`` until the ELF loader
    writes the stack (fs/proc/base.c, environ_read). A forked shell that execs
    a marked command reads as unmarked for that moment, so "empty" must mean
    "unknown", never "not ours".
    """
    data = _read_proc(f"/proc/{pid}/environ")
    if not data:
        return None
    env = parse_environ(data)
    if not env:
        return None
    return {name: env[name] for name in names if name in env}


def parse_environ(data: bytes) -> dict[str, str]:
    """``/proc/<pid>/environ`` as a dict, read as psutil reads it: ``NAME=value`` entries
    ended by NULs, split at the first ``=``; an entry without a name (``=x``) or without
    ``=`` is skipped, and an empty entry or a last one without its NUL ends the block (a
    process may rewrite its environment area). Text is decoded as the file system's names
    are (UTF-8, undecodable bytes kept as surrogates); unlike psutil's text-mode read, a
    carriage return stays one (the markers read here hold none)."""
    env: dict[str, str] = {}
    pos = 0
    while (end := data.find(b"\0", pos)) > pos:
        equal = data.find(b"=", pos, end)
        if equal > pos:
            env[os.fsdecode(data[pos:equal])] = os.fsdecode(data[equal + 1:end])
        pos = end + 1
    return env


def process_exists(pid: int) -> bool:
    return (PROC / str(pid)).exists()


def tree_of(leader_pid: int, leader_ticks: int, leader_reaped: bool,
            table: Iterable[ProcInfo] | None = None) -> list[ProcInfo]:
    """The processes that belong to a child's tree, the leader excluded.

    That is its descendants (by parent links), plus whatever is still in its
    process group or session — the leader started both, so their ids equal its
    pid. Once the leader has been reaped its pid could in principle be reused,
    so group and session members are trusted only while no other process holds
    that pid (the kernel does not hand out a pid still used as a group id).
    """
    table = list(proc_table() if table is None else table)
    by_parent: dict[int, list[ProcInfo]] = {}
    for info in table:
        by_parent.setdefault(info.ppid, []).append(info)
    members: dict[int, ProcInfo] = {}
    holder = next((i for i in table if i.pid == leader_pid), None)
    leader_is_ours = holder is not None and holder.start_ticks == leader_ticks and not leader_reaped
    pid_is_free = holder is None
    if leader_is_ours or pid_is_free:
        for info in table:
            if info.pid != leader_pid and (info.pgrp == leader_pid or info.session == leader_pid) \
                    and info.start_ticks >= leader_ticks:
                members[info.pid] = info
    roots = [leader_pid] if leader_is_ours else []
    roots += list(members)
    while roots:
        parent = roots.pop()
        for info in by_parent.get(parent, ()):
            if info.pid not in members and info.pid != leader_pid and info.start_ticks >= leader_ticks:
                members[info.pid] = info
                roots.append(info.pid)
    return list(members.values())


def close_fd(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
