"""The keeper's terminals: a child on a pty, keystrokes in, the terminal's bytes out, resize."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from daemon.keeper.client import ExitEvent, KeeperClient, KeeperError, StdinClosed
from tests.helpers import async_wait_for
from tests.keeper.conftest import gone_from_proc, output

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "PS1": "$ ",
       "TERM": "xterm-256color", "HOME": "/"}


async def next_exit(client: KeeperClient, timeout: float = 10.0) -> ExitEvent:
    async def first() -> ExitEvent:
        async for event in client.exits():
            return event
        raise AssertionError("no event")
    return await asyncio.wait_for(first(), timeout)


async def eventually(predicate: Callable[[], Any], what: str) -> Any:
    async def check() -> Any:
        return predicate()
    return await async_wait_for(check, what=what)


async def test_a_shell_on_a_terminal(start_keeper: Any, connect: Any) -> None:
    keeper = start_keeper()
    client = await connect(keeper)
    spawned = await client.spawn(1, ["sh", "-i"], ENV, tty={"rows": 24, "cols": 80})
    (child,) = (await client.list()).children
    assert child.stdin_open
    # A session of its own, with the terminal as its controlling tty (job control works).
    assert os.getsid(spawned.pid) == spawned.pid
    tty_nr = int(open(f"/proc/{spawned.pid}/stat").read().rsplit(")", 1)[1].split()[4])
    assert tty_nr != 0

    await client.stdin_write(1, b"echo $((6*7)); echo err >&2\n")
    await eventually(lambda: b"42\r\n" in output(keeper, 1), what="42 on the terminal")
    await eventually(lambda: b"err\r\n" in output(keeper, 1), what="stderr on the terminal")
    assert not (keeper.state_dir / "output" / "1.stderr").exists()

    await client.stdin_write(1, b"stty size\n")
    await eventually(lambda: b"24 80\r\n" in output(keeper, 1), what="the initial size")
    await client.resize(1, 40, 132)
    await client.stdin_write(1, b"stty size\n")
    await eventually(lambda: b"40 132\r\n" in output(keeper, 1), what="the new size")

    # ^C reaches the foreground job as SIGINT: the shell lives on and prompts again.
    await client.stdin_write(1, b"sleep 100\n")
    await eventually(lambda: _sleeper(spawned.pid) is not None, what="sleep to run")
    sleeper = _sleeper(spawned.pid)
    assert sleeper is not None
    keeper.spawned.add(sleeper)
    await client.stdin_write(1, b"\x03")
    await eventually(lambda: gone_from_proc(sleeper), what="sleep to be interrupted")
    await client.stdin_write(1, b"echo after-$((1+1))\n")
    await eventually(lambda: b"after-2\r\n" in output(keeper, 1), what="the shell to go on")

    await client.stdin_write(1, b"exit 5\n")
    event = await next_exit(client)
    assert (event.id, event.code) == (1, 5)
    assert gone_from_proc(spawned.pid)


async def test_terminal_fields_are_checked(start_keeper: Any, connect: Any) -> None:
    keeper = start_keeper()
    client = await connect(keeper)
    for tty in ({"rows": 24}, {"rows": 0, "cols": 80}, {"rows": 24, "cols": 1001},
                {"rows": True, "cols": 80}, [24, 80], "24x80"):
        with pytest.raises(KeeperError, match="tty"):
            await client.spawn(1, ["true"], ENV, tty=tty)
    await client.spawn(2, ["sleep", "100"], ENV, stdin="pipe")
    with pytest.raises(StdinClosed, match="no terminal"):
        await client.resize(2, 24, 80)
    await client.spawn(3, ["sleep", "100"], ENV, tty={"rows": 24, "cols": 80})
    for rows, cols in ((0, 80), (24, 1001)):
        with pytest.raises(KeeperError, match="rows and cols"):
            await client.resize(3, rows, cols)
    assert [c.id for c in (await client.list()).children] == [2, 3]
    for child_id in (2, 3):
        await client.signal(child_id, signal.SIGKILL)
        await next_exit(client)


async def test_output_after_the_exit_is_all_there(start_keeper: Any, connect: Any) -> None:
    """EIO on the master is the end: every byte written before it is in the file."""
    keeper = start_keeper()
    client = await connect(keeper)
    await client.spawn(1, ["sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line$i; "
                       "i=$((i+1)); done"], ENV, tty={"rows": 24, "cols": 80})
    event = await next_exit(client)
    assert event.code == 0
    lines = output(keeper, 1).split(b"\r\n")
    assert lines[0] == b"line0" and lines[1999] == b"line1999"
    with pytest.raises(KeeperError):
        await client.resize(1, 24, 80)


async def test_closing_a_terminal_stdin_stops_writes_only(start_keeper: Any, connect: Any) -> None:
    keeper = start_keeper()
    client = await connect(keeper)
    fds = len(os.listdir(f"/proc/{keeper.pid}/fd"))
    await client.spawn(1, ["cat"], ENV, tty={"rows": 24, "cols": 80})
    # pidfd, three descriptors of the master (output, keystrokes, resize); the output file
    # and its index are opened at the first byte
    assert len(os.listdir(f"/proc/{keeper.pid}/fd")) == fds + 4
    await client.stdin_write(1, b"hello\n")
    await eventually(lambda: output(keeper, 1).count(b"hello\r\n") == 2, what="echo + cat")
    assert len(os.listdir(f"/proc/{keeper.pid}/fd")) == fds + 6
    await client.stdin_close(1)
    with pytest.raises(StdinClosed):
        await client.stdin_write(1, b"more\n")
    (child,) = (await client.list()).children
    assert not child.stdin_open
    await client.resize(1, 30, 100)   # the terminal itself is still there
    await client.signal(1, signal.SIGKILL)
    assert (await next_exit(client)).signal == signal.SIGKILL
    await eventually(lambda: len(os.listdir(f"/proc/{keeper.pid}/fd")) == fds,
                         what="every fd of the terminal closed")


def _sleeper(shell: int) -> int | None:
    try:
        children = open(f"/proc/{shell}/task/{shell}/children").read().split()
    except OSError:
        return None
    for pid in children:
        try:
            if open(f"/proc/{pid}/comm").read().strip() == "sleep":
                return int(pid)
        except OSError:
            continue
    return None
