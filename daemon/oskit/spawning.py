"""Spawning children, the single reaper, and the fds the supervisor holds.

Spawning uses ``subprocess.Popen`` for its careful fork/exec error reporting
(which file was missing, whether chdir failed) with ``start_new_session=True``
and no ``preexec_fn`` (aiosqlite runs threads). The Popen object is then
disarmed (``returncode`` set) so that its finaliser never becomes a second
reaper.

Reaping. Exactly one thing reaps: :func:`reap_all` (``waitpid(-1, WNOHANG)``),
called by the supervisor whenever a child's pidfd turns readable and once a
second. Nothing else here waits for a process, psutil's ``wait()`` included.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Mapping, Sequence

from ..errors import StablehandError
from .signals import signal_name


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


def write_nonblocking(fd: int, data: memoryview) -> int:
    """One write to a non-blocking pipe; BlockingIOError when it is full."""
    return os.write(fd, data)


def close_fd(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
