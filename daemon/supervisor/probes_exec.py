"""Exec health probes: a command run as the daemon's own child (split out of probes.py).

Exec probes are the daemon's own children, not the keeper's (the keeper starts
and reaps the processes clients asked for). A probe is no record: no output to
capture, no exit to journal, no one but the daemon wants its status, and it
ends within ``timeout_ms``; through the keeper it would cost a round trip and a
table entry each, and wait behind a busy keeper. It is spawned with
``asyncio.create_subprocess_exec``, stdio on /dev/null, in a session (so a
process group) of its own. The loop's child watcher reaps it, by its pid only
(asyncio ``waitpid(pid)``, uvloop's libuv likewise per pid it spawned, never
``waitpid(-1)``), so neither can take the keeper's status, which the daemon reaps
itself. A probe that overruns or is cancelled has its whole group SIGKILLed
while its leader is unreaped (the group id still its own), then is reaped; one
cancelled mid-spawn is killed and reaped once spawned. After a probe exits,
whatever it left in its group is SIGKILLed too (a group id is not handed out
again while it has members), so ``sh -c 'x &'`` leaves nothing. A process that
left the group (``setsid``) is beyond reach; if the daemon dies mid-probe, the
probe runs on to its own end.

The timeout is the caller's (:func:`daemon.supervisor.probes.probe` cancels this
on time); cancelling :func:`run_exec` is what kills.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

from .. import oskit


def os_reason(exc: OSError) -> str:
    """The errno's own words ("connection refused"), not Python's ("Connect call failed")."""
    return errno_words(exc.errno) if exc.errno else _lower(str(exc) or type(exc).__name__)


def errno_words(code: int) -> str:
    return _lower(os.strerror(code))


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]


async def run_exec(command: Sequence[str], env: Mapping[str, str], cwd: str | None) -> str | None:
    """Run ``command``: None if it exited 0, else a short reason. Cancel it to kill it."""
    if not command:
        raise ValueError("an exec check needs a command")
    spawning = asyncio.ensure_future(asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, env=dict(env), cwd=cwd, start_new_session=True))
    try:
        proc = await asyncio.shield(spawning)     # a spawn is never cut in half...
    except asyncio.CancelledError:                # ...the child it makes is killed and reaped
        await _in_background(_discard(spawning))
        raise
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename and exc.filename != command[0] else ""
        return f"cannot run {command[0]}: {os_reason(exc)}{where}"
    try:
        code = await proc.wait()
    except asyncio.CancelledError:     # timed out or stopped: the whole group, leader unreaped
        oskit.signal_group(proc.pid, signal.SIGKILL)
        await _in_background(_reap(proc))
        raise
    oskit.signal_group(proc.pid, signal.SIGKILL)   # what it left running in its group
    if code == 0:
        return None
    if code < 0:
        return f"killed by {oskit.signal_name(-code)}"
    return f"exited with status {code}"


async def _reap(proc: asyncio.subprocess.Process) -> None:
    await proc.wait()


async def _discard(spawning: asyncio.Future[asyncio.subprocess.Process]) -> None:
    """A probe cancelled while spawning: once spawned, kill its group and reap it."""
    try:
        proc = await spawning
    except OSError:
        return
    oskit.signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()


_CLEANUPS: set[asyncio.Task[Any]] = set()   # held until done (the loop holds weak references)


def background(cleanup: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run ``cleanup`` as a task held until it is done."""
    task = asyncio.ensure_future(cleanup)
    _CLEANUPS.add(task)
    task.add_done_callback(_CLEANUPS.discard)
    return task


async def _in_background(cleanup: Coroutine[None, None, None]) -> None:
    """Await ``cleanup``; cancelled again meanwhile, it still runs to its end."""
    await asyncio.shield(background(cleanup))
