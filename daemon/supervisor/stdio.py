"""A child's stdin and its output, as the keeper holds them.

* **Stdin** is a pipe only for a process started with ``stdin: "pipe"``, and the
  keeper holds its write end, so it outlives a daemon restart. A write is handed
  to the keeper in pieces; while the keeper's buffer for the child (1 MiB) is
  full, the write waits, up to its timeout (then 503, saying how much went in).
  One lock per process keeps concurrent writes from interleaving. A process being
  stopped takes no more input; an adopted one (its keeper was killed) has none.
  A process started with ``tty`` has the terminal as stdin: a write is keystrokes
  (the keeper writes them to the pty master), and :meth:`Stdio.resize` sets its
  window size.
* **Output** is read through :class:`~daemon.output.OutputReader` (bounded
  chunks, off the loop). The keeper writes the files and enforces
  ``max_output_bytes`` as it writes (keeper/pump.py); a reader finds the first
  byte still kept in the file itself, so bytes dropped meanwhile are never sent.
"""

from __future__ import annotations

from typing import Any

from ..errors import Conflict, Unavailable
from ..keeper.client import KeeperGone, NoSuchChild, StdinClosed, StdinFull
from ..model import SIGNALLABLE, Process
from ..output import OutputReader, OutputStore
from .children import Child, Children
from .kept import KeeperLink
from .table import ProcessTable


class Stdio:
    def __init__(self, log: Any, outputs: OutputStore, table: ProcessTable, children: Children,
                 keeper: KeeperLink) -> None:
        self._log = log
        self._outputs = outputs
        self._table = table
        self._children = children
        self._keeper = keeper

    # --- output ----------------------------------------------------------------------

    def reader(self, record: Process, stream: str) -> OutputReader:
        """A stream to read in bounded chunks off the loop."""
        return self._outputs.reader(record.id, stream)

    # --- stdin -----------------------------------------------------------------------

    async def write(self, process_id: int, data: bytes, timeout: float) -> int:
        """Write all of ``data`` to a live record's stdin pipe; returns how many bytes."""
        child = self._stdin_child(process_id)
        async with child.stdin_lock:
            self._stdin_child(process_id)   # still open once the writes before it are done
            try:
                return await self._keeper.write_stdin(process_id, data, timeout)
            except StdinFull as exc:
                raise Unavailable(str(exc).replace("the process", f"process {process_id}", 1)) from None
            except StdinClosed:
                child.stdin_open = False
                raise Conflict(f"process {process_id} closed its stdin") from None
            except (NoSuchChild, KeeperGone):
                raise Conflict(f"process {process_id} is not running") from None

    def is_open(self, process_id: int) -> bool:
        """Whether the process has a stdin pipe that can still be written."""
        child = self._children.get(process_id)
        return child is not None and child.stdin_open

    async def close(self, process_id: int) -> None:
        child = self._stdin_child(process_id)
        child.stdin_open = False
        try:
            await self._keeper.close_stdin(process_id)
        except (NoSuchChild, StdinClosed, KeeperGone):
            pass   # it ended, or its end was closed already: closed either way

    # --- terminals -------------------------------------------------------------------

    async def resize(self, process_id: int, rows: int, cols: int) -> Process:
        """Resize a running record's terminal; the record, its ``tty`` replaced (not mutated:
        snapshots share it)."""
        proc = self._table.get(process_id)
        if proc is None or proc.state not in SIGNALLABLE or self._children.get(process_id) is None:
            raise Conflict(f"process {process_id} is not running")
        if proc.tty is None:
            raise Conflict(f"process {process_id} has no terminal (it was not started with tty)")
        try:
            await self._keeper.resize(process_id, rows, cols)
        except (NoSuchChild, KeeperGone, StdinClosed):
            raise Conflict(f"process {process_id} is not running on its terminal") from None
        proc.tty = {"rows": rows, "cols": cols}
        return proc

    def _stdin_child(self, process_id: int) -> Child:
        proc = self._table.get(process_id)
        child = self._children.get(process_id)
        if proc is None or child is None or proc.state not in SIGNALLABLE:
            raise Conflict(f"process {process_id} is not running")
        if proc.stdin != "pipe":
            raise Conflict(f"process {process_id} was not started with stdin: \"pipe\"")
        if not child.stdin_open:
            reason = "was lost with its keeper" if child.keeper_lost else "is closed"
            raise Conflict(f"process {process_id} stdin {reason}")
        return child
