"""Per-process stdout/stderr files: ``<state dir>/output/<id>.stdout`` and ``.stderr``.

Children write straight into these files (never into pipes held by the daemon),
so their output survives a daemon crash and a child never blocks on a daemon
that is busy or gone. Files stay until the record is deleted.

Capture is bounded: when a stream holds more than its cap, :meth:`enforce_cap`
frees the oldest bytes by punching a hole at the head of the file
(``fallocate(PUNCH_HOLE)``). The disk space is returned, the child's appends go
on undisturbed, and offsets keep their meaning: byte N is always byte N of
what the child wrote. Reads never return bytes below the dropped mark. The mark
moves on the event loop; the punch itself runs on a thread of its own (on ext4
with ``discard`` a punch can take seconds).

This module (with :mod:`daemon.output_read`, which holds the reader and whose
names it re-exports) is the only place that reads output files. The HTTP routes
read through :class:`OutputReader`: chunks of at most READ_CHUNK bytes, each read on
one of the store's reader threads, so no output, however large, is ever whole
in memory, and no read blocks the event loop.

Why the files are made ahead of time. Creating a file costs an inode, and on
ext4 that cost depends on how full the directory's block group is: on one disk
we measured 15 us in one directory and 800 us in another. Paid on the event
loop at every start, that alone could double the time to start 200 children.
So the store keeps a few hundred empty *spare* files under ``output/.spare/``,
made by a worker thread while the daemon is quiet, and a start only renames two
of them to its record's names (about 15 us, no inode allocated). When the spares
run out, a start creates its files itself, as it always could.
Spares are plain empty files: one left by a crash is reused at the next start.

Empty output is reused. A start that finds no spare takes, before creating
anything, an output file of a recently finished process that is still empty
and that no process has open, renaming it to its own name (one rename, no
inode); the finished record's stream then reads as empty, as a missing file
always did. A steady churn of quiet children (and most children never write to
stderr) then allocates no inodes at all. The cost lands on the start, which
would otherwise create the file, and not on the exit: recording a finished
process is a deque append (:meth:`finished`). "No process has it open" is the
kernel's own answer: a write lease (``F_SETLEASE F_WRLCK``) is granted only when
no other open file refers to the inode, so a straggler that still holds the
file keeps it. A process that opens the file while the lease is held breaks it,
and the rename is undone. The break is notified with SIGURG (``F_SETSIG``),
whose default action is to ignore it, not SIGIO, whose default would end the
daemon.
The layout is flat (no directory per process) for the same reason: a
directory is one more inode per start. Directories of the older
``output/<id>/stdout`` layout are moved to the flat names the first time the
store opens a directory (``output/.layout`` records that it is done).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import fcntl
import itertools
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from .config import SPARE_OUTPUTS as SPARES
from .output_read import READ_CHUNK as READ_CHUNK  # re-exported: callers import them from here
from .output_read import OutputOverrun as OutputOverrun
from .output_read import OutputReader as OutputReader

STREAMS = ("stdout", "stderr")
_BATCH = 128          # files per spare directory
_REUSE_TRIES = 4      # finished files looked at per stream before a start creates its own
_SPARE_DIR = ".spare"
_LAYOUT_MARKER = ".layout"   # present once the directory is in the flat layout
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_BLOCK = 4096
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_libc = ctypes.CDLL(None, use_errno=True)
READ_THREADS = 4          # output reads in flight at once (a slow disk never blocks the loop)
_T = TypeVar("_T")
log = structlog.get_logger("stablehand.output")


class OutputStore:
    def __init__(self, root: Path, spares: int = SPARES) -> None:
        self.root = root
        self._prefix = f"{root}{os.sep}"
        self._spare_dir = root / _SPARE_DIR
        self._spare_prefix = f"{self._spare_dir}{os.sep}"
        self._spares_wanted = spares * len(STREAMS)   # files
        # Paths of empty files ready to be renamed. Filled by one worker thread, taken
        # by the loop: deque.extend and popleft are atomic.
        self._spares: collections.deque[str] = collections.deque()
        # Output paths of recently finished processes, newest last: reused when spares run out.
        self._finished: collections.deque[str] = collections.deque(maxlen=2 * max(spares, _BATCH))
        self._serial = itertools.count()
        self._token = os.urandom(4).hex()        # batch names never meet a previous run's
        self._refilling = False                   # a refill thread is running
        self._paused = False                      # ...and should stop at the next pair
        self._refiller: threading.Thread | None = None
        self._closed = False
        self._read_pool: ThreadPoolExecutor | None = None   # made at the first read
        self._punch_pool: ThreadPoolExecutor | None = None  # made at the first hole to punch
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        layout = root / _LAYOUT_MARKER
        if not layout.exists():  # scanned once, not at every start (it may hold 400,000 files)
            self._move_legacy_layout()
            layout.write_text("flat\n")
        self._spare_dir.mkdir(exist_ok=True, mode=0o700)
        self._adopt_spares()
        self._can_punch = _can_punch_holes(self._spare_dir)

    def path(self, process_id: int, stream: str) -> str:
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}")
        return f"{self._prefix}{process_id}.{stream}"

    def prepare(self, process_id: int) -> tuple[str, str]:
        """(stdout path, stderr path) for a process about to start.

        Each file is a spare renamed to its name, else a finished process's empty,
        unused file renamed to it, else nothing yet: the spawn creates it.
        """
        stdout, stderr = f"{self._prefix}{process_id}.stdout", f"{self._prefix}{process_id}.stderr"
        for path in (stdout, stderr):
            try:
                os.rename(self._spares.popleft(), path)
                continue
            except IndexError:
                pass
            except OSError:
                continue  # a spare went missing: the spawn creates this one
            self._reuse_finished(path)
        return stdout, stderr

    def finished(self, process_id: int) -> None:
        """A process ended: its output files may be reused once they are empty and unused."""
        self._finished.append(f"{self._prefix}{process_id}.stdout")
        self._finished.append(f"{self._prefix}{process_id}.stderr")

    def _reuse_finished(self, path: str) -> bool:
        """Rename a finished process's empty, unused file to ``path``; False if none was found."""
        for _ in range(_REUSE_TRIES):
            try:
                candidate = self._finished.pop()
            except IndexError:
                return False
            if _take_if_empty_and_unused(candidate, path):
                return True
        return False

    # --- spares ---

    def needs_spares(self) -> bool:
        return len(self._spares) < self._spares_wanted

    def refill_in_background(self) -> None:
        """Make spares on a thread of their own, until the pool is full or :meth:`pause_refill`.

        The supervisor calls this only when it has been quiet for a while and
        pauses it at the next start or stop: file creation competes with a burst
        for the CPU and, worse, for the filesystem journal (a registry commit's
        fsync waits for every inode being created). A thread at idle priority
        was tried instead: it made that worse, being preempted while holding a
        journal handle.
        """
        if self._refilling or self._closed:
            return
        self._refilling, self._paused = True, False
        self._refiller = threading.Thread(target=self._refill, name="stablehand-output-spares",
                                          daemon=True)
        self._refiller.start()

    def pause_refill(self) -> None:
        """Stop a running refill after the pair it is making (cheap: a flag)."""
        self._paused = True

    def close(self) -> None:
        """Stop a refill and wait for it (it stops after the pair it is making), and the
        reader threads (a read still asked for after this runs on asyncio's default pool)."""
        self._paused = self._closed = True
        if self._refiller is not None:
            self._refiller.join()
        for pool in (self._read_pool, self._punch_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._read_pool = self._punch_pool = None

    def _refill(self) -> None:
        try:
            self.make_spares()
        except Exception as exc:  # not fatal: a start creates its own files and reports its own errors
            log.warning("output.spares_failed", error=str(exc))
        finally:
            self._refilling = False

    def make_spares(self) -> int:
        """Create spare pairs until the pool is full (or paused); blocking.

        Each batch is made in a directory of its own and published when it is
        done: creating a file holds its directory's lock for as long as the
        inode takes, and a rename out of that directory would wait for it.
        Returns how many files it made.
        """
        made = 0
        self._remove_drained_batches()
        while len(self._spares) < self._spares_wanted and not self._paused:
            batch = f"{self._spare_prefix}{self._token}-{next(self._serial)}"
            os.mkdir(batch, 0o700)
            files = []
            for n in range(min(_BATCH, self._spares_wanted - len(self._spares))):
                if self._paused:  # set by the loop's thread meanwhile (mypy narrowed it above)
                    break  # type: ignore[unreachable]
                path = f"{batch}{os.sep}{n}"
                os.close(os.open(path, _CREATE, 0o600))
                files.append(path)
            self._spares.extend(files)
            made += len(files)
        return made

    def _remove_drained_batches(self) -> None:
        with os.scandir(self._spare_dir) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    try:
                        os.rmdir(entry.path)
                    except OSError:
                        pass  # spares left in it

    def _adopt_spares(self) -> None:
        """Reuse the empty files a previous run left; remove anything else in the spare dir."""
        with os.scandir(self._spare_dir) as batches:
            listed = list(batches)
        for batch in listed:
            if not batch.is_dir(follow_symlinks=False):
                _remove(batch.path)
                continue
            with os.scandir(batch.path) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False) and len(self._spares) < self._spares_wanted \
                            and entry.stat(follow_symlinks=False).st_size == 0:
                        self._spares.append(entry.path)
                    else:
                        _remove(entry.path)
        self._remove_drained_batches()

    def _move_legacy_layout(self) -> None:
        """``output/<id>/stdout`` (the first layout) becomes ``output/<id>.stdout``."""
        with os.scandir(self.root) as entries:
            legacy = [e.name for e in entries if e.name.isdigit() and e.is_dir(follow_symlinks=False)]
        for name in legacy:
            for stream in STREAMS:
                try:
                    os.replace(f"{self._prefix}{name}{os.sep}{stream}", f"{self._prefix}{name}.{stream}")
                except FileNotFoundError:
                    pass  # that stream was never written
            try:
                os.rmdir(f"{self._prefix}{name}")
            except OSError:
                pass  # something else in there: leave it for the operator

    # --- reading, capping, removing ---

    def reader(self, process_id: int, stream: str, dropped: Callable[[], int]) -> OutputReader:
        """A reader of one stream, in bounded chunks off the loop; ``dropped`` gives the
        stream's dropped mark at the time of each read."""
        return OutputReader(self, self.path(process_id, stream), dropped)

    async def _in_thread(self, function: Callable[..., _T], *args: Any) -> _T:
        if self._read_pool is None and not self._closed:
            self._read_pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="stablehand-output-read")
        return await asyncio.get_running_loop().run_in_executor(self._read_pool, function, *args)

    def size(self, process_id: int, stream: str) -> int:
        try:
            return os.stat(self.path(process_id, stream)).st_size
        except FileNotFoundError:
            return 0

    def enforce_cap(self, process_id: int, stream: str, cap: int, dropped: int) -> int:
        """Drop the oldest bytes of a stream past ``cap``; returns the new dropped mark.

        Keeps at least ``cap // 2`` of the newest bytes (block aligned), so a
        stream is not trimmed again on every check. The mark moves at once (reads
        never return bytes below it); the disk space is freed by a hole punched on
        the store's punch thread, because on ext4 with ``discard`` one punch can
        take seconds and this is called on the event loop. A filesystem that
        cannot punch holes (found once, when the store opens) keeps everything.
        """
        if not self._can_punch:
            return dropped
        size = self.size(process_id, stream)
        if size - dropped <= cap:
            return dropped
        mark = max(dropped, (size - cap // 2) // _BLOCK * _BLOCK)
        if mark <= dropped:
            return dropped
        path = self.path(process_id, stream)
        if self._closed:  # shutting down: no thread to hand it to
            _punch(path, mark)
        else:
            if self._punch_pool is None:
                self._punch_pool = ThreadPoolExecutor(1, thread_name_prefix="stablehand-output-punch")
            self._punch_pool.submit(_punch, path, mark)
        return mark

    def remove(self, process_id: int) -> None:
        for stream in STREAMS:
            _remove(self.path(process_id, stream))


def _can_punch_holes(directory: Path) -> bool:
    """Whether the filesystem holding ``directory`` can punch holes (tmpfs, ext4, xfs,
    btrfs can; FAT and old NFS cannot), tried on a small unlinked file."""
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:
        return True  # cannot tell (no O_TMPFILE here): try, and log what fails
    try:
        os.write(fd, bytes(2 * _BLOCK))
        return bool(_libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE,
                                    ctypes.c_long(0), ctypes.c_long(_BLOCK)) == 0)
    except OSError:
        return True
    finally:
        os.close(fd)


def _punch(path: str, mark: int) -> None:
    """Free the disk blocks of ``path`` below ``mark`` (runs on the punch thread)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # the record was deleted meanwhile
    except OSError as exc:
        log.warning("output.punch_failed", path=path, error=exc.strerror)
        return
    try:
        if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE,
                           ctypes.c_long(0), ctypes.c_long(mark)) != 0:
            log.warning("output.punch_failed", path=path, error=os.strerror(ctypes.get_errno()))
    finally:
        os.close(fd)


def _take_if_empty_and_unused(path: str, target: str) -> bool:
    """Rename ``path`` to ``target`` if it is empty and no open file refers to it.

    See the module docstring: the write lease is the kernel's "nobody else has
    it open", and a lease broken while we hold it means someone opened the file
    in that moment, so the rename is undone.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except OSError:  # open elsewhere (EAGAIN), or no leases on this filesystem
        os.close(fd)
        return False
    try:
        if os.fstat(fd).st_size != 0:
            return False
        os.rename(path, target)
        if fcntl.fcntl(fd, fcntl.F_GETLEASE) != fcntl.F_WRLCK:
            os.rename(target, path)
            return False
        return True
    except OSError:
        return False
    finally:
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        finally:
            os.close(fd)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
