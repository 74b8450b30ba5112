"""The daemon's link to its keeper: find or start it, speak to it, acknowledge, notice its loss.

The keeper (:mod:`daemon.keeper`) is the parent of every child: it spawns them,
holds their pipes, captures their output under the cap, reaps them and journals
each exit until the daemon acknowledges it. This module is the supervisor's one
door to it; the policy (what an exit or a lost keeper means for a record) stays
in running.py and reconcile.py.

* **Finding it.** :meth:`KeeperLink.connect` connects to the keeper of the state
  dir, starting ``python -m daemon keeper`` (detached, in its own session) when
  none answers. Under systemd the keeper runs in a unit of its own and the
  daemon, with ``keeper = "external"``, only waits for it to answer
  (docs/operations.md).
* **Exits** arrive as events, each already synced to the keeper's journal. Until
  :meth:`ready` (the start-up reconcile has read the keeper's listing), events are
  held back; afterwards they go to ``on_exit``. An exit is acknowledged
  (:meth:`ack_soon`, those of ACK_DELAY together) only once the record's end is
  committed, so a daemon crash in between replays it. One exception: a managed
  run's exit is acknowledged once its end is committed *or* kept unsaved, because
  the keeper refuses the next run under the same id until then (managing.py).
* **Signals** to a kept leader go through the keeper (:meth:`signal`): it holds
  the unreaped child's pidfd, so neither the signal nor its ``killpg`` can reach
  a stranger. The daemon opens pidfds, each checked against start ticks, for the
  other members of a tree, for adopted leaders, and for a kept leader while the
  keeper is gone (stopping.py).
* **Loss.** If the connection drops (the keeper was killed), ``on_lost`` is called
  once; the supervisor then reconnects (a new keeper is started) and re-adopts
  (reconcile.py). A connection replaced by another daemon's is the same event.
* **Its end.** With ``shutdown = "stop"`` the daemon stops every child and then the
  keeper (:meth:`stop_keeper`: SIGTERM to the pid the socket's peer credentials
  name). With ``"detach"`` it only closes the connection: keeper and children go on.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .. import oskit
from ..keeper.client import (
    ExitEvent,
    KeeperClient,
    KeeperError,
    KeeperGone,
    KeeperUnavailable,
    Listing,
    Spawned,
    connect_or_start,
)
from .children import resolve

KEEPER_STOP_WAIT = 15.0      # after SIGTERM, the most we wait for the keeper to exit
EXTERNAL_WAIT = 30.0         # keeper = external: how long to wait for it to answer
ACK_DELAY = 0.01             # committed exits are acknowledged together, this much later


class KeeperLink:
    def __init__(self, state_dir: str, grace: float, external: bool, log: Any,
                 on_exit: Callable[[ExitEvent], None], on_lost: Callable[[KeeperGone], None]) -> None:
        self._state_dir = state_dir
        self._grace = grace
        self._external = external
        self._log = log
        self._on_exit = on_exit
        self._on_lost = on_lost
        self._client: KeeperClient | None = None
        self._held: list[ExitEvent] | None = []        # events before ready(); None once ready
        self._acks: list[int] = []
        self._ack_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    @property
    def pid(self) -> int:
        """The keeper's pid (0 while there is none): orphans of a tree are re-parented to it."""
        return self._client.pid if self._client is not None and not self._client.closed else 0

    @property
    def client(self) -> KeeperClient:
        if self._client is None or self._client.closed:
            raise KeeperGone("the keeper is not connected")
        return self._client

    async def connect(self) -> Listing:
        """Connect (starting a keeper if none answers); hold exits back until :meth:`ready`.

        Returns the keeper's listing: its live children and its unacknowledged exits.
        """
        self._held = []
        if self._external:
            client = await self._connect_external()
        else:
            command = [sys.executable, "-m", "daemon", "keeper", "--state-dir", self._state_dir,
                       "--grace", str(self._grace)]
            client = await connect_or_start(self._state_dir, start_cmd=command,
                                            on_exit=self._exit_event, on_lost=self._lost)
        self._client = client
        self._log.info("keeper.connected", pid=client.pid, version=client.version,
                       started=client.started is not None)
        return await client.list()

    async def _connect_external(self) -> KeeperClient:
        """``keeper = "external"``: wait for the keeper systemd runs; never start one (a keeper
        the daemon started would live in the daemon's cgroup and die with its restart)."""
        deadline = self._loop.time() + EXTERNAL_WAIT
        delay = 0.05
        while True:
            try:
                return await KeeperClient.connect(self._state_dir, on_exit=self._exit_event,
                                                  on_lost=self._lost)
            except KeeperUnavailable as exc:
                if delay == 0.05:
                    self._log.info("keeper.waiting", state_dir=self._state_dir, wait=EXTERNAL_WAIT)
                if self._loop.time() + delay > deadline:
                    raise KeeperUnavailable(f"{exc} (keeper = external: is stablehand-keeper."
                                            f"service running?)", exc.errno) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def ready(self) -> list[ExitEvent]:
        """From now on exits go to ``on_exit``; returns those held back meanwhile."""
        held, self._held = self._held or [], None
        return held

    def _exit_event(self, event: ExitEvent) -> None:
        if self._held is not None:
            self._held.append(event)
        else:
            self._on_exit(event)

    def _lost(self, error: KeeperGone) -> None:
        self._log.error("keeper.lost", error=str(error))
        self._on_lost(error)

    # --- requests ------------------------------------------------------------------------

    async def spawn(self, process_id: int, argv: Sequence[str], env: dict[str, str], cwd: str,
                    *, stdin: str, stdout: str, stderr: str, cap: int | None,
                    tty: dict[str, int] | None = None) -> Spawned:
        """Start a child (on a terminal with ``tty``); SpawnFailed with the reason, KeeperGone
        if the keeper is lost."""
        return await self.client.spawn(process_id, argv, env, cwd, stdin=stdin, stdout=stdout,
                                       stderr=stderr, max_output_bytes=cap, tty=tty)

    async def resize(self, process_id: int, rows: int, cols: int) -> None:
        """Set a kept child's terminal window size (StdinClosed if it has no terminal)."""
        await self.client.resize(process_id, rows, cols)

    async def signal(self, process_id: int, sig: int, *, group: bool) -> bool:
        """Signal a kept child; False if it already exited."""
        return await self.client.signal(process_id, sig, group=group)

    async def write_stdin(self, process_id: int, data: bytes, timeout: float) -> int:
        return await self.client.write_stdin_all(process_id, data, timeout)

    async def close_stdin(self, process_id: int) -> None:
        await self.client.stdin_close(process_id)

    async def ack(self, process_id: int) -> None:
        """Acknowledge one committed exit now (before a managed run's id is spawned again)."""
        await self.client.ack([process_id])

    def ack_soon(self, process_id: int) -> None:
        """Acknowledge a committed exit; the acks of ACK_DELAY go in one request.

        Nobody waits for an ack (a managed run's respawn acks its own exit at once:
        :meth:`ack`), and each costs the keeper a request, a journal write and a reply:
        under churn, one request per 10 ms instead of one per exit or two. An exit not yet
        acknowledged when the daemon stops is delivered to the next one again, and handled
        by id, as after a crash.
        """
        if not self._acks:
            self._ack_timer = self._loop.call_later(ACK_DELAY, self._send_acks)
        self._acks.append(process_id)

    def _send_acks(self) -> None:
        ids = self._take_acks()
        if ids:
            task = self._loop.create_task(self.client.ack(ids))
            task.add_done_callback(self._acked)

    def _take_acks(self) -> list[int]:
        """The acks waiting (their timer disarmed), if a keeper is connected to take them."""
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        ids, self._acks = self._acks, []
        return ids if self._client is not None and not self._client.closed else []

    def _acked(self, task: asyncio.Task[Any]) -> None:
        error = None if task.cancelled() else task.exception()
        if error is not None and not isinstance(error, KeeperGone):
            self._log.warning("keeper.ack_failed", error=str(error))
        # a lost keeper keeps the exits in its journal: they are replayed, and acked then

    # --- the end ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Leave the keeper and its children running (``shutdown = "detach"``)."""
        await self._flush_acks()
        if self._client is not None:
            await self._client.close()

    async def _flush_acks(self) -> None:
        """The acks still waiting for ACK_DELAY, sent now (at most a second's wait)."""
        ids = self._take_acks()
        if ids:
            try:
                await asyncio.wait_for(self.client.ack(ids), 1.0)
            except (KeeperError, TimeoutError):
                pass   # delivered again to the next daemon, and handled by id

    async def stop_keeper(self) -> None:
        """Stop the keeper (every child already stopped): SIGTERM, then wait for it to exit.

        The pid signalled is the socket peer's (SO_PEERCRED), read through a pidfd
        opened while the connection is still up: it is the keeper, not a stranger.
        """
        client = self._client
        if client is None or client.closed:
            return
        await self._flush_acks()
        pidfd = _peer_pidfd(client)
        try:
            await client.close()
            if pidfd is None:
                return
            oskit.pidfd_signal(pidfd, signal.SIGTERM)
            gone: asyncio.Future[None] = self._loop.create_future()
            self._loop.add_reader(pidfd, resolve, gone)
            try:
                await asyncio.wait_for(gone, KEEPER_STOP_WAIT)
            except TimeoutError:
                self._log.warning("keeper.stop_timeout", pid=client.pid)
            finally:
                self._loop.remove_reader(pidfd)
            if client.started is not None:
                await asyncio.wait_for(client.started.wait(), 1.0)   # our child: reaped
            self._log.info("keeper.stopped", pid=client.pid)
        except TimeoutError:
            pass
        finally:
            oskit.close_fd(pidfd)


def _peer_pidfd(client: KeeperClient) -> int | None:
    pid = client.peer_pid()
    if pid is None:
        return None
    try:
        return oskit.open_pidfd(pid)
    except OSError:
        return None


