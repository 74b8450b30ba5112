"""Per-process stdout/stderr files: ``<state dir>/output/<id>.stdout`` and ``.stderr``.

The keeper (daemon/keeper/) holds each child's pipes and writes these files: a
child never blocks on a daemon that is busy or gone, and its output survives a
daemon crash. Beside each file the keeper keeps an arrival index,
``<id>.<stream>.idx`` (offset → time). Files stay until the record is deleted;
then all four go.

Capture is bounded, by the keeper as it writes (keeper/pump.py): past
``max_output_bytes`` the oldest bytes of a stream are freed by punching a hole at
the head of the file. Offsets keep their meaning (byte N is always byte N of
what the child wrote), and a reader finds the first byte still kept in the file
itself (``lseek(SEEK_DATA)``): :mod:`daemon.output_read`.

This module (with :mod:`daemon.output_read`, which holds the reader and whose
names it re-exports) is the only place in the daemon that reads output files.
The HTTP routes read through :class:`OutputReader`: chunks of at most READ_CHUNK
bytes, each read on one of the store's reader threads, so no output, however
large, is ever whole in memory, and no read blocks the event loop.

The layout is flat (no directory per process): a directory is one more inode per
start. Directories of the older ``output/<id>/stdout`` layout are moved to the
flat names the first time the store opens a directory (``output/.layout``
records that it is done). The spare files earlier versions kept under
``output/.spare/`` are removed then too: the keeper creates each file off the
daemon's loop, so they are no longer needed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .output_read import READ_CHUNK as READ_CHUNK  # re-exported: callers import them from here
from .output_read import OutputOverrun as OutputOverrun
from .output_read import OutputReader as OutputReader

STREAMS = ("stdout", "stderr")
INDEX_SUFFIX = ".idx"
_LAYOUT_MARKER = ".layout"   # present once the directory is in the flat layout
_OLD_SPARE_DIR = ".spare"
READ_THREADS = 4          # output reads in flight at once (a slow disk never blocks the loop)
_T = TypeVar("_T")


class OutputStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._prefix = f"{root}{os.sep}"
        self._closed = False
        self._read_pool: ThreadPoolExecutor | None = None   # made at the first read
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        layout = root / _LAYOUT_MARKER
        if not layout.exists():  # scanned once, not at every start (it may hold 400,000 files)
            self._move_legacy_layout()
            layout.write_text("flat\n")
        shutil.rmtree(root / _OLD_SPARE_DIR, ignore_errors=True)

    def path(self, process_id: int, stream: str) -> str:
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}")
        return f"{self._prefix}{process_id}.{stream}"

    def close(self) -> None:
        """Stop the reader threads (a read still asked for after this runs on asyncio's
        default pool)."""
        self._closed = True
        if self._read_pool is not None:
            self._read_pool.shutdown(wait=True)
        self._read_pool = None

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

    # --- reading, removing ---

    def reader(self, process_id: int, stream: str) -> OutputReader:
        """A reader of one stream, in bounded chunks off the loop."""
        return OutputReader(self, self.path(process_id, stream))

    async def _in_thread(self, function: Callable[..., _T], *args: Any) -> _T:
        if self._read_pool is None and not self._closed:
            self._read_pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="stablehand-output-read")
        return await asyncio.get_running_loop().run_in_executor(self._read_pool, function, *args)

    def size(self, process_id: int, stream: str) -> int:
        try:
            return os.stat(self.path(process_id, stream)).st_size
        except FileNotFoundError:
            return 0

    def remove(self, process_id: int) -> None:
        """Delete a record's output: both streams and their arrival indexes."""
        for stream in STREAMS:
            path = self.path(process_id, stream)
            for name in (path, path + INDEX_SUFFIX):
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    pass
