"""Starting a keeper when none answers: the daemon's side, asyncio (no aiohttp, no threads).

:func:`connect_or_start` connects to the state dir's keeper through
:class:`.client.KeeperClient` and, when nothing answers, starts ``start_cmd``
and retries until the keeper it started answers, exits, or ``timeout`` passes.
:mod:`.client` re-exports :func:`connect_or_start` and :class:`StartedKeeper`.

Why detached, in a session of its own: the keeper must outlive the daemon (a
crash, a restart, an upgrade), so it must not share the daemon's process
group or controlling terminal, where a Ctrl-C or a ``killpg`` meant for the
daemon would reach it too. stdin and stdout are /dev/null; stderr is appended
to ``<state_dir>/keeper/keeper.log`` (created 0600, opened ``O_NOFOLLOW``;
JSON lines, events ``keeper.*``), whose last line is quoted when the keeper
fails to come up. Unless ``env`` is given, the keeper gets the daemon's
environment without ``NOTIFY_SOCKET``, ``LISTEN_*`` or ``WATCHDOG_*``: those
speak for the daemon to systemd, and a keeper that used them would answer in
its name.

Reaping: the started keeper is a child of the daemon. :class:`StartedKeeper`
reaps it (``waitpid`` on its pid, through a pidfd watched by the loop, so no
thread and no SIGCHLD handler) when it exits, and ``client.started`` says how
it ended. ``client.started`` is None when the keeper that answered is not the
one this call started.

Two daemons racing to start a keeper are settled by the keeper's lock
(``keeper.lock``): the loser exits, saying "another keeper" in its log, and
both daemons connect to the winner. A started keeper that exits non-zero for
any other reason ends the wait at once with :class:`.records.KeeperUnavailable`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from . import protocol
from .records import ExitEvent, KeeperGone, KeeperUnavailable

if TYPE_CHECKING:
    from .client import KeeperClient

__all__ = ["StartedKeeper", "connect_or_start"]

_PRIVATE_ENV = ("NOTIFY_SOCKET",)
_PRIVATE_PREFIXES = ("LISTEN_", "WATCHDOG_")


class StartedKeeper:
    """The keeper process :func:`connect_or_start` started; reaped by the loop when it exits."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.pid = proc.pid
        self.returncode: int | None = None
        self._proc = proc
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._pidfd = os.pidfd_open(proc.pid)
        self._loop.add_reader(self._pidfd, self._poll)

    def _poll(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:   # another reaper took it: the status is lost
            pid, status = self.pid, -1
        if pid == 0:
            return
        self.returncode = os.waitstatus_to_exitcode(status) if status >= 0 else -1
        self._proc.returncode = self.returncode   # Popen must never reap it again
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        if not self._exited.done():
            self._exited.set_result(self.returncode)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)


async def connect_or_start(state_dir: str, *, start_cmd: Sequence[str], timeout: float = 10.0,
                           on_exit: Callable[[ExitEvent], None] | None = None,
                           on_lost: Callable[[KeeperGone], None] | None = None,
                           env: Mapping[str, str] | None = None) -> KeeperClient:
    """Connect to the state dir's keeper, starting ``start_cmd`` first if none answers.

    Retries until ``timeout``; KeeperUnavailable (with the keeper's log tail) if
    the keeper it started exits or never answers. KeeperRefused as :meth:`KeeperClient.connect`.
    """
    # Imported here: .client re-exports this module, so it is loaded first.
    from .client import KeeperClient

    state_dir = os.path.abspath(state_dir)
    try:
        return await KeeperClient.connect(state_dir, on_exit=on_exit, on_lost=on_lost)
    except KeeperUnavailable:
        pass
    started = _start(state_dir, start_cmd, env)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
        try:
            client = await KeeperClient.connect(state_dir, on_exit=on_exit, on_lost=on_lost,
                                                timeout=max(0.5, deadline - time.monotonic()))
        except KeeperUnavailable as exc:
            failed = started.returncode is not None and started.returncode != 0
            if time.monotonic() > deadline or (failed and "another keeper" not in _log_tail(state_dir)):
                how = f"exited with status {started.returncode}" if started.returncode is not None \
                    else f"did not answer within {timeout}s"
                raise KeeperUnavailable(f"the keeper started for {state_dir} {how}: "
                                        f"{_log_tail(state_dir) or exc}", exc.errno) from None
            continue
        if client.pid == started.pid:
            client.started = started
        return client


def _start(state_dir: str, start_cmd: Sequence[str], env: Mapping[str, str] | None) -> StartedKeeper:
    keeper_dir = os.path.join(state_dir, protocol.KEEPER_DIR)
    os.makedirs(keeper_dir, mode=0o700, exist_ok=True)
    log_fd = os.open(os.path.join(keeper_dir, protocol.LOG_NAME),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    if env is None:
        env = {k: v for k, v in os.environ.items()
               if k not in _PRIVATE_ENV and not k.startswith(_PRIVATE_PREFIXES)}
    try:
        proc = subprocess.Popen(list(start_cmd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=log_fd, env=dict(env), start_new_session=True, close_fds=True)
    except OSError as exc:
        raise KeeperUnavailable(f"cannot start the keeper ({start_cmd[0]!r}): {exc.strerror}",
                                exc.errno) from None
    finally:
        os.close(log_fd)
    return StartedKeeper(proc)


def _log_tail(state_dir: str, size: int = 2000) -> str:
    try:
        with open(os.path.join(state_dir, protocol.KEEPER_DIR, protocol.LOG_NAME), "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - size))
            lines = handle.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""
