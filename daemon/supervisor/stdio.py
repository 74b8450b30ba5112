"""A child's stdin, its output, and the cap on what output is kept.

* **Stdin** is a pipe only for a process started with ``stdin: "pipe"``. Writes
  never block the loop: the pipe is non-blocking, a full pipe is waited on with
  ``add_writer`` up to a timeout, and one lock per child keeps concurrent writes
  from interleaving. A process being stopped takes no more input.
* **Output** is read through :class:`~daemon.output.OutputReader` (bounded
  chunks, off the loop). The dropped mark is looked up at each read, so bytes
  dropped meanwhile are never sent.
* **Caps**: a stream over ``max_output_bytes`` loses its oldest bytes (once a
  second, and when the process ends); the new dropped marks are written to the
  record (``outputTruncated``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from .. import oskit
from ..config import Config
from ..errors import Conflict, Unavailable
from ..model import SIGNALLABLE, Process
from ..output import OutputReader, OutputStore
from .children import Child, Children, resolve
from .table import ProcessTable
from .unsaved import UnsavedRecords


class Stdio:
    def __init__(self, loop: asyncio.AbstractEventLoop, log: Any, config: Config,
                 outputs: OutputStore, table: ProcessTable, children: Children,
                 unsaved: UnsavedRecords) -> None:
        self._loop = loop
        self._log = log
        self._config = config
        self._outputs = outputs
        self._table = table
        self._children = children
        self._unsaved = unsaved

    # --- output ----------------------------------------------------------------------

    def cap_output(self, proc: Process) -> asyncio.Future[None] | None:
        """Keep each stream within max_output_bytes; write the new dropped marks, if any."""
        cap = self._config.max_output_bytes
        stdout = self._outputs.enforce_cap(proc.id, "stdout", cap, proc.stdout_dropped)
        stderr = self._outputs.enforce_cap(proc.id, "stderr", cap, proc.stderr_dropped)
        if (stdout, stderr) == (proc.stdout_dropped, proc.stderr_dropped):
            return None
        self._log.info("process.output_truncated", process_id=proc.id, stdout_dropped=stdout,
                       stderr_dropped=stderr)
        proc.stdout_dropped, proc.stderr_dropped = stdout, stderr
        return self._unsaved.write(proc, stdout_dropped=stdout, stderr_dropped=stderr)

    def reader(self, record: Process, stream: str) -> OutputReader:
        """A stream to read in bounded chunks off the loop."""
        process_id, live = record.id, self._table
        field = "stdout_dropped" if stream == "stdout" else "stderr_dropped"
        return self._outputs.reader(process_id, stream,
                                    lambda: int(getattr(live.get(process_id) or record, field)))

    # --- stdin -----------------------------------------------------------------------

    async def write(self, process_id: int, data: bytes, timeout: float) -> int:
        """Write all of ``data`` to a live record's stdin pipe; returns how many bytes."""
        child = self._stdin_child(process_id)
        async with child.stdin_lock:
            view, written = memoryview(data), 0
            while written < len(view):
                if child.stdin_fd is None:
                    raise Conflict(f"process {process_id} stdin is closed")
                try:
                    written += oskit.write_nonblocking(child.stdin_fd, view[written:])
                except BlockingIOError:
                    if not await self._writable(child, timeout):
                        raise Unavailable(f"process {process_id} is not reading its stdin "
                                          f"({written} of {len(view)} bytes written)") from None
                except BrokenPipeError:
                    raise Conflict(f"process {process_id} closed its stdin") from None
            return written

    def is_open(self, process_id: int) -> bool:
        """Whether the process has a stdin pipe that can still be written."""
        child = self._children.get(process_id)
        return child is not None and child.stdin_fd is not None

    def close(self, process_id: int) -> None:
        self._children.close_stdin(self._stdin_child(process_id))

    def _stdin_child(self, process_id: int) -> Child:
        proc = self._table.get(process_id)
        child = self._children.get(process_id)
        if proc is None or child is None or proc.state not in SIGNALLABLE:
            raise Conflict(f"process {process_id} is not running")
        if proc.stdin != "pipe":
            raise Conflict(f"process {process_id} was not started with stdin: \"pipe\"")
        if child.stdin_fd is None:
            raise Conflict(f"process {process_id} stdin is closed")
        return child

    async def _writable(self, child: Child, timeout: float) -> bool:
        """Wait until the stdin pipe drains (True) or ``timeout`` passes (False). A close
        meanwhile wakes this early (:meth:`Children.close_stdin`): the caller sees it closed."""
        fd = child.stdin_fd
        assert fd is not None
        future: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_writer(fd, resolve, future)
        child.stdin_waiter = future
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if child.stdin_waiter is future:  # not closed meanwhile: still registered
                child.stdin_waiter = None
                self._loop.remove_writer(fd)
