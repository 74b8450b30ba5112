"""Signals: names and numbers, pidfd and process-group signalling, the
dispositions children inherit, the subreaper flag and the fd limit.

A process is signalled through a pidfd that pins it (see :mod:`daemon.oskit.proc`
for how a pidfd is checked against a process's identity); a process group only
while its leader is unreaped, so the group id cannot have been handed out again.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import signal

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


_VALID = frozenset(int(s) for s in signal.valid_signals() if 0 < int(s) < signal.NSIG)


def valid_signals() -> frozenset[int]:
    """The signals this system has (read once: the set is built of enums, 10 µs a call)."""
    return _VALID


_NAMES = {int(s): s.name for s in signal.Signals}


def signal_name(number: int) -> str:
    return _NAMES.get(number) or f"SIG{number}"


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


# --- signal dispositions the keeper (and so children) inherit ------------------------

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


@dataclasses.dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a child ended, as the keeper reaped it."""

    code: int | None          # exit code, when it exited
    signal: int | None        # signal number, when a signal ended it

    @property
    def signal_name(self) -> str | None:
        return signal_name(self.signal) if self.signal else None
