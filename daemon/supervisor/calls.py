"""The second half of the supervisor's public surface: calls on a live process's insides.

Signals and pids, stdin and output, the terminal, polls and leases. They are
methods of :class:`~.core.Supervisor` (it inherits this class), kept apart only so
that no module grows past a screenful or two; they use the facade's own parts,
declared below for the type checker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import oskit
from ..errors import Conflict
from ..keeper.client import KeeperGone, NoSuchChild
from ..model import ACTIVE, SIGNALLABLE, Process
from ..output import OutputReader
from ..registry import Registry, RegistryError

if TYPE_CHECKING:
    from .children import Children
    from .leases import Leases
    from .polling import Poll, Polls
    from .running import Runner
    from .stdio import Stdio
    from .stopping import Trees
    from .table import ProcessTable
    from .tasks import Tasks
    from .unsaved import UnsavedRecords


class ProcessCalls:
    registry: Registry
    _table: ProcessTable
    _children: Children
    _runner: Runner
    _trees: Trees
    _stdio: Stdio
    _unsaved: UnsavedRecords
    _tasks: Tasks
    _leases: Leases
    _polls: Polls

    if TYPE_CHECKING:   # the facade's own (core.py)
        async def get(self, process_id: int) -> Process: ...
        async def wait(self, process_id: int, timeout: float | None) -> tuple[Process, bool]: ...

    # --- signals and pids ------------------------------------------------------------

    @staticmethod
    def signal_number(value: str | int) -> int:
        """A signal given by name or number; ValueError if there is no such signal."""
        return oskit.signal_number(value)

    async def send_signal(self, process_id: int, sig: int, *, group: bool = False,
                    terminating_ok: bool = False) -> bool:
        """Deliver ``sig`` to a running process (or its group); state is unchanged.

        Returns False if the process already exited. Conflict if it is not running
        (nor terminating, with ``terminating_ok``).
        """
        proc = self._table.get(process_id)
        child = self._children.get(process_id)
        allowed = ACTIVE if terminating_ok else SIGNALLABLE
        if proc is None or proc.state not in allowed or child is None:
            state = proc.state.value if proc else "idle"
            raise Conflict(f"process {process_id} is not running (it is {state})")
        if child.kept:
            try:
                return await self._runner.keeper.signal(process_id, sig, group=group)
            except (NoSuchChild, KeeperGone):
                return False
        return oskit.pidfd_signal(child.pidfd, sig)

    async def signal_unmanaged(self, pid: int, sig: int, grace: float | None = None) -> bool:
        """Signal a process Stablehand did not start (only with ``allow_unmanaged``).

        With ``grace``: wait that long for it to exit, then SIGKILL and wait again.
        Returns whether it is gone (True without ``grace``). Raises
        ProcessLookupError / PermissionError like kill(2).
        """
        return await self._trees.signal_unmanaged(pid, sig, grace)

    async def record_for_pid(self, pid: int) -> Process | None:
        """The newest record whose process ran as OS ``pid`` (compat routes address by pid).

        The record whose child runs under it now comes first, as memory has it (a
        managed process's restart answers before its new run's pid is committed);
        then SQLite's newest, where an earlier run of a managed process counts too
        (the registry looks in its runs): a live one again as memory has it.
        """
        running = [p for p in self._table.records() if p.pid == pid and self.is_live_leader(p)]
        if running:
            return running[0].copy()
        record = await self.registry.newest_by_pid(pid)
        unsaved = self._unsaved.newest_with_pid(pid)
        if unsaved is not None and (record is None or unsaved.id >= record.id):
            return unsaved
        if record is None:
            return None
        live = self._table.get(record.id)
        return live.copy() if live is not None else (self._unsaved.get(record.id) or record)

    def is_live_leader(self, record: Process) -> bool:
        """Whether ``record``'s process is the one still running under its pid."""
        child = self._children.get(record.id)
        return child is not None and child.pid == record.pid and not child.exited.done()

    @staticmethod
    def pid_exists(pid: int) -> bool:
        return oskit.process_exists(pid)

    # --- output and stdin ------------------------------------------------------------

    async def output_reader(self, process_id: int, stream: str) -> OutputReader:
        """A stream to read in bounded chunks off the loop (how the HTTP routes read output);
        the dropped mark is looked up at each read, so bytes dropped meanwhile are never sent."""
        record = self._table.get(process_id) or await self.get(process_id)
        return self._stdio.reader(record, stream)

    async def write_stdin(self, process_id: int, data: bytes, timeout: float = 30.0) -> int:
        """Write to a child started with ``stdin: "pipe"``, never blocking the loop."""
        if process_id not in self._table:
            await self.get(process_id)  # NotFound for an unknown id
        return await self._stdio.write(process_id, data, timeout)

    def stdin_open(self, process_id: int) -> bool:
        """Whether the process has a stdin pipe that can still be written."""
        return self._stdio.is_open(process_id)

    async def close_stdin(self, process_id: int) -> None:
        if process_id not in self._table:
            await self.get(process_id)  # NotFound for an unknown id
        await self._stdio.close(process_id)

    # --- for agents: exec-then-poll and leases (polling.py, leases.py) ---------------

    async def poll(self, process_id: int, consumer: str, *, wait: float, max_bytes: int,
                   data: bytes = b"") -> Poll:
        """Write ``data`` to stdin, wait up to ``wait`` seconds for the process to end, and
        return what ``consumer`` has not seen of its output (at most ``max_bytes``).
        An open poll holds the process's lease (renewed the whole time)."""
        if data:
            await self.write_stdin(process_id, data)
        elif process_id not in self._table:
            await self.get(process_id)  # NotFound for an unknown id
        with self._leases.hold(process_id):
            record, _ = await self.wait(process_id, wait)
        return await self._polls.read(record, consumer, max_bytes)

    async def renew_lease(self, process_id: int, seconds: float | None = None) -> Process:
        """Renew a live process's lease (``seconds``: its new length, or a first lease).
        NotFound for an unknown id; Conflict when it is not queued or running, or it has
        no lease and no ``seconds`` were given."""
        if process_id not in self._table:
            await self.get(process_id)  # NotFound, or it exists but is idle
        return await self._tasks.owned(self._leases.renew(process_id, seconds))

    def keep_alive(self, process_id: int) -> None:
        """Renew the process's lease, if it has one: an open stream of it is its owner."""
        self._leases.touch(process_id)

    async def resize(self, process_id: int, rows: int, cols: int) -> Process:
        """Set a running terminal's window size (its program gets SIGWINCH); the record."""
        if process_id not in self._table:
            await self.get(process_id)  # NotFound for an unknown id
        proc = await self._stdio.resize(process_id, rows, cols)
        try:
            await self._unsaved.write(proc, tty=proc.tty)
        except RegistryError:
            pass   # the terminal is resized: the record is kept unsaved and written again
        return proc.copy()
