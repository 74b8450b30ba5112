"""The state dir and the files in it are the daemon user's alone.

The registry keeps every caller's ``env`` (often secrets) and runs what its rows
say; the lock file is written on every start; the token opens the API. So:

* the state dir is 0700 and owned by the daemon's euid. A looser one (say a
  0755 dir from ``mkdir``) is tightened to 0700 with a ``state_dir.tightened``
  log line; one owned by another user is refused: a root daemon must not run
  rows that another user planted, nor trust a dir whose owner can swap files in
  it. A symlinked state dir is fine, its target is what is checked.
* the registry, its ``-wal``/``-shm`` and the lock are 0600 regular files owned
  by the daemon's euid. The registry is created 0600 before SQLite opens it
  (SQLite gives ``-wal``/``-shm`` the main file's mode); an existing looser one is
  tightened (``state_dir.file_tightened``); a symlink, a non-regular file or a
  file owned by someone else is refused.
* the lock file is opened with ``O_NOFOLLOW`` and is written only once it is
  known to be ours (a regular file we own, with one link) and its ``flock`` is
  held: nothing it did not create is ever truncated, and a symlink planted at
  ``stablehand.lock`` is refused with its target untouched.

Every refusal is a :class:`StateDirError` naming the path and what to do.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

import structlog

from .errors import StablehandError

log = structlog.get_logger("stablehand.statedir")


class StateDirError(StablehandError):
    """The state dir or one of its files is not safe to use; the message says why."""


def prepare_dir(path: Path) -> None:
    """Create ``path`` 0700, or check an existing one: ours, and tightened to 0700."""
    try:
        path.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StateDirError(f"cannot create state dir {path}: {exc.strerror}") from None
    try:
        info = path.stat()
    except OSError as exc:
        raise StateDirError(f"cannot use state dir {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise StateDirError(f"state dir {path} is not a directory; choose another --state-dir")
    euid = os.geteuid()
    if info.st_uid != euid:
        raise StateDirError(
            f"state dir {path} is owned by uid {info.st_uid}, not by uid {euid} that runs the "
            "daemon; its owner could plant processes for the daemon to run. Use a dir of "
            f"your own (--state-dir), or `chown {euid} {path}` if it really is the daemon's")
    mode = stat.S_IMODE(info.st_mode)
    if mode != 0o700:
        try:
            os.chmod(path, 0o700)
        except OSError as exc:
            raise StateDirError(f"state dir {path} is mode {mode:04o} and cannot be made 0700: "
                                f"{exc.strerror}") from None
        if mode & 0o077:
            log.warning("state_dir.tightened", path=str(path), old_mode=f"{mode:04o}", mode="0700")


def prepare_subdir(path: Path, what: str) -> None:
    """Create a directory inside the state dir 0700, or check an existing one.

    It must be a real directory (a symlink is never followed: it could point the
    daemon's writes anywhere) owned by the daemon's user.
    """
    try:
        os.mkdir(path, 0o700)
        return
    except FileExistsError:
        pass
    except OSError as exc:
        raise StateDirError(f"cannot create {what} {path}: {exc.strerror}") from None
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise StateDirError(f"{what} {path} is not a directory (a symlink is not followed); "
                            "move it away")
    if info.st_uid != os.geteuid():
        raise StateDirError(f"{what} {path} is owned by uid {info.st_uid}, not by uid "
                            f"{os.geteuid()} that runs the daemon; move it away")


def _check_ours(path: Path, info: os.stat_result, what: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise StateDirError(f"{what} {path} is not a regular file; move it away")
    if info.st_uid != os.geteuid():
        raise StateDirError(
            f"{what} {path} is owned by uid {info.st_uid}, not by uid {os.geteuid()} that runs "
            "the daemon; refusing to use a file someone else controls. Move it away")


def private_file(path: Path, what: str, *, create: bool) -> None:
    """Make sure ``path`` is a 0600 regular file of ours (created empty when ``create`` and
    absent). A symlink, another type or another owner is refused; a looser mode is fixed."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    if create:
        flags |= os.O_CREAT
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        return  # not there, and not to be created: nothing to check
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateDirError(f"{what} {path} is a symlink; refusing to follow it. "
                                "Remove it (its target is left untouched)") from None
        raise StateDirError(f"cannot open {what} {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        _check_ours(path, info, what)
        mode = stat.S_IMODE(info.st_mode)
        if mode != 0o600:
            os.fchmod(fd, 0o600)
            if mode & 0o077:
                log.warning("state_dir.file_tightened", path=str(path), old_mode=f"{mode:04o}",
                            mode="0600")
    finally:
        os.close(fd)


def prepare_registry(database: Path) -> None:
    """The registry and its WAL/SHM: 0600 and ours. Creates the (empty) database file so
    SQLite never creates it with the umask's mode; SQLite copies its mode to -wal/-shm."""
    private_file(database, "registry", create=True)
    for suffix in ("-wal", "-shm", "-journal"):
        private_file(database.with_name(database.name + suffix), "registry file", create=False)


class LockHeld(StablehandError):
    """Another process holds the lock; ``holder`` is the pid it wrote (or a description)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def lock(path: Path) -> int:
    """Open ``path`` without following a symlink, check it is ours, take an exclusive
    ``flock`` and only then write our pid. Returns the fd (closing it releases the lock).

    Raises :class:`LockHeld` when another process holds it, StateDirError when the path
    is not a lock file we may use.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateDirError(f"lock file {path} is a symlink; refusing to follow it. "
                                "Remove it (its target is left untouched)") from None
        raise StateDirError(f"cannot open lock file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        _check_ours(path, info, "lock file")
        if info.st_nlink != 1:
            raise StateDirError(f"lock file {path} has {info.st_nlink} hard links; it may be "
                                "another file's name. Remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise LockHeld(holder if holder.isdigit() else "another process") from None
        if stat.S_IMODE(info.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd
