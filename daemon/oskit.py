"""The only module that touches OS process APIs: spawn, pidfds, signals, /proc.

Identity. A pid alone proves nothing: pids are recycled. A process is named here
by (pid, start ticks): field 22 of /proc/<pid>/stat, the kernel's own start time
in clock ticks since boot, exact and unchangeable. Whenever a signal must reach a
process we did not just spawn, we open a pidfd first and only then check the
start ticks: once the pidfd is open it pins that very process, so a check that
passes after the open cannot be fooled by a recycle in between.

Reaping. Exactly one thing reaps: :func:`reap_all` (``waitpid(-1, WNOHANG)``),
called by the supervisor whenever a child's pidfd turns readable and once a
second. Nothing else here waits for a process, psutil's ``wait()`` included.

/proc is read with ``os.open``/``os.read`` into bytes, not through text files:
these reads sit on the stop path of every process, and a buffered text file
costs several times the syscalls themselves.

Spawning uses ``subprocess.Popen`` for its careful fork/exec error reporting
(which file was missing, whether chdir failed) with ``start_new_session=True``
and no ``preexec_fn`` (aiosqlite runs threads). The Popen object is then
disarmed (``returncode`` set) so that its finaliser never becomes a second
reaper.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import psutil

from .errors import StablehandError

PROC = Path("/proc")


class SpawnError(StablehandError):
    """The child could not be started. The message says why, for the record's ``error``."""


@dataclasses.dataclass(frozen=True, slots=True)
class Spawned:
    pid: int
    pidfd: int
    stdin_fd: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class ExitStatus:
    code: int | None          # exit code, when it exited
    signal: int | None        # signal number, when a signal ended it

    @property
    def signal_name(self) -> str | None:
        return signal_name(self.signal) if self.signal else None


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
    if info is None or ticks is None or info.start_ticks != ticks:
        return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def proc_table() -> list[ProcInfo]:
    """Every process on the machine, read once from /proc."""
    table = []
    for pid in psutil.pids():
        info = proc_info(pid)
        if info is not None:
            table.append(info)
    return table


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


def adopted_children() -> list[int]:
    """This process's children that may have been re-parented to it (it is a subreaper).

    Only the main thread's list is read: the kernel hands an orphan to the
    subreaper's first live thread, its thread-group leader (``find_new_reaper``
    and ``find_alive_thread`` in kernel/exit.c), while children spawned from
    other threads are ours by pid anyway.
    """
    pid = os.getpid()
    return _task_children(pid, pid)


def _task_children(pid: int | str, tid: int | str) -> list[int]:
    data = _read_proc(f"/proc/{pid}/task/{tid}/children")
    try:
        return [int(text) for text in data.split()] if data else []
    except ValueError:
        return []


def descendants(pid: int, not_before: int) -> list[ProcInfo]:
    """Every descendant of ``pid`` by parent links, started no earlier than ``not_before`` ticks."""
    found: list[ProcInfo] = []
    frontier = [pid]
    seen = {pid}
    while frontier:
        for child in children_of(frontier.pop()):
            info = proc_info(child)
            if child in seen or info is None or info.start_ticks < not_before:
                continue
            seen.add(child)
            found.append(info)
            frontier.append(child)
    return found


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
    try:
        env = psutil.Process(pid).environ()
    except (psutil.Error, OSError):
        return None
    if not env:
        return None
    return {name: env[name] for name in names if name in env}


# --- spawn and reap --------------------------------------------------------------

def spawn(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str | None,
    stdout_path: str,
    stderr_path: str,
    *,
    stdin_pipe: bool = False,
) -> Spawned:
    """Start ``argv`` in a new session with output to files. Raises SpawnError."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    out_fd = os.open(stdout_path, flags, 0o600)
    err_fd = os.open(stderr_path, flags, 0o600)
    stdin_read = stdin_write = None
    if stdin_pipe:
        stdin_read, stdin_write = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(stdin_write, False)
    try:
        proc = subprocess.Popen(
            list(argv), stdin=stdin_read if stdin_pipe else subprocess.DEVNULL,
            stdout=out_fd, stderr=err_fd, cwd=cwd, env=dict(env),
            start_new_session=True, close_fds=True,
        )
    except OSError as exc:
        if stdin_write is not None:
            os.close(stdin_write)
        reason = exc.strerror or str(exc)
        if cwd is not None and exc.filename == cwd:
            raise SpawnError(f"cannot change to directory {cwd!r}: {reason}") from None
        raise SpawnError(f"cannot execute {argv[0]!r}: {reason}") from None
    except (ValueError, TypeError) as exc:
        if stdin_write is not None:
            os.close(stdin_write)
        raise SpawnError(f"cannot start {argv[0]!r}: {exc}") from None
    finally:
        os.close(out_fd)
        os.close(err_fd)
        if stdin_read is not None:
            os.close(stdin_read)
    pid = proc.pid
    proc.returncode = 0  # disarm Popen.__del__/_cleanup: we are the only reaper
    # The child is unreaped (only we reap it), so its pid cannot be recycled yet:
    # this pidfd is certain to name it, even if it has already exited.
    pidfd = os.pidfd_open(pid)
    return Spawned(pid=pid, pidfd=pidfd, stdin_fd=stdin_write)


def _decode_status(status: int) -> ExitStatus:
    if os.WIFSIGNALED(status):
        return ExitStatus(code=None, signal=os.WTERMSIG(status))
    return ExitStatus(code=os.waitstatus_to_exitcode(status), signal=None)


def reap_all() -> list[tuple[int, ExitStatus]]:
    """Reap every child that has exited: the daemon's single reaper.

    The daemon is a child subreaper, so besides the children it spawned this
    collects orphaned descendants that were re-parented to it; the caller
    dispatches each status by pid.
    """
    reaped = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        reaped.append((pid, _decode_status(status)))
    return reaped


def become_subreaper() -> bool:
    """PR_SET_CHILD_SUBREAPER: orphaned descendants are re-parented to us, not to PID 1.

    A double-forked grandchild thus stays in our tree (found by parent links,
    reaped by us) instead of escaping, and no zombie is left to an init that
    does not reap (some container inits do not).
    """
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def write_nonblocking(fd: int, data: memoryview) -> int:
    """One write to a non-blocking pipe; BlockingIOError when it is full."""
    return os.write(fd, data)


def close_fd(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


# --- signals -----------------------------------------------------------------------

def signal_number(value: str | int) -> int:
    """Accept 15, "15", "TERM", "SIGTERM" (names in capitals). ValueError if not a real signal."""
    if isinstance(value, bool):
        raise ValueError("not a signal")
    if isinstance(value, int) or (isinstance(value, str) and value.isascii() and value.isdigit()
                                  and not value.startswith("0")):
        number = int(value)
        if number not in valid_signals():
            raise ValueError(f"{value!r} is not a valid signal number")
        return number
    if not isinstance(value, str):
        raise ValueError("a signal is a name or a number")
    name = value
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        number = int(signal.Signals[name])
    except KeyError:
        raise ValueError(f"{value!r} is not a known signal name") from None
    return number


def valid_signals() -> frozenset[int]:
    return frozenset(int(s) for s in signal.valid_signals() if 0 < int(s) < signal.NSIG)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def pidfd_signal(pidfd: int, sig: int) -> bool:
    """Signal through a pidfd. False if the process has already exited."""
    try:
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False


def signal_group(pgid: int, sig: int) -> bool:
    """Signal a process group. Call only while its leader is unreaped (see module doc)."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def group_has_members(pgid: int) -> bool:
    """Whether any process is still in group ``pgid`` (signal 0 sends nothing)."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def open_pidfd(pid: int) -> int:
    """A pidfd for whatever process holds ``pid`` now. ProcessLookupError if none."""
    try:
        return os.pidfd_open(pid)
    except OSError as exc:
        if exc.errno == 3:  # ESRCH
            raise ProcessLookupError(pid) from None
        raise


def send_via_pidfd(pidfd: int, sig: int) -> None:
    """Signal through a pidfd, raising ProcessLookupError/PermissionError as kill(2) would."""
    signal.pidfd_send_signal(pidfd, sig)


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


# --- signal dispositions children inherit --------------------------------------------

# Signals left alone: SIGKILL and SIGSTOP cannot be caught; a handler for a fault
# signal would return into the fault; one for SIGTTIN/SIGTTOU/SIGTSTP would turn the
# daemon's terminal writes into a loop; Popen already restores SIGPIPE and SIGXFSZ.
# SIGCHLD is dealt with apart (see reset_inherited_signals).
_KEPT_SIGNALS = frozenset({
    signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGSEGV, signal.SIGBUS,
    signal.SIGFPE, signal.SIGILL, signal.SIGTRAP, signal.SIGSYS, signal.SIGABRT,
    signal.SIGTTIN, signal.SIGTTOU, signal.SIGTSTP, signal.SIGPIPE, signal.SIGXFSZ})


def _ignore(signum: int, frame: object) -> None:
    """A handler that does nothing: the daemon ignores the signal, execve resets it."""


def reset_inherited_signals() -> list[str]:
    """Let children start with default signal dispositions and nothing blocked.

    SIG_IGN and the blocked mask survive fork and execve. A daemon started under
    ``nohup`` (SIGHUP ignored) or as a background job of a script (SIGINT and
    SIGQUIT ignored) would pass that to every child, and a stop with those
    signals would do nothing. systemd resets every signal for the services it
    starts; here, each signal this process inherited as ignored gets a handler
    that does nothing instead: the daemon still ignores it, and execve resets a
    handled signal to SIG_DFL in the child. An ignored SIGCHLD (the kernel would
    reap children before their status is read) goes back to SIG_DFL, and the
    calling (main) thread's mask, which children inherit, is cleared.

    Must run in the main thread. Returns the names of the signals it changed.
    """
    changed = []
    for signum in signal.valid_signals():
        if signum in _KEPT_SIGNALS and signum != signal.SIGCHLD:
            continue
        try:
            if signal.getsignal(signum) != signal.SIG_IGN:
                continue
            signal.signal(signum, signal.SIG_DFL if signum == signal.SIGCHLD else _ignore)
        except (OSError, ValueError):  # a number glibc keeps for itself
            continue
        changed.append(signal_name(signum))
    blocked = signal.pthread_sigmask(signal.SIG_SETMASK, set())
    changed += [f"{signal_name(signum)} (blocked)" for signum in sorted(blocked)]
    return changed


# --- limits ------------------------------------------------------------------------

def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (one pidfd per child). Returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


