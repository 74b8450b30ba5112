"""``stablehand keeper --state-dir DIR [--grace S]``: set up, then run the keeper's loop.

Start-up, in this order, each step a reason to refuse with a message and exit 1:
the state dir (``0700``, made if missing) and ``keeper/`` in it; an exclusive
``flock`` on ``keeper.lock`` (``O_NOFOLLOW``, ``0600``) — a second keeper for the
same state dir is refused here, before it touches the socket — then our pid and
protocol version written into it; the process becomes a child subreaper (an
orphaned grandchild is re-parented to the keeper and reaped by it); signals
the keeper inherited as ignored get a do-nothing handler instead (so that
``execve`` resets them and children start with default dispositions; a keeper
started under ``nohup`` would otherwise hand SIGHUP's SIG_IGN to every child);
the exit journal is reloaded; a stale ``keeper.sock`` is removed (safe: we hold
the lock) and the socket bound under umask ``177`` (so it is ``0600`` from birth).

Every fd the keeper opens is close-on-exec (Python's default), and children are
spawned with ``close_fds``: no child inherits the lock, the socket or another
child's pipes. Exit status: 0 after a stop by SIGTERM/SIGINT, 1 when it cannot
start, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import resource
import signal
import socket
import sys

from . import protocol
from .journal import Journal
from .server import Keeper, log

_KEPT_SIGNALS = frozenset({
    signal.SIGKILL, signal.SIGSTOP, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL,
    signal.SIGTRAP, signal.SIGSYS, signal.SIGABRT, signal.SIGTTIN, signal.SIGTTOU,
    signal.SIGTSTP, signal.SIGPIPE, signal.SIGXFSZ})


class StartError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stablehand keeper",
        description="Hold the children of one state dir: spawn, pipes, output capture, exits.")
    parser.add_argument("--state-dir", metavar="DIR", required=True)
    parser.add_argument("--grace", metavar="SECONDS", type=float, default=10.0,
                        help="on SIGTERM, time between SIGTERM and SIGKILL to children (10)")
    args = parser.parse_args(argv)
    state_dir = os.path.abspath(args.state_dir)
    try:
        lock_fd = take_lock(state_dir)
        listener, journal = prepare(state_dir)
    except StartError as exc:
        print(f"stablehand keeper: {exc}", file=sys.stderr)
        return 1
    log("keeper.started", pid=os.getpid(), state_dir=state_dir, version=protocol.VERSION,
        unacknowledged_exits=len(journal.pending))
    try:
        status = Keeper(state_dir, listener, journal, args.grace).run()
    finally:
        _unlink(os.path.join(state_dir, protocol.SOCKET_NAME))
        listener.close()
        journal.close()
        os.close(lock_fd)
    log("keeper.stopped", pid=os.getpid())
    return status


def take_lock(state_dir: str) -> int:
    keeper_dir = os.path.join(state_dir, protocol.KEEPER_DIR)
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)   # (makedirs gives the mode to the leaf only)
        os.makedirs(keeper_dir, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(state_dir, protocol.LOCK_NAME),
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StartError(f"cannot use state dir {state_dir}: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
        os.close(fd)
        raise StartError(f"another keeper is running for {state_dir} ({holder or 'pid unknown'})") \
            from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "version": protocol.VERSION}).encode() + b"\n", 0)
    return fd


def prepare(state_dir: str) -> tuple[socket.socket, Journal]:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:   # PR_SET_CHILD_SUBREAPER
        raise StartError("cannot become a child subreaper (prctl PR_SET_CHILD_SUBREAPER)")
    reset_inherited_signals()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:   # each child costs a few fds (see the package docstring)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        journal = Journal(os.path.join(state_dir, protocol.KEEPER_DIR, protocol.JOURNAL_NAME))
    except OSError as exc:
        raise StartError(f"cannot open the exit journal: {exc}") from None
    _unlink(os.path.join(state_dir, protocol.SOCKET_NAME))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dirfd = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) \
        if protocol.needs_dirfd(state_dir) else None
    old_umask = os.umask(0o177)   # the socket is born 0600
    try:
        listener.bind(protocol.socket_address(state_dir, dirfd))
        listener.listen(64)
    except OSError as exc:
        listener.close()
        journal.close()
        raise StartError(f"cannot listen on {state_dir}/{protocol.SOCKET_NAME}: {exc}") from None
    finally:
        os.umask(old_umask)
        if dirfd is not None:
            os.close(dirfd)
    return listener, journal


def reset_inherited_signals() -> None:
    """Children must start with default signal dispositions and nothing blocked (see above)."""
    for signum in signal.valid_signals():
        if signum in _KEPT_SIGNALS:
            continue
        try:
            if signal.getsignal(signum) == signal.SIG_IGN:
                signal.signal(signum, signal.SIG_DFL if signum == signal.SIGCHLD else _ignore)
        except (OSError, ValueError):   # a number glibc keeps for itself
            continue
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _ignore(signum: int, frame: object) -> None:
    """Still ignored by the keeper; reset to SIG_DFL by execve in its children."""


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


if __name__ == "__main__":
    sys.exit(main())
